"""Benchmark: scan enhancement and missing-modality synthesis against their baselines.

A site is simulated with MNI-space ground truth only (``SimulationConfig.fast``: no native
images; T1w and FLAIR on the 4 mm grid by default, 2 mm on a GPU). Its first ``--n-train``
participants train, the next ``--n-test`` are held out. The clean images are the simulator's
true MNI-space T1w/FLAIR (``derivatives/groundtruth``, noise-free), so the targets carry no
noise a model could not predict.

Tasks
    * enhancement of T1w and FLAIR: one GenBrain model for both (``--task enhance
      --modality T1w FLAIR``), trained on clean images corrupted afresh at every step
      (:mod:`bids_genbrain.corrupt`); each held-out image is corrupted once with a fixed seed
      (never left clean: a draw with neither motion nor noise is redrawn) and every method
      sees that same corrupted input;
    * T1w -> FLAIR and FLAIR -> T1w synthesis: one model each.
Methods
    * ``input``: the corrupted scan (enhancement) or the source modality (synthesis) itself;
    * ``mean brain``: the mean training image of the target modality, whatever the input;
    * ``U-Net``: MONAI's 3D U-Net trained on the same pairs (same rows, batches, seeds and
      corruption draws) with MSE, as many steps as GenBrain (:mod:`bids_genbrain.evaluate
      .baselines`);
    * ``GenBrain K=1`` / ``GenBrain K=5``: the first DDIM sample, and the mean of five;
    * ``GenBrain-ft K=5``: fine-tuned from the population checkpoint (``--population``),
      where one is given.
Metrics (store space [0, 1], :mod:`bids_genbrain.evaluate.imagetasks`): PSNR and RMSE on brain
voxels, 3D-SSIM and MS-SSIM on the grid, per held-out image, summarised as mean with a t 95 %
interval; paired t and Wilcoxon tests between methods on the same images; and the age/sex
similarity of the outputs (cosine of the age and sex t-maps of a method's outputs with those of
the clean held-out images; few images, so a rough check). Wall times of training and inference
per image are measured in the same run (say how loaded the machine was: ``--load-note``).

Usage::

    GENBRAIN_TEMPLATES=fallback python benchmarks/bench_image_tasks.py \\
        --n-train 40 --n-test 16 --steps 1000 --batch-size 8 --sampling-steps 50
    # quick check of the script: --n-train 6 --n-test 3 --steps 5 --sampling-steps 3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from bids_genbrain.cohort import CohortStore, image_values, normalise
from bids_genbrain.corrupt import CorruptionConfig
from bids_genbrain.evaluate.baselines import mean_brain, train_unet
from bids_genbrain.evaluate.imagetasks import (METRICS, effect_similarity, image_metrics,
                                               mean_ci, paired_test)
from bids_genbrain.model.checkpoint import GenBrain, load_checkpoint
from bids_genbrain.model.conditions import encode_table
from bids_genbrain.model.diffusion import ddim_sample, initial_noise, sample_seed
from bids_genbrain.model.presets import default_lr, get_preset
from bids_genbrain.model.train import TrainConfig, resolve_device
from bids_genbrain.simulate import SimulationConfig, simulate_dataset
from bids_genbrain.stats.glm import DesignError
from bids_genbrain.tasks.finetune import finetune_task
from bids_genbrain.tasks.pairs import corrupt_values, training_pairs
from bids_genbrain.tasks.spec import ImageTask
from bids_genbrain.derivatives import kind_path
from bids_genbrain.templates import brain_mask
from bids_genbrain.utils import atomic_path, atomic_write_text

CONSOLE = Console(stderr=True)
TASKS = {
    "enhance": ImageTask.enhance(["T1w", "FLAIR"]),
    "T1w->FLAIR": ImageTask.synthesize(["T1w"], "FLAIR"),
    "FLAIR->T1w": ImageTask.synthesize(["FLAIR"], "T1w"),
}
TEST_SEED = 10_000
"""Offset of the seeds of the held-out corruptions (the training ones use the run seed)."""


@dataclass
class Case:
    """Held-out inputs and targets of one task and target modality.

    Attributes
    ----------
    task, modality : str
    participants : list of str
    inputs : ndarray, shape (n, C, n_voxels)
        Image conditions (store space).
    targets : ndarray, shape (n, n_voxels)
        Clean target images (store space).
    corruption : list of dict
        The corruption of each input (enhancement).
    outputs : dict
        Method -> (n, n_voxels) predictions.
    """

    task: str
    modality: str
    participants: list[str]
    inputs: np.ndarray
    targets: np.ndarray
    corruption: list[dict] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def truth_path(groundtruth: Path, participant: str, modality: str, resolution: float) -> Path:
    return kind_path(groundtruth, "preproc", modality=modality, resolution=resolution,
                     sub=participant)


def held_out_cases(task_name: str, task: ImageTask, bundle: GenBrain, groundtruth: Path,
                   participants: list[str], resolution: float, seed: int) -> list[Case]:
    """Held-out inputs and targets, normalised with the trained model's mapping."""
    mask = brain_mask(resolution)
    norm = bundle.normalisation

    def values(p: str, m: str) -> np.ndarray:
        return normalise(image_values(truth_path(groundtruth, p, m, resolution), resolution),
                         norm[m])

    cases = []
    for modality in task.outputs:
        targets = np.stack([values(p, modality) for p in participants])
        corruption = []
        if task.name == "enhance":
            inputs = np.empty_like(targets)
            for i, clean in enumerate(targets):
                rng = np.random.default_rng([seed, TEST_SEED, i, len(modality)])
                drawn = None
                while drawn is None or (drawn.motion is None and drawn.noise_sigma == 0):
                    inputs[i], drawn = corrupt_values(clean, mask, norm[modality], rng,
                                                      task.corruption_config(), resolution)
                corruption.append(drawn.to_dict())
            inputs = inputs[:, None]
        else:
            inputs = np.stack([[values(p, s) for s in task.sources] for p in participants])
        cases.append(Case(task_name, modality, participants, inputs, targets, corruption))
    return cases


@torch.no_grad()
def genbrain_draws(bundle: GenBrain, modality: str, inputs: np.ndarray, seed: int, k: int,
                   steps: int, batch_size: int) -> np.ndarray:
    """``k`` DDIM samples per input (n, k, n_voxels), draw j of image i from its own seed."""
    model = bundle.model.eval()
    jobs = [(i, j) for i in range(len(inputs)) for j in range(k)]
    out = np.empty((len(inputs), k, model.layout.n_voxels), dtype=np.float32)
    for a in range(0, len(jobs), batch_size):
        chunk = jobs[a:a + batch_size]
        rows = [i for i, _ in chunk]
        cond = encode_table(model.conditions, pd.DataFrame({"modality": [modality] * len(chunk)}))
        noise = initial_noise([sample_seed(seed, i, j) for i, j in chunk], model.layout.n_voxels)
        images = ddim_sample(model, bundle.diffusion, cond, noise, steps=steps, cfg_scale=1.0,
                             image_cond=torch.as_tensor(inputs[rows], dtype=torch.float32))
        for (i, j), img in zip(chunk, images.numpy(), strict=True):
            out[i, j] = img
    return out


class Timings(dict):
    """Timings persisted in the work folder, so that resumed runs keep earlier stages'."""

    def __init__(self, path: Path) -> None:
        super().__init__(json.loads(path.read_text()) if path.is_file() else {})
        self.path = path

    def set(self, key: str, value: float) -> None:
        self[key] = float(value)
        atomic_write_text(self.path, json.dumps(self, indent=2) + "\n")


def train_genbrain(task: ImageTask, groundtruth: Path, out: Path, train: list[str],
                   args: argparse.Namespace, init: Path | None = None) -> GenBrain:
    """Train (or continue training, or load) one GenBrain task model."""
    config_path = out / "config.json"
    if config_path.is_file() and json.loads(config_path.read_text())["provenance"].get(
            "steps") == args.steps:
        return load_checkpoint(out)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size,
                         lr=default_lr(args.preset, fine_tuning=init is not None),
                         checkpoint_every=50, seed=args.seed, device=args.device)
    return finetune_task(task, [groundtruth], out, config, init=init,
                         arch=None if init else get_preset(args.preset),
                         resolution=None if init else args.resolution, subjects=train,
                         resume=True)


def step_seconds(checkpoint: Path) -> float:
    """Training wall time: the sum of every step's time in ``loss.tsv``."""
    log = pd.read_csv(checkpoint / "loss.tsv", sep="\t")
    batch = json.loads((checkpoint / "config.json").read_text())["provenance"]["batch_size"]
    return float((batch / log["images_per_s"]).sum())


def cached(path: Path, compute, timings: Timings, key: str, n: int) -> np.ndarray:
    """``compute()`` once (saved as .npy); its time per image goes to ``timings[key]``."""
    if path.is_file():
        return np.load(path)
    start = time.perf_counter()
    value = compute()
    timings.set(key, (time.perf_counter() - start) / n)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.save(tmp, value)
    return value


def pretrain_population(args: argparse.Namespace, timings: Timings) -> Path:
    """A population checkpoint: ``--pretrain-population`` healthy simulated adults' T1w and
    FLAIR (``SimulationConfig.population``, noisy MNI maps as a pipeline writes them), a
    ``--preset`` model conditioned on age and sex trained ``--pretrain-steps`` from scratch.
    Resumable like the rest."""
    from bids_genbrain.bids import read_participants
    from bids_genbrain.cohort import build_cohort
    from bids_genbrain.model.train import fit

    out = args.work / "population_model"
    config_path = out / "config.json"
    if config_path.is_file() and json.loads(config_path.read_text())["provenance"].get(
            "steps") == args.pretrain_steps:
        return out
    root = args.work / "population"
    if not (root / "participants.tsv").is_file():
        tic = time.perf_counter()
        simulate_dataset(root, SimulationConfig.population(
            n_subjects=args.pretrain_population, maps=("T1w", "FLAIR"),
            mni_resolution=args.resolution, seed=args.seed + 1), n_jobs=1)
        timings.set("population_simulate_s", time.perf_counter() - tic)
    store = build_cohort([root / "derivatives" / "mnimaps"], args.work / ".population.cohort",
                         modalities=["T1w", "FLAIR"],
                         participants=read_participants(root).reset_index(drop=True),
                         conditions=["age", "sex"], resolution=args.resolution, reuse=True)
    CONSOLE.rule(f"population pretraining ({len(store)} images)")
    fit(store, out, TrainConfig(steps=args.pretrain_steps, batch_size=args.batch_size,
                                lr=default_lr(args.preset, fine_tuning=False),
                                checkpoint_every=50, seed=args.seed, device=args.device),
        arch=get_preset(args.preset).with_(resolution=args.resolution), resume=True)
    timings.set("population_pretrain_s", step_seconds(out))
    return out


def run_task(task_name: str, sim, train: list[str], test: list[str], work: Path,
             args: argparse.Namespace, timings: Timings) -> list[Case]:
    """Train GenBrain, the U-Net and the mean brain for one task; predict the held-out set.

    Every stage resumes: checkpoints, the U-Net's state and each prediction are kept in
    ``work``, so the benchmark can run as a series of short jobs (``timeout``) that continue
    each other.
    """
    task = TASKS[task_name]
    tag = task_name.replace("->", "_to_")
    CONSOLE.rule(f"{task_name}: GenBrain from scratch")
    bundle = train_genbrain(task, sim.groundtruth, work / f"genbrain_{tag}", train, args)
    timings.set(f"{tag}_genbrain_train_s", step_seconds(work / f"genbrain_{tag}"))
    store = CohortStore(work / f".genbrain_{tag}.cohort")
    rows, builder = training_pairs(store, task)
    CONSOLE.rule(f"{task_name}: U-Net on the same pairs")
    unet = train_unet(store, rows, builder, in_channels=len(task.image_conditions),
                      steps=args.steps, batch_size=args.batch_size, lr=args.unet_lr,
                      seed=args.seed, device=resolve_device(args.device), progress=True,
                      state=work / f"unet_{tag}.pt")
    timings.set(f"{tag}_unet_train_s", sum(unet.seconds))
    timings.set(f"{tag}_unet_final_loss", float(np.mean(unet.losses[-20:])))
    tuned = None
    if args.population is not None:
        CONSOLE.rule(f"{task_name}: GenBrain fine-tuned from {args.population}")
        tuned = train_genbrain(task, sim.groundtruth, work / f"genbrain_ft_{tag}", train, args,
                               init=args.population)
        timings.set(f"{tag}_genbrain_ft_train_s", step_seconds(work / f"genbrain_ft_{tag}"))
    cases = held_out_cases(task_name, task, bundle, sim.groundtruth, test, args.resolution,
                           args.seed)
    modality_rows = store.table["modality"].to_numpy()
    k = args.average
    for case in cases:
        n = len(case.targets)
        pred = work / "predictions" / f"{tag}_{case.modality}"
        case.outputs["input"] = case.inputs[:, 0]
        case.outputs["mean brain"] = np.repeat(
            mean_brain(store, rows[modality_rows[rows] == case.modality])[None], n, axis=0)
        case.outputs["U-Net"] = cached(pred / "unet.npy", lambda: unet.predict(case.inputs),
                                       timings, f"{tag}_{case.modality}_unet_infer_s_per_image",
                                       n)
        draws = cached(pred / "genbrain.npy", lambda: genbrain_draws(
            bundle, case.modality, case.inputs, args.seed, k, args.sampling_steps,
            args.sample_batch), timings,
            f"{tag}_{case.modality}_genbrain_infer_s_per_image_K{k}", n)
        case.outputs["GenBrain K=1"] = draws[:, 0]
        case.outputs[f"GenBrain K={k}"] = draws.mean(axis=1)
        if tuned is not None:
            case.outputs[f"GenBrain-ft K={k}"] = cached(pred / "genbrain_ft.npy", lambda: (
                genbrain_draws(tuned, case.modality, case.inputs, args.seed, k,
                               args.sampling_steps, args.sample_batch)), timings,
                f"{tag}_{case.modality}_genbrain_ft_infer_s_per_image_K{k}", n).mean(axis=1)
    return cases


def score(cases: list[Case], table: pd.DataFrame, args: argparse.Namespace
          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-image metrics, summaries with CIs and paired tests."""
    mask = brain_mask(args.resolution)
    per_image = []
    for case in cases:
        for method, outputs in case.outputs.items():
            for i, participant in enumerate(case.participants):
                row = {"task": case.task, "modality": case.modality, "method": method,
                       "participant_id": participant}
                row.update(image_metrics(case.targets[i], outputs[i], mask))
                if case.corruption:
                    c = case.corruption[i]
                    row["motion"] = c["motion"] is not None
                    row["noise_sigma"] = c["noise_sigma"]
                per_image.append(row)
    per_image = pd.DataFrame(per_image)
    summary = []
    for (task, modality, method), group in per_image.groupby(["task", "modality", "method"],
                                                             sort=False):
        row = {"task": task, "modality": modality, "method": method, "n": len(group)}
        for metric in METRICS:
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = mean_ci(group[metric])
        case = next(c for c in cases if c.task == task and c.modality == modality)
        covariates = table.set_index("participant_id").loc[case.participants].reset_index()
        for contrast, confounds in (("age", ["sex"]), ("sex", ["age"])):
            try:
                row[f"{contrast}_similarity"] = effect_similarity(
                    case.outputs[method], case.targets, covariates, contrast, confounds)
            except DesignError:  # too few held-out images (or one sex only) for a t-map
                row[f"{contrast}_similarity"] = math.nan
        summary.append(row)
    summary = pd.DataFrame(summary)
    k = f"GenBrain K={args.average}"
    pairs = [(k, "input"), (k, "U-Net"), (k, "mean brain"), (k, "GenBrain K=1"),
             ("U-Net", "input"), (f"GenBrain-ft K={args.average}", k)]
    tests = []
    for (task, modality), group in per_image.groupby(["task", "modality"], sort=False):
        wide = {m: g.set_index("participant_id") for m, g in group.groupby("method")}
        for a, b in pairs:
            if a not in wide or b not in wide:
                continue
            for metric in METRICS:
                x = wide[a].loc[wide[b].index, metric].to_numpy()
                y = wide[b][metric].to_numpy()
                tests.append({"task": task, "modality": modality, "a": a, "b": b,
                              "metric": metric, **paired_test(x, y)})
    return per_image, summary, pd.DataFrame(tests)


def _fmt(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def verdicts(summary: pd.DataFrame, tests: pd.DataFrame, args: argparse.Namespace) -> list[str]:
    """The issue's targets, each checked on the measured numbers."""
    k = f"GenBrain K={args.average}"
    lines = []

    def test(task, modality, a, b, metric):
        sel = tests[(tests.task == task) & (tests.modality == modality) & (tests.a == a)
                    & (tests.b == b) & (tests.metric == metric)]
        return sel.iloc[0] if len(sel) else None

    for _, row in summary[(summary.method == k)].iterrows():
        task, modality = row["task"], row["modality"]
        if task == "enhance":
            t = test(task, modality, k, "input", "PSNR")
            ok = t is not None and t["mean_diff"] >= 2.0
            lines.append(f"* enhancement {modality}: PSNR {row['PSNR']:.2f} dB vs corrupted "
                         f"{t['mean_diff']:+.2f} dB [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] "
                         f"(target >= +2 dB): {'met' if ok else 'NOT met'}")
            u = test(task, modality, k, "U-Net", "PSNR")
            lines.append(f"* enhancement {modality}: PSNR vs U-Net {u['mean_diff']:+.2f} dB "
                         f"[{u['ci_low']:+.2f}, {u['ci_high']:+.2f}], p = {u['p_t']:.2g} "
                         f"(target: not below): {'met' if u['ci_high'] >= 0 else 'NOT met'}")
        else:
            u = test(task, modality, k, "U-Net", "SSIM")
            lines.append(f"* synthesis {task}: 3D-SSIM vs U-Net {u['mean_diff']:+.3f} "
                         f"[{u['ci_low']:+.3f}, {u['ci_high']:+.3f}], p = {u['p_t']:.2g} "
                         f"(target: not below): {'met' if u['ci_high'] >= 0 else 'NOT met'}")
        kk = test(task, modality, k, "GenBrain K=1", "PSNR")
        ks = test(task, modality, k, "GenBrain K=1", "SSIM")
        lines.append(f"* {task} {modality}: K={args.average} vs K=1: PSNR "
                     f"{kk['mean_diff']:+.2f} dB [{kk['ci_low']:+.2f}, {kk['ci_high']:+.2f}], "
                     f"SSIM {ks['mean_diff']:+.3f} [{ks['ci_low']:+.3f}, {ks['ci_high']:+.3f}]")
    return lines


def markdown(summary: pd.DataFrame, tests: pd.DataFrame, per_image: pd.DataFrame,
             timings: dict, args: argparse.Namespace, n_voxels: int) -> str:
    if args.pretrain_population:
        population = (f"GenBrain-ft: fine-tuned ({args.steps} steps, lr "
                      f"{default_lr(args.preset, fine_tuning=True):g}) from a population "
                      f"checkpoint pretrained here on {args.pretrain_population} simulated "
                      f"healthy adults' T1w and FLAIR (`SimulationConfig.population`, age and "
                      f"sex conditions, {args.pretrain_steps} steps)")
    elif args.population:
        population = f"GenBrain-ft: fine-tuned from `{args.population}`"
    else:
        population = ("no population checkpoint was given (`--population`), so GenBrain is "
                      "trained from scratch only")
    lines = [
        "# Image tasks: enhancement and modality synthesis against baselines", "",
        f"Simulated site (`SimulationConfig.fast`, seed {args.seed}): {args.n_train} training "
        f"and {args.n_test} held-out participants; true (noise-free) MNI-space T1w and FLAIR "
        f"on the {args.resolution:g} mm grid ({n_voxels} brain voxels). GenBrain: `"
        f"{args.preset}` preset from scratch, {args.steps} steps of batch {args.batch_size} "
        f"(learning rate {default_lr(args.preset, fine_tuning=False):g}), "
        f"{args.sampling_steps} DDIM steps, K = {args.average} samples averaged; {population}. "
        f"U-Net: MONAI 3D UNet (16-32-64-128, 2 residual units), same pairs, {args.steps} "
        f"steps of batch {args.batch_size}, lr {args.unet_lr:g}, MSE. Each held-out scan is "
        "corrupted once (fixed seed) from the training distribution (motion with probability "
        "1/2, Gaussian/Rician noise sigma 0-50 raw units; a draw with neither is redrawn, so "
        "every held-out input is corrupted). Metrics on [0, 1] intensities "
        "(each modality's robust range): mean [95 % t interval] over held-out images.", "",
    ]
    for (task, modality), group in summary.groupby(["task", "modality"], sort=False):
        title = f"Enhancement of {modality}" if task == "enhance" else f"Synthesis {task}"
        lines += [f"## {title}", "",
                  "| method | PSNR (dB) | RMSE | 3D-SSIM | MS-SSIM | age similarity | "
                  "sex similarity |", "|---|---|---|---|---|---|---|"]
        for _, r in group.iterrows():
            cells = [_fmt(r["PSNR"], r["PSNR_lo"], r["PSNR_hi"], 2)]
            cells += [_fmt(r[m], r[f"{m}_lo"], r[f"{m}_hi"]) for m in ("RMSE", "SSIM",
                                                                       "MS_SSIM")]
            cells += [f"{r['age_similarity']:.2f}", f"{r['sex_similarity']:.2f}"]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Targets", "", *verdicts(summary, tests, args), ""]
    enh = per_image[(per_image.task == "enhance") & (per_image.method.isin(
        ["input", "U-Net", f"GenBrain K={args.average}"]))]
    if "motion" in enh:
        lines += ["## Enhancement by corruption (PSNR, dB, mean over images)", "",
                  "| modality | corruption | n | input | U-Net | GenBrain |",
                  "|---|---|---|---|---|---|"]
        for (modality, motion), g in enh.groupby(["modality", "motion"]):
            means = g.groupby("method")["PSNR"].mean()
            cells = [f"{means.get(m, math.nan):.2f}"
                     for m in ("input", "U-Net", f"GenBrain K={args.average}")]
            lines.append(f"| {modality} | {'motion + noise' if motion else 'noise only'} | "
                         f"{int((g.method == 'input').sum())} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Paired tests (a - b on the same images)", "",
              "| task | modality | a | b | metric | mean diff [95 % CI] | p (t) | p (Wilcoxon) |",
              "|---|---|---|---|---|---|---|---|"]
    for _, t in tests[tests.metric.isin(["PSNR", "SSIM"])].iterrows():
        lines.append(f"| {t['task']} | {t['modality']} | {t['a']} | {t['b']} | {t['metric']} | "
                     f"{_fmt(t['mean_diff'], t['ci_low'], t['ci_high'])} | {t['p_t']:.2g} | "
                     f"{t['p_wilcoxon']:.2g} |")
    clean = args.out / f"{args.name}_timing.json"
    if clean.is_file():
        times = json.loads(clean.read_text())
        lines += ["", "## Times (short clean run)", "",
                  f"Measured with `--timing` under `/work/team/exclusive` ({times['machine']}; "
                  f"{times['torch_threads']} torch thread(s)), enhancement task, batch "
                  f"{args.batch_size}, {args.sampling_steps} DDIM steps:", "",
                  "| what | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in times.items()
                  if k not in ("machine", "torch_threads")]
    lines += ["", "## Times of this run", "", f"Machine: {args.load_note}. Training times are "
              "the sums of the steps' wall times (the run was split into resumed segments).",
              "", "| what | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in timings.items()]
    lines.append("")
    return "\n".join(lines)


def measure_times(sim, train: list[str], test: list[str], args: argparse.Namespace) -> dict:
    """Short clean timings (run under /work/team/exclusive): training step and inference.

    From-scratch GenBrain and U-Net training steps of the enhancement task (batch
    ``--batch-size``, corruption included; the first step is left out as warm-up), and the
    inference time per image of the trained enhancement models on two held-out images.
    """
    import tempfile

    task = TASKS["enhance"]
    out: dict[str, float] = {"torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        steps = 11
        config = TrainConfig(steps=steps, batch_size=args.batch_size, lr=1e-3,
                             checkpoint_every=steps, seed=args.seed, device=args.device,
                             progress=False)
        finetune_task(task, [sim.groundtruth], Path(tmp) / "g", config,
                      arch=get_preset(args.preset), resolution=args.resolution, subjects=train,
                      resume=False, progress=False)
        log = pd.read_csv(Path(tmp) / "g" / "loss.tsv", sep="\t").iloc[1:]
        out["genbrain_train_s_per_step"] = float((args.batch_size / log["images_per_s"]).mean())
        store = CohortStore(Path(tmp) / ".g.cohort")
        rows, builder = training_pairs(store, task)
        unet = train_unet(store, rows, builder, in_channels=1, steps=steps,
                          batch_size=args.batch_size, lr=args.unet_lr, seed=args.seed)
        out["unet_train_s_per_step"] = float(np.mean(unet.seconds[1:]))
    bundle = load_checkpoint(args.work / "genbrain_enhance")
    (case,) = [c for c in held_out_cases("enhance", task, bundle, sim.groundtruth, test[:2],
                                         args.resolution, args.seed) if c.modality == "T1w"]
    for k in (1, args.average):
        start = time.perf_counter()
        genbrain_draws(bundle, "T1w", case.inputs, args.seed, k, args.sampling_steps,
                       args.sample_batch)
        out[f"genbrain_infer_s_per_image_K{k}"] = (time.perf_counter() - start) / 2
    start = time.perf_counter()
    unet.predict(case.inputs)
    out["unet_infer_s_per_image"] = (time.perf_counter() - start) / 2
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--average", type=int, default=5)
    parser.add_argument("--sample-batch", type=int, default=10)
    parser.add_argument("--resolution", type=float, default=4.0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--population", type=Path, default=None,
                        help="population checkpoint (T1w and FLAIR) to fine-tune")
    parser.add_argument("--pretrain-population", type=int, default=0, metavar="N",
                        help="make the population checkpoint: pretrain on N simulated "
                             "healthy adults (SimulationConfig.population)")
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=Path("bench_image_tasks_work"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="bench_image_tasks")
    parser.add_argument("--load-note", default="shared 2-core CPU (other jobs running)")
    parser.add_argument("--timing", action="store_true",
                        help="only the short clean timings (after a full run; use "
                             "/work/team/exclusive): written to <name>_timing.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.work.mkdir(parents=True, exist_ok=True)
    timings = Timings(args.work / "timings.json")
    sim_root = args.work / "site"
    if (sim_root / "participants.tsv").is_file():  # reuse the site of an earlier run
        sim = _existing(sim_root)
    else:
        config = SimulationConfig.fast(n_subjects=args.n_train + args.n_test, n_sites=1,
                                       modalities=("T1w", "FLAIR"), native=False,
                                       mni_resolution=args.resolution, seed=args.seed)
        tic = time.perf_counter()
        sim = simulate_dataset(sim_root, config, n_jobs=1)
        timings.set("simulate_s", time.perf_counter() - tic)
    table = pd.read_csv(sim.root / "participants.tsv", sep="\t")
    ids = sorted(table["participant_id"])
    train, test = ids[:args.n_train], ids[args.n_train:args.n_train + args.n_test]
    if args.pretrain_population and args.population is None:
        args.population = pretrain_population(args, timings)
    if args.timing:
        times = measure_times(sim, train, test, args)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"{args.name}_timing.json", json.dumps(
            {**times, "machine": args.load_note}, indent=2) + "\n")
        CONSOLE.print(times)
        return
    cases = []
    for name in args.tasks:
        cases += run_task(name, sim, train, test, args.work, args, timings)
    per_image, summary, tests = score(cases, table, args)
    args.out.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(args.out / f"{args.name}_per_image.tsv", sep="\t", index=False)
    summary.to_csv(args.out / f"{args.name}.tsv", sep="\t", index=False)
    tests.to_csv(args.out / f"{args.name}_tests.tsv", sep="\t", index=False)
    n_voxels = int(brain_mask(args.resolution).sum())
    atomic_write_text(args.out / f"{args.name}.md",
                      markdown(summary, tests, per_image, timings, args, n_voxels))
    atomic_write_text(args.out / f"{args.name}_timings.json", json.dumps(timings, indent=2))
    CONSOLE.print((args.out / f"{args.name}.md").read_text())


def _existing(root: Path):
    """A simulated site from an earlier run (its root and ground-truth folder)."""
    from types import SimpleNamespace

    return SimpleNamespace(root=root, groundtruth=root / "derivatives" / "groundtruth")


if __name__ == "__main__":
    main()
