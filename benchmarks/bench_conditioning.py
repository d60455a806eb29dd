"""Benchmark: does the model learn a planted categorical (diagnosis) effect?

A single simulated site (``SimulationConfig.fast``, MNI maps only, no native images; the
default planted effect: patients lose 10 % GM in both hippocampi and the precuneus) is modelled
as GM probability conditioned on age, sex and diagnosis. The real cohort's Cohen's d map of
diagnosis (``stats.glm``: patient - CN, confounds age and sex) is compared with the d map of a
balanced synthetic cohort sampled from the model (same design). Per run the benchmark reports

* ``r_synth_real``: Pearson r of the synthetic and the real d maps (``stats.compare``) - does
  the model reproduce its training sample's effect? The issue's target is >= 0.6 at N = 40 on
  the 4 mm grid;
* ``d_region_real`` / ``d_region_synth``: mean d in the planted regions (where the truth is
  below half its minimum) and their ratio;
* ``r_real_truth`` / ``r_synth_truth``: both maps against the planted truth;
* ``r_effect_synth_real``: Pearson r of the synthetic and real mean-difference maps (the GLM
  contrast estimate, before division by the residual SD), and ``sigma_ratio``: median over
  voxels of the synthetic residual SD over the real one - is a weak d-map r the difference
  or the model's sampled variance?
* ``r_synth_real_half``: the same r with only the first half of the synthetic cohort, and
  ``r_real_split``: r of the d maps of two disjoint halves of the real cohort (the real map's
  own reproducibility at N / 2) - to tell model error from d-map noise;
* the median over synthetic images of their largest Pearson r with a training image, raw and
  after removing the training mean (copies vs a template-like mean), and the final loss;
* ``flagged_fraction``: the synthetic images the group level's privacy gate would exclude as
  copies (``evaluate.privacy.check_memorization``, baseline: each training participant
  against the others), and ``r_synth_real_gated``: ``r_synth_real`` of the images it keeps;
* the conditioning scale: ``||e(patient) - e(CN)||`` of the diagnosis embedding and the mean
  norm of the timestep embedding over t, at step 0 and after training.

Variants of the diagnosis embedder (the model's embedders are replaced after construction, so
the comparison runs on today's code):

* ``legacy`` (from scratch): DiT's bare table, rows normal(std 0.02), and the former continuous
  embedder init (small read-out) - what the model had before issue 12;
* ``unit`` (from scratch): the model's embedders as built (unit-scale table rows, continuous
  embedders with unit-scale hidden units and a Xavier read-out; ``model/dit.py``);
* ``gate`` (fine-tuning): a unit-scale table behind a zero-initialised per-dimension gate;
* ``zero`` (fine-tuning): ``GenBrainDiT.add_condition`` as built (a zero table) trained with
  ``--extension-lr-scale`` (``TrainConfig.extension_lr_scale``; 1 = the former
  ``add_condition``, whose table learned at the fine-tuning rate).

Fine-tuning starts from a checkpoint pretrained (from scratch, ``unit``) on a simulated
control population (no patients) conditioned on age and sex only, and runs at the
default fine-tuning rate of the checkpoint's preset (``model.train.training_lr``; the ``test``
architecture is no preset, so 1e-4, ``presets.PAPER_LR``) unless ``--lr`` says otherwise.

Each trained model is sampled once per ``--weights`` (``ema``: the checkpoint's EMA weights;
``raw``: the last optimiser step's weights, to see EMA lag), ``--sampling-steps`` and
``--cfg``; each draw of ``max(--n-synthetic)`` images is also scored on stratified subsets of
the smaller ``--n-synthetic`` sizes (synthetic d-map noise). ``--ema-decay`` sets
``TrainConfig.ema_decay``.

Simulated data, stores and the pretrained checkpoint are cached under ``--work``; every run
appends rows to ``--out/bench_conditioning.tsv`` and rewrites ``bench_conditioning.md`` from
all rows.

Usage::

    export GENBRAIN_TEMPLATES=fallback
    python benchmarks/bench_conditioning.py scratch --resolution 8 --arch test \\
        --variants legacy unit
    python benchmarks/bench_conditioning.py finetune --resolution 8 --arch test \\
        --variants gate zero --extension-lr-scale 10
    python benchmarks/bench_conditioning.py scratch --resolution 4 --arch tiny --n 40 \\
        --variants unit --steps 1000 --cfg 1.0 1.5 3.0 --n-synthetic 200
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from torch import nn

from bids_genbrain.bids import read_participants
from bids_genbrain.cohort import CohortStore, build_cohort
from bids_genbrain.config import Config
from bids_genbrain.evaluate.privacy import check_memorization
from bids_genbrain.model.checkpoint import GenBrain, load_checkpoint
from bids_genbrain.model.conditions import ConditionSpec
from bids_genbrain.model.diffusion import DiffusionConfig
from bids_genbrain.model.dit import GenBrainDiT
from bids_genbrain.model.presets import ModelConfig, default_lr, get_preset
from bids_genbrain.model.sampling import sample
from bids_genbrain.model.train import TrainConfig, _state_dir, new_model, train, training_lr
from bids_genbrain.simulate import Effects, SimulationConfig, load_effect_map, simulate_dataset
from bids_genbrain.stats.compare import compare_maps
from bids_genbrain.stats.glm import fit_glm, make_design
from bids_genbrain.synthetic import balanced_conditions
from bids_genbrain.utils import atomic_write_text

CONDITIONS = ["age", "sex", "diagnosis"]
GROUP_DEFAULTS = {name: default for name, _, default in Config.options()}
"""The group level's option defaults (``steps``, ``batch_size``, ``n_synthetic``, ...)."""
CONFOUNDS = ["age", "sex"]
MODALITY = "GM"


# ----------------------------------------------------------------------------- data
def simulated_site(work: Path, n: int, resolution: float, seed: int, *,
                   patient_fraction: float = 0.5, effect: float = 0.1) -> Path:
    """Simulate (once, cached) a single site with MNI maps only; return its BIDS root.

    ``effect`` is the fractional GM loss of patients in the planted regions (the simulator's
    default 0.10 gives a Cohen's d of about 1 there).
    """
    root = work / (f"sim_n{n}_r{resolution:g}_s{seed}_p{patient_fraction:g}"
                   + ("" if effect == 0.1 else f"_e{effect:g}"))
    bids = root / "bids"
    if not (root / "complete").is_file():
        config = SimulationConfig.fast(n_subjects=n, n_sites=1, modalities=("T1w",),
                                       native=False, mnimaps=True, mni_resolution=resolution,
                                       seed=seed, patient_fraction=patient_fraction,
                                       effects=Effects(diagnosis_gm_loss=effect))
        simulate_dataset(bids, config, n_jobs=1)
        (root / "complete").write_text("")
    return bids


def cohort_store(bids: Path, resolution: float, conditions: list[str]) -> CohortStore:
    """The GM cohort store of a simulated site (cached next to it)."""
    out = bids.parent / f"store_{'-'.join(conditions)}"
    if not (out / "cohort.json").is_file():
        participants = read_participants(bids).reset_index(drop=True)
        build_cohort([bids / "derivatives" / "mnimaps"], out, modalities=[MODALITY],
                     participants=participants, conditions=conditions, resolution=resolution,
                     progress=False)
    return CohortStore(out)


def typed(table: pd.DataFrame) -> pd.DataFrame:
    """Age float, sex and diagnosis categorical (a store table reads them back as text)."""
    table = table.copy()
    for column in ("sex", "diagnosis"):
        table[column] = pd.Categorical(table[column].astype(str))
    return table


def design_of(table: pd.DataFrame):
    """The BWAS design: diagnosis (patient - CN) with age and sex as confounds."""
    plain = table[CONDITIONS].copy()
    for column in ("sex", "diagnosis"):
        plain[column] = plain[column].astype(str)
    return make_design(plain, "diagnosis", CONFOUNDS)


# ----------------------------------------------------------------------------- variants
class LegacyLabelEmbedder(nn.Module):
    """The embedder before issue 12: a bare table (DiT's), no read-out."""

    def __init__(self, num_classes: int, hidden_size: int, std: float) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        nn.init.normal_(self.embedding_table.weight, std=std)  # std 0 = zero table
        self.num_classes = num_classes

    def forward(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        if drop is not None:
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class GatedLabelEmbedder(LegacyLabelEmbedder):
    """A unit-scale table behind a zero-initialised per-dimension gate."""

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__(num_classes, hidden_size, std=1.0)
        self.gate = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.gate * super().forward(labels, drop)


def apply_scratch_variant(model: GenBrainDiT, variant: str) -> None:
    """Replace a fresh model's categorical embedders (and the continuous init) by a variant."""
    if variant == "unit":
        return
    for spec in model.conditions:
        if spec.kind == "categorical":
            model.c_embedders[spec.name] = LegacyLabelEmbedder(len(spec.levels),
                                                               model.hidden_size, 0.02)
        else:  # the former continuous init: small read-out
            emb = model.c_embedders[spec.name]
            nn.init.xavier_uniform_(emb.mlp[0].weight)
            nn.init.normal_(emb.mlp[0].bias, std=1.0)
            nn.init.normal_(emb.mlp[2].weight, std=0.02)
            nn.init.normal_(emb.null, std=0.02)


def add_condition_variant(model: GenBrainDiT, spec: ConditionSpec, variant: str) -> None:
    """Add the diagnosis condition to a pretrained model the way ``variant`` does."""
    model.add_condition(spec)
    if variant == "gate":  # replaces the zero table, an extension parameter all the same
        model.c_embedders[spec.name] = GatedLabelEmbedder(len(spec.levels), model.hidden_size)


@torch.no_grad()
def conditioning_scale(model: GenBrainDiT) -> dict[str, float]:
    """Norm of the diagnosis effect on the conditioning vector vs the timestep embedding's."""
    t = torch.arange(0, 1000, 25)
    t_norm = float(model.t_embedder(t).norm(dim=1).mean())
    spec = next(s for s in model.conditions if s.name == "diagnosis")
    emb = model.c_embedders["diagnosis"](torch.arange(len(spec.levels)))
    return {"t_norm": t_norm, "diagnosis_diff_norm": float((emb[1] - emb[0]).norm())}


# ----------------------------------------------------------------------------- measures
def synthetic_cohort(bundle: GenBrain, store: CohortStore, n: int, *, steps: int,
                     cfg_scale: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Sample a balanced synthetic cohort; (conditions, images in mask order)."""
    wanted = balanced_conditions(typed(store.table), CONDITIONS, n, contrast="diagnosis",
                                 seed=seed)
    mask = store.mask()
    images = np.empty((len(wanted), int(mask.sum())), dtype=np.float32)
    for i, img in sample(bundle, wanted, seed, steps=steps, cfg_scale=cfg_scale,
                         batch_size=16):
        images[i] = np.asanyarray(img.dataobj)[mask]
    return wanted, images


def largest_r(synthetic: np.ndarray, training: np.ndarray, centre: bool) -> float:
    """Median over synthetic images of the largest Pearson r with a training image."""
    if centre:
        mean = training.mean(axis=0)
        synthetic, training = synthetic - mean, training - mean

    def z(a: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return float(np.median((z(synthetic) @ z(training).T).max(axis=1)))


def half_rows(table: pd.DataFrame, seed: int,
              fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint parts of a table (``fraction`` of each diagnosis and the rest), stratified
    by diagnosis; positions, not index labels."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    labels = table["diagnosis"].astype(str).to_numpy()
    for level in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == level))
        cut = int(round(len(index) * fraction))
        first += list(index[:cut])
        second += list(index[cut:])
    return np.sort(first), np.sort(second)


def real_d(store: CohortStore) -> np.ndarray:
    """The d map of a (real or simulated) cohort store."""
    return fit_glm(np.asarray(store.data, dtype=np.float64), design_of(store.table)).d


def population_reference(args: argparse.Namespace, real: np.ndarray,
                         truth: np.ndarray) -> dict[str, float]:
    """A perfect, non-copying model's score: an independent simulated cohort's d map vs the
    real one (the same simulator, a new seed, ``--population-n`` participants)."""
    if not args.population_n:
        return {}
    bids = simulated_site(args.work, args.population_n, args.resolution, args.seed + 1000,
                          effect=args.effect)
    other = real_d(cohort_store(bids, args.resolution, CONDITIONS))
    return {"r_population_real": compare_maps(other, real)["r"],
            "r_population_truth": compare_maps(other, truth)["r"]}


def measure(store: CohortStore, truth: np.ndarray, wanted: pd.DataFrame,
            images: np.ndarray, seed: int) -> dict[str, float]:
    """Agreement of the synthetic and the real d maps (see the module docstring)."""
    data = np.asarray(store.data, dtype=np.float64)
    real_fit = fit_glm(data, design_of(store.table))
    real = real_fit.d
    synth_fit = fit_glm(images, design_of(wanted))
    synth = synth_fit.d
    first, _ = half_rows(wanted, seed)
    synth_half = fit_glm(images[first], design_of(wanted.iloc[first])).d
    a, b = half_rows(store.table, seed)
    split = compare_maps(fit_glm(data[a], design_of(store.table.iloc[a])).d,
                         fit_glm(data[b], design_of(store.table.iloc[b])).d)["r"]
    region = truth <= 0.5 * truth.min()
    varying = (real_fit.sigma > 0) & (synth_fit.sigma > 0)
    ids = store.table["participant_id"].astype(str).tolist()
    kept = ~check_memorization(images, data, training_ids=ids, progress=False).flagged
    gated = (compare_maps(fit_glm(images[kept], design_of(wanted.iloc[kept])).d, real)["r"]
             if kept.sum() > 2 * len(CONDITIONS) else float("nan"))  # a few residual dof
    return {
        "r_synth_real": compare_maps(synth, real)["r"],
        "flagged_fraction": float(1 - kept.mean()),
        "r_synth_real_gated": gated,
        "r_effect_synth_real": compare_maps(synth_fit.effect, real_fit.effect)["r"],
        "sigma_ratio": float(np.median(synth_fit.sigma[varying] / real_fit.sigma[varying])),
        "r_synth_real_half": compare_maps(synth_half, real)["r"],
        "r_real_split": split,
        "r_real_truth": compare_maps(real, truth)["r"],
        "r_synth_truth": compare_maps(synth, truth)["r"],
        "d_region_real": float(real[region].mean()),
        "d_region_synth": float(synth[region].mean()),
        "d_ratio": float(synth[region].mean() / real[region].mean()),
        "median_max_r": largest_r(images, data, centre=False),
        "median_max_r_centred": largest_r(images, data, centre=True),
    }


# ----------------------------------------------------------------------------- runs
def architecture(name: str, resolution: float, patch_size: int | None = None,
                 hidden_size: int | None = None) -> ModelConfig:
    """A CPU preset (``micro``, ``tiny``, ``small``) or ``test`` (the tests' 64-wide, depth-2
    model); a given ``patch_size`` or ``hidden_size`` replaces the architecture's."""
    if name == "test":
        config = ModelConfig("test", hidden_size=64, depth=2, num_heads=4,
                             patch_size=32 if resolution < 12 else 16, resolution=resolution)
    else:
        config = get_preset(name).with_(resolution=resolution)
    changes = {"patch_size": patch_size, "hidden_size": hidden_size}
    return config.with_(**{k: v for k, v in changes.items() if v})


def raw_weights(bundle: GenBrain, out: Path) -> GenBrain:
    """A copy of ``bundle`` holding the last optimiser step's weights (not the EMA's)."""
    raw = copy.deepcopy(bundle)
    raw.model.load_state_dict(load_file(str(_state_dir(out) / "model.safetensors")))
    return raw


def pretrained(args: argparse.Namespace) -> Path:
    """A checkpoint pretrained on a control population (age, sex), cached under --work."""
    arch = architecture(args.arch, args.resolution, args.patch_size, args.hidden_size)
    out = args.work / (f"pretrained_{args.arch}_r{args.resolution:g}_n{args.pretrain_n}"
                       f"_{args.pretrain_steps}"
                       + ("" if args.prediction == "epsilon" else f"_{args.prediction}")
                       + ("" if (args.patch_size, args.hidden_size) == (None, None)
                          else f"_p{arch.patch_size}_h{arch.hidden_size}"))
    if not (out / "config.json").is_file():
        bids = simulated_site(args.work, args.pretrain_n, args.resolution, args.seed + 100,
                              patient_fraction=0.0, effect=args.effect)
        store = cohort_store(bids, args.resolution, ["age", "sex"])
        bundle = new_model(arch, store, DiffusionConfig(prediction_type=args.prediction),
                           seed=args.seed)
        lr = default_lr(args.arch, fine_tuning=False)
        train(bundle, store, out, TrainConfig(steps=args.pretrain_steps, batch_size=args.batch,
                                              lr=lr if args.arch == "tiny" else 1e-3,
                                              seed=args.seed, checkpoint_every=10**9,
                                              progress=False, device="cpu"), resume=False)
    return out


def run_variant(args: argparse.Namespace, variant: str, store: CohortStore,
                truth: np.ndarray, reference: dict[str, float],
                save: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    """Train one variant, sample once per CFG scale, measure; ``save`` gets the rows so far
    after each step count (a long run keeps what it measured if it is stopped)."""
    arch = architecture(args.arch, args.resolution, args.patch_size, args.hidden_size)
    if args.experiment == "scratch":
        bundle = new_model(arch, store, DiffusionConfig(prediction_type=args.prediction),
                           seed=args.seed)
        apply_scratch_variant(bundle.model, variant)
        lr = args.lr or (default_lr(args.arch, fine_tuning=False) if args.arch == "tiny"
                         else 1e-3)
        parent = None
    else:
        parent = pretrained(args)
        bundle = load_checkpoint(parent)
        spec = next(s for s in store.conditions if s.name == "diagnosis")
        add_condition_variant(bundle.model, spec, variant)
        lr = args.lr or training_lr(args.arch, parent)
    before = conditioning_scale(bundle.model)
    out = args.work / "runs" / (f"{args.experiment}_{variant}_{args.arch}_r{args.resolution:g}"
                                f"_n{args.n}_e{args.effect:g}_b{args.batch}_lr{lr:g}"
                                f"x{args.extension_lr_scale:g}_{args.prediction}"
                                f"_ema{args.ema_decay:g}_p{arch.patch_size}"
                                f"_h{arch.hidden_size}"
                                + (f"_snr{args.min_snr_gamma:g}" if args.min_snr_gamma else ""))
    rows, train_s = [], 0.0
    for steps in sorted(args.steps):  # one run, measured at each step count (resumed)
        tic = time.perf_counter()
        train(bundle, store, out, TrainConfig(steps=steps, batch_size=args.batch, lr=lr,
                                              extension_lr_scale=args.extension_lr_scale,
                                              ema_decay=args.ema_decay, seed=args.seed,
                                              min_snr_gamma=args.min_snr_gamma,
                                              checkpoint_every=10**9, progress=False,
                                              device="cpu"), resume=True)
        train_s += time.perf_counter() - tic
        after = conditioning_scale(bundle.model)
        loss = pd.read_csv(out / "loss.tsv", sep="\t")["loss"]
        common = {"experiment": args.experiment, "variant": variant, "arch": args.arch,
                  "patch_size": arch.patch_size, "hidden_size": arch.hidden_size,
                  "resolution": args.resolution, "n": args.n,
                  "n_patient": int((store.table["diagnosis"].astype(str) == "patient").sum()),
                  "steps": steps, "batch": args.batch, "lr": lr,
                  "extension_lr_scale": args.extension_lr_scale, "ema_decay": args.ema_decay,
                  "min_snr_gamma": args.min_snr_gamma or np.nan,
                  "prediction": bundle.diffusion.prediction_type,
                  "seed": args.seed, "pretrained": parent.name if parent else "",
                  "effect": args.effect, **reference,
                  "final_loss": float(loss.tail(50).mean()),
                  "t_norm_init": before["t_norm"],
                  "diag_norm_init": before["diagnosis_diff_norm"],
                  "t_norm": after["t_norm"], "diag_norm": after["diagnosis_diff_norm"],
                  "train_s": round(train_s, 1)}
        for weights in args.weights:
            model = bundle if weights == "ema" else raw_weights(bundle, out)
            for sampling_steps, cfg_scale in itertools.product(args.sampling_steps, args.cfg):
                tic = time.perf_counter()
                wanted, images = synthetic_cohort(model, store, max(args.n_synthetic),
                                                  steps=sampling_steps, cfg_scale=cfg_scale,
                                                  seed=args.seed)
                sample_s = time.perf_counter() - tic
                for n_synthetic in sorted(args.n_synthetic):
                    keep = (np.arange(len(wanted)) if n_synthetic >= len(wanted) else
                            half_rows(wanted, args.seed, n_synthetic / len(wanted))[0])
                    row = {**common, "weights": weights, "cfg": cfg_scale,
                           "n_synthetic": len(keep), "sampling_steps": sampling_steps,
                           **measure(store, truth, wanted.iloc[keep].reset_index(drop=True),
                                     images[keep], args.seed),
                           "sample_s": round(sample_s, 1)}
                    rows.append(row)
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                      for k, v in row.items()}), flush=True)
        save(rows)
    return rows


def cost(args: argparse.Namespace, store: CohortStore) -> list[dict]:
    """Time one architecture's training steps (``--batch``) and sampling on this grid, and
    project them to ``--project-steps`` steps and ``--project-n-synthetic`` images (default:
    the group level's defaults) - what a run costs in CPU seconds."""
    arch = architecture(args.arch, args.resolution, args.patch_size, args.hidden_size)
    bundle = new_model(arch, store, DiffusionConfig(prediction_type=args.prediction),
                       seed=args.seed)
    timed = min(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        def run(steps: int) -> float:
            tic = time.perf_counter()
            train(bundle, store, Path(tmp), TrainConfig(steps=steps, batch_size=args.batch,
                                                        lr=1e-3, seed=args.seed,
                                                        checkpoint_every=10**9,
                                                        progress=False, device="cpu"),
                  resume=True)
            return time.perf_counter() - tic

        run(1)  # set-up and first step not timed
        s_per_step = run(1 + timed) / timed
    tokens = math.ceil(int(store.mask().sum()) / arch.patch_size)
    rows = []
    for sampling_steps, cfg_scale in itertools.product(args.sampling_steps, args.cfg):
        tic = time.perf_counter()
        wanted, _ = synthetic_cohort(bundle, store, max(args.n_synthetic),
                                     steps=sampling_steps, cfg_scale=cfg_scale, seed=args.seed)
        s_per_image = (time.perf_counter() - tic) / len(wanted)
        row = {"arch": args.arch, "hidden_size": arch.hidden_size, "depth": arch.depth,
               "patch_size": arch.patch_size, "tokens": tokens,
               "resolution": args.resolution, "batch": args.batch, "timed_steps": timed,
               "s_per_step": s_per_step, "sampling_steps": sampling_steps, "cfg": cfg_scale,
               "timed_images": len(wanted), "s_per_image": s_per_image,
               "project_steps": args.project_steps,
               "project_n_synthetic": args.project_n_synthetic,
               "project_train_s": s_per_step * args.project_steps,
               "project_sample_s": s_per_image * args.project_n_synthetic}
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in row.items()}), flush=True)
    return rows


SHOWN = ["experiment", "variant", "arch", "hidden_size", "patch_size", "resolution", "n",
         "seed", "effect", "steps", "lr", "extension_lr_scale", "prediction", "ema_decay",
         "min_snr_gamma", "weights",
         "sampling_steps", "cfg",
         "n_synthetic", "r_synth_real", "flagged_fraction", "r_synth_real_gated",
         "r_effect_synth_real", "sigma_ratio",
         "r_synth_real_half", "r_real_split", "r_population_real", "r_real_truth",
         "r_synth_truth", "d_region_real", "d_region_synth", "median_max_r",
         "median_max_r_centred", "final_loss", "diag_norm_init", "diag_norm", "t_norm",
         "train_s"]


def markdown(results: pd.DataFrame) -> str:
    """All rows as one Markdown table, grouped by experiment."""
    lines = ["# Conditioning: is a planted diagnosis effect learned?", "",
             "Rows of `benchmarks/bench_conditioning.py` (see its docstring for every column). "
             "Runs share the machine's two cores with the rest of the team (one thread each), "
             "so wall times are pessimistic.", "",
             "| " + " | ".join(SHOWN) + " |", "|" + "---|" * len(SHOWN)]
    results = results.reindex(columns=list(dict.fromkeys([*SHOWN, *results.columns])))
    order = ["experiment", "resolution", "arch", "effect", "variant", "extension_lr_scale",
             "prediction", "ema_decay", "steps", "weights", "sampling_steps", "cfg",
             "n_synthetic"]
    for row in results.sort_values(order, na_position="first").itertuples():
        cells = []
        for name in SHOWN:
            value = getattr(row, name)
            cells.append(f"{value:.3g}" if isinstance(value, float) and math.isfinite(value)
                         else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["scratch", "finetune", "cost"],
                        help="cost: time training steps and sampling of --arch (min --steps "
                             "steps, max --n-synthetic images) and project them; rows in "
                             "bench_conditioning_cost.tsv.")
    parser.add_argument("--variants", nargs="+", default=["readout"])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--resolution", type=float, default=8.0)
    parser.add_argument("--arch", default="test", choices=["test", "micro", "tiny", "small"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1500],
                        help="Measure after each of these step counts (one resumed run).")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None,
                        help="Default: the preset's from-scratch rate (tiny 1e-3, test 1e-3), "
                             "or the checkpoint's preset's fine-tuning rate.")
    parser.add_argument("--extension-lr-scale", type=float,
                        default=TrainConfig.extension_lr_scale,
                        help="Learning-rate multiplier of the embedders added by fine-tuning "
                             "(TrainConfig.extension_lr_scale).")
    parser.add_argument("--prediction", default="epsilon",
                        choices=["epsilon", "v_prediction", "sample"],
                        help="Training target (DiffusionConfig.prediction_type).")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0])
    parser.add_argument("--n-synthetic", type=int, nargs="+", default=[200],
                        help="Synthetic cohort sizes (one draw of the largest, stratified "
                             "subsets for the others).")
    parser.add_argument("--sampling-steps", type=int, nargs="+", default=[15])
    parser.add_argument("--weights", nargs="+", default=["ema"], choices=["ema", "raw"],
                        help="Sample the EMA weights (the checkpoint's) and/or the raw ones.")
    parser.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay,
                        help="TrainConfig.ema_decay (warm-up (1 + s) / (10 + s) either way).")
    parser.add_argument("--min-snr-gamma", type=float, default=None,
                        help="TrainConfig.min_snr_gamma (Min-SNR-gamma loss weighting)")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="Replace the architecture's patch size.")
    parser.add_argument("--hidden-size", type=int, default=None,
                        help="Replace the architecture's hidden size.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--effect", type=float, default=0.1,
                        help="Planted fractional GM loss of patients (simulator default 0.1).")
    parser.add_argument("--population-n", type=int, default=0,
                        help="Also score an independent simulated cohort of this size (a "
                             "perfect model that copies nobody).")
    parser.add_argument("--project-steps", type=int, default=GROUP_DEFAULTS["steps"],
                        help="cost: training steps to project to (the group level's).")
    parser.add_argument("--project-n-synthetic", type=int,
                        default=GROUP_DEFAULTS["n_synthetic"],
                        help="cost: synthetic images to project to (the group level's).")
    parser.add_argument("--pretrain-n", type=int, default=100)
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path("bench_conditioning_work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    bids = simulated_site(args.work, args.n, args.resolution, args.seed, effect=args.effect)
    store = cohort_store(bids, args.resolution, CONDITIONS)
    truth, _ = load_effect_map(bids / "derivatives" / "groundtruth", MODALITY, "diagnosis",
                               args.resolution)
    truth = truth[store.mask()]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.experiment == "cost":
        path = args.out / "bench_conditioning_cost.tsv"
        table = pd.DataFrame(cost(args, store))
        if path.is_file():
            table = pd.concat([pd.read_csv(path, sep="\t"), table], ignore_index=True)
        atomic_write_text(path, table.to_csv(sep="\t", index=False, float_format="%.5g"))
        return
    reference = population_reference(args, real_d(store), truth)
    path = args.out / "bench_conditioning.tsv"
    earlier = pd.read_csv(path, sep="\t") if path.is_file() else pd.DataFrame()

    def save(new_rows: list[dict]) -> None:
        """Rewrite the results with the earlier rows and this run's so far."""
        if not new_rows:
            return
        table = pd.concat([earlier, pd.DataFrame(new_rows)], ignore_index=True)
        atomic_write_text(path, table.to_csv(sep="\t", index=False, float_format="%.5g"))
        atomic_write_text(args.out / "bench_conditioning.md", markdown(table))

    rows: list[dict] = []
    for variant in args.variants:
        done = list(rows)
        rows += run_variant(args, variant, store, truth, reference,
                            save=lambda new: save(done + new))
    save(rows)


if __name__ == "__main__":
    main()
