"""Training loop: AdamW, EMA, gradient clipping, bf16 on CUDA, DDP via torchrun, exact resume.

Every random quantity of step ``s`` (the data order, timesteps, noise, CFG drops) derives from
``(seed, s)``, drawn for the *global* batch and sliced per rank. Hence a resumed run repeats an
uninterrupted one exactly, and N processes with batch b follow one process with batch N*b.

A run's output folder is a checkpoint (EMA weights, see :mod:`.checkpoint`) plus::

    training_state/   model.safetensors (raw weights), ema.safetensors, optimizer.safetensors,
                      state.json (step, optimiser hyper-parameters, run identity, RNG)
    loss.tsv          step, loss, grad_norm, lr, images_per_s
    loss.png          the loss curve

Launch on several GPUs/CPUs with ``torchrun --nproc_per_node N -m bids_genbrain.cli.tools
pretrain ...``; each process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from ..cohort import CohortStore
from ..utils import atomic_path, atomic_write_text
from .checkpoint import (
    CheckpointError,
    GenBrain,
    build_model,
    load_checkpoint,
    now_iso,
    read_config,
    save_checkpoint,
    save_weights,
    versions,
)
from .conditions import ConditionSpec, encode_table
from .diffusion import DiffusionConfig, draw_training, training_loss
from .dit import GenBrainDiT
from .presets import ModelConfig, default_lr

STATE_DIR = "training_state"
LATEST = "latest.json"


@dataclass
class TrainConfig:
    """Optimisation settings.

    Parameters
    ----------
    steps : int
        Total optimiser steps (a resumed run continues up to this).
    batch_size : int
        Images per process per step.
    lr : float
        AdamW learning rate (paper: 1e-4).
    extension_lr_scale : float
        The embedders that fine-tuning added (a new condition, a table with new levels:
        :meth:`~bids_genbrain.model.dit.GenBrainDiT.extension_parameters`) learn at
        ``lr * extension_lr_scale``; a model without extensions is unaffected. They start at
        zero (the model's function is kept) and a zero table row is a parameter of fan-in 1
        that Adam moves by about one learning rate per step, so at the fine-tuning rate a new
        condition would stay ~100x smaller than the timestep embedding for thousands of steps.
        Default 100: at 1e-4 better than 30 (itself better than 1 and 10); at the CPU presets'
        rate 1e-3 better than 10 and tied with 30 over two seeds (synthetic vs real d-map r
        after 6,000 steps: 10x 0.56, 30x 0.60 / 0.68, 100x 0.62 / 0.66; docs/model.md,
        "Fine-tuning").
    weight_decay : float
        AdamW weight decay.
    ema_decay : float
        EMA decay; warmed up as ``min(ema_decay, (1 + s) / (10 + s))``.
    grad_clip : float
        Max gradient norm.
    min_snr_gamma : float, optional
        Min-SNR-gamma loss weighting (:func:`~.diffusion.training_loss`); None: plain MSE.
    checkpoint_every : int
        Save a checkpoint (and training state) every this many steps.
    seed : int
        Seed of the data order and of every draw.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses CUDA when available.
    progress : bool
        Show a progress bar on rank 0.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    extension_lr_scale: float = 100.0
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float = 1.0
    min_snr_gamma: float | None = None
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size and checkpoint_every must be >= 1")
        if not (self.lr > 0 and self.extension_lr_scale > 0):
            raise ValueError("lr and extension_lr_scale must be positive")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError("min_snr_gamma must be positive (or None)")


@dataclass
class DistInfo:
    """This process's rank, the world size and the local rank (GPU index)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":  # NCCL collectives (the barriers too) use this rank's own GPU
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``/``cpu``/``cuda`` -> a torch device (``cuda:LOCAL_RANK`` under torchrun).

    Raises
    ------
    ValueError
        CUDA asked for but not available, or an unknown name.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def batch_indices(step: int, n_images: int, global_batch: int, seed: int) -> np.ndarray:
    """Image rows of the global batch of ``step``: epochs of seeded permutations, concatenated.

    Parameters
    ----------
    step : int
    n_images : int
    global_batch : int
    seed : int

    Returns
    -------
    ndarray of int64, shape (global_batch,)
    """
    pos = step * global_batch + np.arange(global_batch)
    out = np.empty(global_batch, dtype=np.int64)
    for epoch in np.unique(pos // n_images):
        sel = pos // n_images == epoch
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_images)
        out[sel] = perm[pos[sel] % n_images]
    return out


def _step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> 1))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (safetensors) and JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _run_identity(bundle: GenBrain, store: CohortStore, config: TrainConfig,
                  world: int, targets: np.ndarray) -> dict[str, Any]:
    return {"architecture": bundle.arch.with_(in_channels=bundle.model.in_channels).to_dict(),
            "image_conditions": list(bundle.image_conditions),
            "rows_sha256": hashlib.sha256(targets.tobytes()).hexdigest(),
            "conditions": [c.to_dict() for c in bundle.model.conditions],
            "data_sha256": store.meta["data_sha256"], "seed": config.seed,
            "global_batch": config.batch_size * world, "lr": config.lr,
            **({"extension_lr_scale": config.extension_lr_scale}
               if bundle.model.extension_parameters() else {}),
            **({"min_snr_gamma": config.min_snr_gamma} if config.min_snr_gamma else {})}


def _save_state(out: Path, model: torch.nn.Module, ema: torch.nn.Module,
                opt: torch.optim.Optimizer, step: int, identity: dict[str, Any]) -> None:
    """Write the resumable state of ``step``, consistent whenever the process is killed.

    Each save fills a new folder ``training_state/step-<step>``; ``training_state/latest.json``,
    written atomically last, names the complete one; older folders are removed after that.
    """
    root = out / STATE_DIR
    state_dir = root / f"step-{step:08d}"
    shutil.rmtree(state_dir, ignore_errors=True)  # a half-written save of a killed run
    state_dir.mkdir(parents=True)
    save_weights(model.state_dict(), state_dir / "model.safetensors")
    save_weights(ema.state_dict(), state_dir / "ema.safetensors")
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    save_weights(opt_tensors, state_dir / "optimizer.safetensors")
    save_weights({"torch": torch.get_rng_state()}, state_dir / "rng.safetensors")
    record = {"step": step, "identity": identity, "optimizer": opt_meta}
    atomic_write_text(state_dir / "state.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(root / LATEST, json.dumps({"step": step, "folder": state_dir.name}) + "\n")
    for old in root.iterdir():
        if old.is_dir() and old != state_dir:
            shutil.rmtree(old, ignore_errors=True)
        elif old.name.endswith(".safetensors") or old.name == "state.json":
            old.unlink()  # the single-folder layout of earlier versions


def _state_dir(out: Path) -> Path | None:
    """The complete saved state to resume from, or None."""
    root = out / STATE_DIR
    latest = root / LATEST
    if latest.is_file():
        folder = root / json.loads(latest.read_text(encoding="utf-8"))["folder"]
        return folder if (folder / "state.json").is_file() else None
    return root if (root / "state.json").is_file() else None  # earlier versions' layout


def _load_state(state_dir: Path, model: torch.nn.Module, ema: torch.nn.Module,
                opt: torch.optim.Optimizer, identity: dict[str, Any]) -> int:
    record = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    if json.loads(json.dumps(identity)) != record["identity"]:
        diff = sorted(k for k in identity if identity[k] != record["identity"].get(k))
        raise CheckpointError(
            f"{state_dir.parent.parent}: holds the training state of a different run (differs "
            f"in {diff}); use another output folder or turn resuming off"
        )
    model.load_state_dict(load_file(str(state_dir / "model.safetensors")))
    ema.load_state_dict(load_file(str(state_dir / "ema.safetensors")))
    _load_optimizer(opt, load_file(str(state_dir / "optimizer.safetensors")), record["optimizer"])
    torch.set_rng_state(load_file(str(state_dir / "rng.safetensors"))["torch"])
    return int(record["step"])


def write_loss_log(out: Path, rows: list[dict[str, float]], target: str) -> None:
    """Write ``loss.tsv`` and ``loss.png`` (atomically) from logged rows; ``target`` is what
    the network predicts (the diffusion config's ``prediction_type``)."""
    table = pd.DataFrame(rows, columns=["step", "loss", "grad_norm", "lr", "images_per_s"])
    atomic_write_text(out / "loss.tsv", table.to_csv(sep="\t", index=False))
    if table.empty:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table["step"], table["loss"], lw=0.6, alpha=0.4, label="loss")
    window = max(1, len(table) // 50)
    ax.plot(table["step"], table["loss"].rolling(window, min_periods=1).mean(), lw=1.5,
            label=f"running mean ({window})")
    ax.set(xlabel="step", ylabel=f"MSE ({target})", yscale="log", title="GenBrain training loss")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "loss.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _read_loss_log(out: Path, upto: int) -> list[dict[str, float]]:
    path = out / "loss.tsv"
    if not path.is_file():
        return []
    table = pd.read_csv(path, sep="\t")
    return table[table["step"] <= upto].to_dict("records")


def make_optimizer(model: GenBrainDiT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW at ``lr``; the fine-tuning extensions' embedders, if any, in a second parameter
    group at ``lr * extension_lr_scale`` (see :class:`TrainConfig`)."""
    extension = {id(p) for p in model.extension_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in extension],
               "lr": config.lr}]
    if extension:
        groups.append({"params": [p for p in model.parameters() if id(p) in extension],
                       "lr": config.lr * config.extension_lr_scale})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


ImageConditionFn = Callable[[np.ndarray, torch.Generator], torch.Tensor]
"""``(rows, generator) -> (len(rows), C, n_voxels)`` image conditions in [0, 1] for target rows."""


def train(bundle: GenBrain, store: CohortStore, out: Path | str, config: TrainConfig, *,
          resume: bool = True, rows: np.ndarray | None = None,
          image_conditions: ImageConditionFn | None = None,
          require_finished: bool = False) -> Path:
    """Train ``bundle.model`` on a cohort store and write a checkpoint folder.

    Parameters
    ----------
    bundle : GenBrain
        Model (fresh or loaded and extended) with its architecture and diffusion config; its
        ``normalisation`` and ``provenance`` are filled in from the store and the run.
    store : CohortStore
        Training images; conditions are encoded with the model's specs.
    out : path-like
        Checkpoint folder.
    config : TrainConfig
    resume : bool
        Continue from ``out/training_state`` when present (the same run: architecture,
        conditions, data, seed and global batch must match).
    rows : ndarray of int, optional
        Store rows used as training targets (default: all), e.g. one modality's.
    image_conditions : callable, optional
        Builds the extra input channels of a batch from its target rows (a corrupted copy for
        enhancement, the paired source modalities for cross-modality synthesis); its generator
        is seeded by (seed, step, rank). Required when the model has more than one input
        channel.
    require_finished : bool
        Take no training step: load the finished run from ``out/training_state`` (e.g. to
        rebuild reports), or raise.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    CheckpointError
        ``out`` holds the state of a different run, or (``require_finished``) no finished
        state of this run.
    ValueError
        The store's grid differs from the model's, or a bad device.
    """
    out = Path(out)
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    env = init_distributed(device)
    model = bundle.model
    if store.meta["mask_sha256"] != model.layout.mask_sha256():
        raise ValueError(f"cohort store {store.path} is on a different grid/mask than the model "
                         f"({store.resolution:g} mm vs {bundle.arch.resolution:g} mm)")
    if (model.in_channels > 1) != (image_conditions is not None):
        raise ValueError(f"the model has {model.in_channels} input channel(s): give image "
                         "conditions exactly when it has more than one")
    targets = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = make_optimizer(model, config)
    identity = _run_identity(bundle, store, config, env.world, targets)
    start = 0
    state_dir = _state_dir(out) if resume else None
    if state_dir is not None:
        start = _load_state(state_dir, model, ema, opt, identity)
    if require_finished and start < config.steps:
        raise CheckpointError(f"{out}: no finished training of this run ({start} of "
                              f"{config.steps} steps saved); run it without --reports-only first")
    log = _read_loss_log(out, start) if start else []

    encoded = encode_table(model.conditions, store.table)
    scheduler = bundle.diffusion.ddpm()
    net = (DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None) if env.world > 1 else model)
    global_batch = config.batch_size * env.world
    lo, hi = env.rank * config.batch_size, (env.rank + 1) * config.batch_size
    bundle.normalisation = {m: store.normalisation[m] for m in store.modalities}

    def checkpoint(step: int) -> None:
        if env.main:
            bundle.provenance = _provenance(bundle, store, config, env.world, step, targets)
            save_checkpoint(bundle, out, state=ema.state_dict())
            _save_state(out, model, ema, opt, step, identity)
            write_loss_log(out, log, bundle.diffusion.prediction_type)
        if env.world > 1:
            dist.barrier()

    with _progress_bar(config.progress and env.main, config.steps, start) as advance:
        for step in range(start, config.steps):
            tic = time.perf_counter()
            batch = targets[batch_indices(step, len(targets), global_batch, config.seed)[lo:hi]]
            images = torch.from_numpy(store.read(batch)).to(device)
            cond = {k: v[torch.as_tensor(batch)].to(device) for k, v in encoded.items()}
            extra = None
            if image_conditions is not None:
                gen = _step_generator(config.seed, step, stream=1 + env.rank)
                extra = image_conditions(batch, gen).to(device)
            draws = draw_training(model, bundle.diffusion, global_batch,
                                  _step_generator(config.seed, step)).slice(lo, hi)
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=device.type == "cuda"):
                loss = training_loss(net, scheduler, images, cond, draws, extra,
                                     min_snr_gamma=config.min_snr_gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            _ema_update(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
            value = loss.detach()
            if env.world > 1:
                dist.all_reduce(value)  # gloo has no AVG
                value = value / env.world
            log.append({"step": step + 1, "loss": float(value), "grad_norm": float(grad_norm),
                        "lr": config.lr,
                        "images_per_s": global_batch / (time.perf_counter() - tic)})
            advance(float(value))
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                checkpoint(step + 1)
    if start >= config.steps and not require_finished:  # its checkpoint may be half-written
        checkpoint(start)
    bundle.model.load_state_dict(ema.state_dict())
    bundle.model.eval()
    return out


def _provenance(bundle: GenBrain, store: CohortStore, config: TrainConfig, world: int,
                step: int, targets: np.ndarray) -> dict[str, Any]:
    prov = {k: v for k, v in bundle.provenance.items() if k == "parent"}
    prov.update({
        "steps": step, "seed": config.seed, "batch_size": config.batch_size,
        "world_size": world, "train_config": asdict(config),
        "data_sha256": store.meta["data_sha256"], "n_images": int(len(targets)),
        "data_sources": store.meta["sources"], "created": now_iso(), "versions": versions(),
    })
    return prov


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, start: int) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(loss)``: a rich progress bar showing the loss, or a no-op."""
    if not enabled:
        yield lambda loss: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn()) as bar:
        task = bar.add_task("train", total=total, completed=start, loss=float("nan"))
        yield lambda loss: bar.update(task, advance=1, loss=loss)


def training_lr(preset: str, init: Path | str | None = None) -> float:
    """Default learning rate: the fine-tuning rate of the preset of the checkpoint ``init``,
    or ``preset``'s from-scratch rate without one (:func:`.presets.default_lr`).

    Parameters
    ----------
    preset : str
        Preset of a model trained from scratch (ignored with ``init``).
    init : path-like, optional
        Checkpoint folder to fine-tune.

    Returns
    -------
    float
    """
    if init is None:
        return default_lr(preset, fine_tuning=False)
    return default_lr(read_config(init)["preset"], fine_tuning=True)


def new_model(arch: ModelConfig, store: CohortStore, diffusion: DiffusionConfig | None = None,
              seed: int = 0) -> GenBrain:
    """A freshly initialised model for a store's conditions and grid.

    Parameters
    ----------
    arch : ModelConfig
        Its ``resolution`` must be the store's.
    store : CohortStore
    diffusion : DiffusionConfig, optional
    seed : int
        Initialisation seed.

    Returns
    -------
    GenBrain
    """
    if float(arch.resolution) != store.resolution:
        arch = arch.with_(resolution=store.resolution)
    torch.manual_seed(seed)
    model = build_model(arch, store.conditions, store.mask())
    return GenBrain(model, arch, diffusion or DiffusionConfig())


def extend_for(bundle: GenBrain, conditions: Sequence[ConditionSpec],
               init_modality: str | None = None) -> list[str]:
    """Extend a loaded model so it accepts a new cohort's conditions (function unchanged).

    New conditions get zero-initialised embedders; new levels of categorical conditions (a new
    modality, a new diagnosis) start from ``init_modality``'s embedding for ``modality`` and
    from the null embedding otherwise. Training gives these embedders their own learning rate
    (``TrainConfig.extension_lr_scale``). Continuous conditions keep the checkpoint's
    standardisation.

    Parameters
    ----------
    bundle : GenBrain
    conditions : sequence of ConditionSpec
        Specs of the fine-tuning cohort (e.g. ``store.conditions``).
    init_modality : str, optional
        Existing modality that new modalities start from.

    Returns
    -------
    list of str
        What was added, for the log.
    """
    added = []
    have = {c.name: c for c in bundle.model.conditions}
    for spec in conditions:
        if spec.name not in have:
            bundle.model.add_condition(spec)
            added.append(f"condition {spec.name}")
        elif spec.kind != have[spec.name].kind:
            raise ValueError(f"condition {spec.name!r} is {spec.kind} in the cohort but "
                             f"{have[spec.name].kind} in the checkpoint")
        elif spec.kind == "categorical":
            new = [lvl for lvl in spec.levels if lvl not in have[spec.name].levels]
            if new:
                init = init_modality if spec.name == "modality" else None
                bundle.model.add_levels(spec.name, new, init_from=init)
                added.append(f"{spec.name} levels {new}")
    return added


def fit(store: CohortStore, out: Path | str, config: TrainConfig, *,
        arch: ModelConfig | None = None, diffusion: DiffusionConfig | None = None,
        init: Path | str | None = None, init_modality: str | None = None, resume: bool = True,
        rows: np.ndarray | None = None, image_conditions: ImageConditionFn | None = None,
        image_condition_names: Sequence[str] = (),
        task: dict[str, Any] | None = None, require_finished: bool = False) -> GenBrain:
    """Train from scratch (``arch``) or fine-tune a checkpoint (``init``) on a store.

    This is the library entry point the group level uses.

    Parameters
    ----------
    store : CohortStore
    out : path-like
        Checkpoint folder to write.
    config : TrainConfig
    arch : ModelConfig, optional
        Architecture of a new model (required without ``init``).
    diffusion : DiffusionConfig, optional
        Diffusion settings of a new model (default ``DiffusionConfig()``); a fine-tuned
        checkpoint keeps its own.
    init : path-like, optional
        Checkpoint to fine-tune; extended with :func:`extend_for` to the store's conditions.
    init_modality : str, optional
        See :func:`extend_for`.
    resume, rows, image_conditions, require_finished
        See :func:`train`.
    image_condition_names : sequence of str
        Names of the image-condition channels (recorded in the checkpoint); a checkpoint with
        fewer input channels is widened with zero weights.
    task : dict, optional
        Image task recorded in the checkpoint (``GenBrain.task``), e.g.
        :meth:`bids_genbrain.tasks.spec.ImageTask.to_dict`.

    Returns
    -------
    GenBrain
        The trained model (EMA weights), also saved in ``out``.
    """
    names = list(image_condition_names)
    if init is not None:
        bundle = load_checkpoint(init)
        extend_for(bundle, store.conditions, init_modality)
        if bundle.image_conditions != names[: len(bundle.image_conditions)]:
            raise ValueError(f"the checkpoint's image conditions {bundle.image_conditions} "
                             f"are not a prefix of {names}")
        if len(names) > len(bundle.image_conditions):
            bundle.model.add_input_channels(len(names) - len(bundle.image_conditions))
        bundle.provenance = {"parent": {"path": str(Path(init).resolve()),
                                        "weights_sha256": _weights_sha(init)}}
    elif arch is not None:
        bundle = new_model(arch.with_(in_channels=1 + len(names)), store, diffusion,
                           seed=config.seed)
    else:
        raise ValueError("give an architecture (arch) or a checkpoint to fine-tune (init)")
    bundle.image_conditions = names
    bundle.task = dict(task or {})
    train(bundle, store, out, config, resume=resume, rows=rows,
          image_conditions=image_conditions, require_finished=require_finished)
    bundle.path = Path(out)
    return bundle


def _weights_sha(folder: Path | str) -> str:
    return json.loads((Path(folder) / "config.json").read_text())["weights_sha256"]
