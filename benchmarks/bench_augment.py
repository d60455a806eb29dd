"""Benchmark: does augmenting a small site with synthetic images help a classifier across sites?

A multi-site study is simulated with MNI-space maps only (``SimulationConfig.fast``: the
simulator's site effects, i.e. each site's multiplicative bias and noise on GM estimates, and
the planted diagnosis effect: patients lose 10 % GM in both hippocampi and the precuneus), and
a healthy population (``SimulationConfig.population``) for a foundation model. Stages, each
resumable and each short enough for one shared 15-minute slot:

``simulate``
    the study (``--sites`` sites of ``--site-size`` participants) and the population;
``pretrain``
    ``genbrain pretrain`` on the population (``tiny``, GMmod, 4 mm);
``augment``
    ``genbrain augment`` on the study: the population model fine-tuned on the training site's
    training split, LightGBM on Harvard-Oxford regional volumes at ratios 0..3 (step 0.1,
    20 draws, 1000 bootstrap resamples); run twice: first with one draw and 10 resamples (the
    generator and the synthetic images, resumed by the second), then the full curve;
``regress``
    the same command with ``--regress age`` (MONAI ResNet, ratios 0, 1, 2, 3);
``evaluate``
    ``genbrain evaluate`` of the fine-tuned generator on the training site's participants,
    with the other sites as the reference cohort (K = 1..5; half a site of synthetic images,
    so that real samples of the same size vary over draws);
``report``
    ``benchmarks/results/bench_augment.md`` and the figures in ``docs/figures/``.

Usage (each stage through the shared slots)::

    GENBRAIN_TEMPLATES=fallback /work/team/heavy python benchmarks/bench_augment.py \\
        --work /path/to/bench --stage simulate
    ... --stage pretrain; --stage augment; --stage regress; --stage evaluate; --stage report
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"
GENBRAIN = shutil.which("genbrain") or str(Path(sys.executable).parent / "genbrain")
STAGES = ("simulate", "pretrain", "augment", "regress", "evaluate", "report")


def _run(args: list[str], log: Path) -> float:
    """Run a genbrain command, its output to ``log``; return its wall time (s)."""
    tic = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(map(str, args))}\n")
        out.flush()
        proc = subprocess.run([GENBRAIN, *map(str, args)], stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"genbrain {args[0]} failed ({proc.returncode}); see {log}")
    return time.perf_counter() - tic


def _timings(work: Path) -> dict:
    path = work / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(work: Path, name: str, seconds: float) -> None:
    timings = _timings(work)
    timings[name] = round(timings.get(name, 0.0) + seconds, 1)
    (work / "timings.json").write_text(json.dumps(timings, indent=1))


def simulate(args, work: Path) -> None:
    from bids_genbrain.simulate import SimulationConfig, simulate_dataset

    tic = time.perf_counter()
    study = SimulationConfig.fast(
        n_subjects=args.site_size * args.sites, n_sites=args.sites, native=False,
        mnimaps=True, maps=("GMmod",), subject_truth=False, anatomy_resolution=4.0,
        mni_resolution=4.0, age_range=(40.0, 85.0), seed=args.seed)
    if not (work / "study" / "participants.tsv").is_file():
        simulate_dataset(work / "study", study, overwrite=True, progress=False)
    population = SimulationConfig.population(n_subjects=args.population, maps=("GMmod",),
                                             modalities=("T1w",), seed=args.seed + 1)
    if args.pretrain_steps and not (work / "population" / "participants.tsv").is_file():
        simulate_dataset(work / "population", population, overwrite=True, progress=False)
    # per-site derivative folders (links) for genbrain evaluate's real and reference cohorts
    table = pd.read_csv(work / "study" / "participants.tsv", sep="\t")
    mnimaps = work / "study" / "derivatives" / "mnimaps"
    for name, sites in (("train_site", ["site1"]), ("other_sites", ["site2", "site3"][:args.sites - 1])):
        folder = work / name
        if folder.exists():
            continue
        folder.mkdir()
        shutil.copy(mnimaps / "dataset_description.json", folder)
        keep = table[table["site"].isin(sites)]
        keep.to_csv(folder / "participants.tsv", sep="\t", index=False)
        for pid in keep["participant_id"]:
            os.symlink(mnimaps / pid, folder / pid)
    _record(work, "simulate", time.perf_counter() - tic)


def pretrain(args, work: Path) -> None:
    if not args.pretrain_steps:  # no foundation model: augment trains one from scratch
        return
    if (work / "population_model" / "config.json").is_file() and (
            json.loads((work / "population_model" / "config.json").read_text())
            ["provenance"]["steps"] >= args.pretrain_steps):
        return
    seconds = _run(["pretrain", work / "population" / "derivatives" / "mnimaps",
                    "--participants", work / "population", "--out", work / "population_model",
                    "--preset", "tiny", "--resolution", "4", "--modality", "GMmod",
                    "--steps", args.pretrain_steps, "--batch-size", 16, "--seed", args.seed,
                    "--checkpoint-every", 500], work / "pretrain.log")
    _record(work, "pretrain", seconds)


def _augment_args(args, work: Path, out: Path) -> list:
    return ["augment", work / "study" / "derivatives" / "mnimaps", "--participants",
            work / "study", "--out", out, "--work-dir", work / "augment_work",
            "--contrast", "diagnosis", "--train-site", "site1",
            *(["--model", work / "population_model"] if args.pretrain_steps
              else ["--resolution", 4]),
            "--steps", args.finetune_steps, "--batch-size", 16,
            "--sampling-steps", args.sampling_steps, "--seed", args.seed, "--quiet"]


def _curve_args(args) -> list:
    return ["--draws", args.draws, "--ratio-step", args.ratio_step]


def augment(args, work: Path) -> None:
    out = work / "augment"
    if not (out / "contrast-diagnosis_desc-augmentation_metrics.tsv").is_file():
        # first pass: fine-tune the generator and sample (a quick classifier); resumed below
        _record(work, "augment_generator", _run(
            [*_augment_args(args, work, out), "--draws", 1, "--bootstrap", 10,
             "--ratio-step", 1.0], work / "augment.log"))
    metrics = pd.read_csv(out / "contrast-diagnosis_desc-augmentation_metrics.tsv", sep="\t")
    if metrics["ratio"].nunique() < int(round(3.0 / args.ratio_step)) + 1:
        _record(work, "augment_curve", _run([*_augment_args(args, work, out),
                                             *_curve_args(args)], work / "augment.log"))


def regress(args, work: Path) -> None:
    out = work / "regress"
    if (out / "contrast-age_desc-regression_metrics.tsv").is_file():
        return
    if not out.exists():  # reuse the generator and the synthetic images of the augment stage
        out.mkdir()
        for name in ("generator", "synthetic"):
            shutil.copytree(work / "augment" / name, out / name)
    _record(work, "regress", _run(
        [*_augment_args(args, work, out), "--draws", 1, "--bootstrap", 1000, "--ratio-step",
         1.0, "--regress", "age", "--regress-ratio-step", 1.0, "--regress-epochs",
         args.regress_epochs], work / "regress.log"))


def evaluate(args, work: Path) -> None:
    out = work / "evaluate"
    if (out / "desc-similarity_metrics.tsv").is_file():
        return
    _record(work, "evaluate", _run(
        ["evaluate", work / "train_site", "--out", out, "--work-dir", work / "evaluate_work",
         "--model", work / "augment" / "generator", "--reference", work / "other_sites",
         "--n-synthetic", args.evaluate_synthetic or max(4, args.site_size // 2),
         "--diversity-pairs", args.diversity_pairs,
         "--sampling-steps", args.sampling_steps, "--draws", args.evaluate_draws, "--seed",
         args.seed, "--quiet"], work / "evaluate.log"))


def _ci(row, metric: str) -> str:
    return f"{row[metric]:.3f} [{row[f'{metric}_ci_low']:.3f}, {row[f'{metric}_ci_high']:.3f}]"


def report(args, work: Path) -> None:
    from bids_genbrain.reports.augment import best_ratio

    aug = work / "augment"
    metrics = pd.read_csv(aug / "contrast-diagnosis_desc-augmentation_metrics.tsv", sep="\t")
    chosen = best_ratio(metrics)
    splits = pd.read_csv(aug / "contrast-diagnosis_desc-splits_metrics.tsv", sep="\t")
    lines = [
        "# Augmentation and evaluation on a simulated multi-site study", "",
        f"Study: {args.sites} sites x {args.site_size} participants "
        "(`SimulationConfig.fast`, MNI maps only, 4 mm grid, GMmod; site effects: each site's "
        "GM bias and noise; planted diagnosis effect: patients lose 10 % GM in both hippocampi "
        f"and the precuneus; seed {args.seed}). Generator: `tiny`, "
        + (f"pretrained for {args.pretrain_steps} steps on {args.population} simulated "
           f"healthy adults, fine-tuned for {args.finetune_steps} steps"
           if args.pretrain_steps else
           f"no foundation model: trained from scratch for {args.finetune_steps} steps")
        + " on the training split of site1 "
        f"({int(splits['generator'].sum())} participants); sampling: "
        f"{args.sampling_steps} steps. Classifier: LightGBM on "
        f"Harvard-Oxford regional volumes (mL), {args.draws} draws per ratio (step "
        f"{args.ratio_step:g}), best on validation AUROC;"
        " 95 % CIs: percentile bootstrap, 1000 resamples of the test participants.", "",
        "## AUROC and accuracy at ratio 0 and at the ratio chosen on validation", "",
        f"Ratio chosen on validation: **{chosen:g}**.", "",
        "| training set | test set | n | AUROC [95 % CI] | accuracy [95 % CI] |",
        "|---|---|---|---|---|"]
    for ratio, label in ((0.0, "real only (ratio 0)"), (chosen, f"ratio {chosen:g}")):
        for _, row in metrics[metrics["ratio"] == ratio].iterrows():
            lines.append(f"| {label} | {row['test_set']} | {int(row['n'])} | "
                         f"{_ci(row, 'auroc')} | {_ci(row, 'accuracy')} |")
    best_test = metrics.loc[metrics.groupby("test_set")["auroc"].idxmax()]
    lines += ["", "Highest test AUROC over all ratios (chosen on the test set itself, so "
              "optimistic; for orientation only): " + "; ".join(
                  f"{r['test_set']}: {r['auroc']:.3f} at ratio {r['ratio']:g}"
                  for _, r in best_test.iterrows()) + ".", "",
              "![AUROC against the ratio](../../docs/figures/bench_augment_auroc.svg)", ""]
    FIGURES.mkdir(parents=True, exist_ok=True)
    for metric in ("auroc", "accuracy"):
        shutil.copy(aug / "figures" / f"contrast-diagnosis_desc-augmentation{metric}.svg",
                    FIGURES / f"bench_augment_{metric}.svg")
    regression = work / "regress" / "contrast-age_desc-regression_metrics.tsv"
    if regression.is_file():
        table = pd.read_csv(regression, sep="\t")
        lines += ["## 3D ResNet regression of age (MAE, years)", "",
                  "| ratio | test set | n | MAE [95 % CI] | best epoch |", "|---|---|---|---|---|"]
        for _, row in table.iterrows():
            lines.append(f"| {row['ratio']:g} | {row['test_set']} | {int(row['n'])} | "
                         f"{_ci(row, 'mae')} | {int(row['best_epoch'])} |")
        lines.append("")
    ev = work / "evaluate"
    if (ev / "desc-similarity_metrics.tsv").is_file():
        sim = pd.read_csv(ev / "desc-similarity_metrics.tsv", sep="\t")
        lines += ["## genbrain evaluate: the fine-tuned generator against real samples", "",
                  "Real cohort: site1; reference: the other sites. Cosine of t maps with the "
                  f"reference's (mean and 2.5-97.5 % range over {args.evaluate_draws} draws):", "",
                  "| effect | cohort | K | n | cosine t | range | r of d maps | synthetic >= real |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, row in sim.iterrows():
            k = "" if pd.isna(row["average"]) else int(row["average"])
            ge = "" if pd.isna(row.get("fraction_ge_real")) else f"{row['fraction_ge_real']:.0%}"
            lines.append(f"| {row['effect']} | {row['cohort']} | {k} | {int(row['n'])} | "
                         f"{row['cosine_t']:.3f} | [{row['ci_low']:.3f}, {row['ci_high']:.3f}] |"
                         f" {row['r_d']:.3f} | {ge} |")
        memo = pd.read_csv(ev / "desc-memorization_metrics.tsv", sep="\t")
        dist = pd.read_csv(ev / "desc-distribution_metrics.tsv", sep="\t")
        regional = json.loads((ev / "atlas-HarvardOxford_desc-regional_metrics.json")
                              .read_text())["Summary"]
        lines += ["", f"Memorization: {int(memo['flagged'].sum())} of {len(memo)} synthetic "
                  f"images flagged (median raw max r {memo['max_r'].median():.3f}, median "
                  f"mean-removed r with the closest record {memo['residual_r'].median():.3f}).",
                  "", "| set | K | n | MMD (rbf) | MMD (linear) | MS-SSIM diversity |",
                  "|---|---|---|---|---|---|"]
        for _, row in dist.iterrows():
            k = "" if pd.isna(row["average"]) else int(row["average"])
            lines.append(f"| {row['set']} | {k} | {int(row['n'])} | {row['mmd_rbf']:.4f} | "
                         f"{row['mmd_linear']:.4g} | {row['ms_ssim_diversity']:.3f} |")
        lines += ["", "Regional plausibility (K = 1): " + ", ".join(
            f"{k} {v:.3f}" for k, v in regional.items()) + ".", "",
            "![similarity against K](../../docs/figures/bench_augment_similarity.svg)", ""]
        shutil.copy(ev / "figures" / "desc-similarity_curve.svg",
                    FIGURES / "bench_augment_similarity.svg")
        RESULTS.mkdir(parents=True, exist_ok=True)
        sim.to_csv(RESULTS / "bench_augment_similarity.tsv", sep="\t", index=False)
        dist.to_csv(RESULTS / "bench_augment_distribution.tsv", sep="\t", index=False)
    timings = _timings(work)
    lines += ["## Timings", "", "Wall seconds per stage on the shared 2-core machine (other "
              "engineers' jobs running; not clean timings): " + ", ".join(
                  f"{k} {v:.0f}" for k, v in timings.items()) + ".", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_augment.md").write_text("\n".join(lines))
    metrics.to_csv(RESULTS / "bench_augment.tsv", sep="\t", index=False)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--site-size", type=int, default=80)
    parser.add_argument("--population", type=int, default=400)
    parser.add_argument("--pretrain-steps", type=int, default=3000,
                        help="0: no population model (augment trains the generator from "
                        "scratch on the training split)")
    parser.add_argument("--finetune-steps", type=int, default=2000)
    parser.add_argument("--sampling-steps", type=int, default=25)
    parser.add_argument("--regress-epochs", type=int, default=15)
    parser.add_argument("--draws", type=int, default=20, help="LightGBM draws per ratio")
    parser.add_argument("--ratio-step", type=float, default=0.1)
    parser.add_argument("--evaluate-draws", type=int, default=20)
    parser.add_argument("--evaluate-synthetic", type=int, default=None,
                        help="synthetic images per K in evaluate [default: half a site]")
    parser.add_argument("--diversity-pairs", type=int, default=30,
                        help="MS-SSIM pairs per set in evaluate")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        globals()[stage](args, args.work.resolve())


if __name__ == "__main__":
    main()
