"""Benchmarks of the GenBrain model (run on demand; figures go to docs/model.md).

``speed``
    Training and sampling throughput (images/s) and peak memory of the DiT on brain-mask
    voxels versus MONAI's DiffusionModelUNet of similar parameter count on the same MNI grid
    (the full box, padded to a multiple of 8). Each model runs in its own subprocess so peak
    memory (RSS on CPU, ``max_memory_allocated`` on CUDA) is its own. Sampling throughput is
    images / (DDIM steps x one denoiser forward) at the given batch size.
``ablation``
    Token order: compactness of raster versus Morton tokens, and the training loss of the test
    model after the same number of steps on a planted-effect cohort with each order.

Examples
--------
    python benchmarks/bench_model.py speed --resolution 2 --dit-preset small
    python benchmarks/bench_model.py ablation --steps 1500
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GENBRAIN_TEMPLATES", "fallback")

UNET_CHANNELS = {"small": (24, 48, 96, 192), "tiny": (16, 24, 24, 48),
                 "genbrain-b": (64, 128, 256, 544), "genbrain-l": (128, 256, 512, 1024)}
"""UNet widths matching each DiT preset's parameter count to within 7 %."""


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(kind: str, preset: str, resolution: float):
    """The model and a function making a random input batch of size b."""
    import torch

    from bids_genbrain.model.checkpoint import build_model
    from bids_genbrain.model.presets import get_preset
    from bids_genbrain.templates import brain_mask, mni_grid

    if kind == "dit":
        model = build_model(get_preset(preset).with_(resolution=resolution), [])
        n = model.layout.n_voxels
        return model, (lambda b: torch.randn(b, 1, n))
    from monai.networks.nets import DiffusionModelUNet

    brain_mask(resolution)  # same template loading cost as the DiT
    shape = [int(-(-s // 8) * 8) for s in mni_grid(resolution)[0]]
    model = DiffusionModelUNet(spatial_dims=3, in_channels=1, out_channels=1,
                               channels=UNET_CHANNELS[preset],
                               attention_levels=(False, False, False, True), num_res_blocks=1,
                               num_head_channels=(0, 0, 0, 16), norm_num_groups=8)
    return model, (lambda b: torch.randn(b, 1, *shape))


def run_one(kind: str, preset: str, resolution: float, batch: int, iters: int, steps: int,
            device_name: str, threads: int) -> dict:
    """Measure one model in this process (called in a subprocess by :func:`speed`)."""
    import torch

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    base = _peak_mb(device)
    model, make = _build(kind, preset, resolution)
    model.to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def train_step() -> None:
        x = make(batch).to(device)
        t = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast(**amp):
            loss = torch.nn.functional.mse_loss(model(x, t).float(), x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    train_step()  # warm-up
    sync()
    tic = time.perf_counter()
    for _ in range(iters):
        train_step()
    sync()
    train_s = (time.perf_counter() - tic) / iters
    model.eval()
    with torch.no_grad(), torch.autocast(**amp):
        x = make(batch).to(device)
        t = torch.full((batch,), 500, device=device)
        model(x, t)
        sync()
        tic = time.perf_counter()
        for _ in range(iters):
            model(x, t)
        sync()
        fwd_s = (time.perf_counter() - tic) / iters
    return {"model": kind, "preset": preset, "parameters": params, "batch": batch,
            "train_images_per_s": batch / train_s,
            "sample_images_per_s": batch / (fwd_s * steps),
            "peak_memory_mb": _peak_mb(device) - (base if device.type == "cpu" else 0.0),
            "device": device_name, "threads": torch.get_num_threads()}


def speed(args: argparse.Namespace) -> dict:
    """DiT vs UNet, each in a subprocess; returns both records and the ratios."""
    records = {}
    for kind in ("dit", "unet"):
        cmd = [sys.executable, __file__, "_one", kind, args.dit_preset, str(args.resolution),
               str(args.batch), str(args.iters), str(args.ddim_steps), args.device,
               str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        records[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    dit, unet = records["dit"], records["unet"]
    records["ratio_dit_over_unet"] = {
        k: dit[k] / unet[k] for k in ("parameters", "train_images_per_s",
                                      "sample_images_per_s", "peak_memory_mb")}
    records["resolution_mm"] = args.resolution
    return records


def ablation(args: argparse.Namespace) -> dict:
    """Token order: compactness and the loss after a short training run."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import numpy as np
    import pandas as pd
    import torch
    from _model_factory import RES, TEST_ARCH, write_cohort

    from bids_genbrain.cohort import build_cohort
    from bids_genbrain.model.tokens import TokenLayout
    from bids_genbrain.model.train import TrainConfig, fit
    from bids_genbrain.templates import brain_mask

    torch.set_num_threads(1)
    out = {"compactness_mm": {}}
    for res, patch in ((2.0, 256), (4.0, 64), (RES, TEST_ARCH.patch_size)):
        out["compactness_mm"][f"{res:g}mm_patch{patch}"] = {
            order: TokenLayout(brain_mask(res), patch, order, voxel_size=res).compactness()
            for order in ("raster", "morton")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = write_cohort(tmp / "deriv", list(np.linspace(20, 80, 32)))
        store = build_cohort([tmp / "deriv"], tmp / "store", participants=table,
                             conditions=["age", "sex"], resolution=RES, progress=False)
        out["final_loss"] = {}
        for order in ("raster", "morton"):
            fit(store, tmp / order, TrainConfig(steps=args.steps, batch_size=8, lr=3e-3,
                                                checkpoint_every=10**6, progress=False),
                arch=TEST_ARCH.with_(token_order=order))
            loss = pd.read_csv(tmp / order / "loss.tsv", sep="\t")["loss"]
            out["final_loss"][order] = float(loss.iloc[-200:].mean())
    out["steps"] = args.steps
    return out


def main() -> None:
    """Command line (see the module docstring)."""
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        kind, preset, res, batch, iters, steps, device, threads = sys.argv[2:10]
        print(json.dumps(run_one(kind, preset, float(res), int(batch), int(iters), int(steps),
                                 device, int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, help="also write the JSON here")
    sub = parser.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed", parents=[common])
    sp.add_argument("--resolution", type=float, default=2.0)
    sp.add_argument("--dit-preset", default="small", choices=sorted(UNET_CHANNELS))
    sp.add_argument("--batch", type=int, default=1)
    sp.add_argument("--iters", type=int, default=2)
    sp.add_argument("--ddim-steps", type=int, default=50)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--threads", type=int, default=1,
                    help="CPU threads (1 on a shared machine: oversubscribed threads stall)")
    ab = sub.add_parser("ablation", parents=[common])
    ab.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    result = speed(args) if args.what == "speed" else ablation(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
