"""Benchmark: do the real-sample and the synthetic BWAS maps recover a planted effect?

The GenBrain claim: a model fine-tuned on a small site, sampled into a large balanced synthetic
cohort, gives a BWAS map closer to the truth than the site's own small-sample map. Here the
truth is known: for each site size N (default 20, 40, 80) a single-site study is simulated
straight in MNI space (``derivatives/mnimaps``, no native images) with a planted diagnosis
effect (patients lose 10 % GM in both hippocampi and the precuneus), and the group level runs
through the CLI (``bids_genbrain BIDS OUT group``, GM probability, contrast diagnosis,
confounds age and sex, the planted GM diagnosis effect as ``--reference-map``) in two modes.
The defaults are the settings ``genbrain demo`` learns the planted diagnosis with on a CPU
(docs/model.md, "Conditioning that learns"): the 8 mm grid, the ``nano`` preset trained to
predict velocity (``v_prediction``) for 12,000 steps of batch 8, 100 synthetic images with 15
DDIM steps at the group level's guidance scale; the options that set them are the group
level's (``--resolution``, ``--preset``, ``--prediction-type``, ``--steps``,
``--batch-size``, ``--lr``, ``--cfg-scale``, ``--n-synthetic``, ``--sampling-steps``).

* ``scratch``: the model is trained from scratch on the site (GenBrain-st), at the preset's
  from-scratch learning rate;
* ``finetune``: the model is fine-tuned (``--model``, fine-tuning learning rate) from a
  population checkpoint: ``genbrain simulate --population`` (healthy adults 18-90, both sexes,
  four sites, five MNI maps: T1w, FLAIR, GM, modulated GM, FA) and ``genbrain pretrain`` of
  the same preset and prediction type on all five with the modality index as a condition;
  the group level adds the diagnosis embedder.

Reported per N and mode, for the real and the synthetic d map against the truth: Pearson r,
the Dice coefficients (d > 0, d < 0, micro-averaged, top 20 % |d|) with 95 % intervals
(normal bootstrap, Fisher z for r: the real map's over its participants, 200 draws, from the
group level; the synthetic map's over the synthetic images kept by the privacy gate, 200 draws,
computed here: it covers the sampling of the synthetic cohort, not the training of the model),
the mean d inside and outside the planted regions, Pearson r of the synthetic d map with the
real one (does the model reproduce its site's effect?) and the ratio of their mean d in the
regions, the privacy gate, the final training loss and wall times; every row carries the
settings it was run with. Then the claim, per N: does the synthetic map beat the real one?

Sign convention: d = second sorted level minus the first (``patient - CN``, read back from the
statmap sidecar's ``Levels``); the planted map is the relative GM change of patients versus
controls (negative in the regions). Agreement means r > 0 and a negative mean d in the regions.

Every stage keeps its results in ``--work`` and is skipped when done, so the benchmark can run
as several shorter jobs (``--stage``); a finished cell run with other settings is an error
(use another ``--work``), e.g.::

    B="python benchmarks/bench_bwas_truth.py --work /scratch/bench"
    $B --stage population                      # simulate the population
    $B --stage pretrain --pretrain-steps 6000  # pretrain (resumable: a later call with more
    $B --stage pretrain --pretrain-steps 12000 #   steps continues the same run)
    $B --stage group --sizes 20 40 80 --modes scratch
    $B --stage group --sizes 20 40 80 --modes finetune
    $B --stage report                          # tables -> benchmarks/results/

With ``GENBRAIN_TEMPLATES=fallback`` everything runs offline.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from rich.console import Console

from bids_genbrain.cli.demo import DEMO_PREDICTION, DEMO_PRESET
from bids_genbrain.cli.study_options import config_default
from bids_genbrain.cohort import CohortStore
from bids_genbrain.derivatives import res_label
from bids_genbrain.simulate import SimulationConfig, load_effect_map, simulate_dataset
from bids_genbrain.simulation.config import POPULATION_MAPS
from bids_genbrain.simulation.groundtruth import effect_path
from bids_genbrain.stats.compare import METRICS, bootstrap_comparison, reference_vector
from bids_genbrain.utils import atomic_write_text

BIN = Path(sys.executable).parent
BIDS_GENBRAIN = shutil.which("bids_genbrain") or str(BIN / "bids_genbrain")
GENBRAIN = shutil.which("genbrain") or str(BIN / "genbrain")
STATMAP = "space-MNI152NLin6Asym_res-{res}_contrast-diagnosis_desc-{desc}_stat-d_statmap"
CONSOLE = Console(stderr=True)
MODES = ("scratch", "finetune")
POPULATION_MODALITIES = ("T1w", "FLAIR", *POPULATION_MAPS)
N_BOOT = 200
SETTINGS = ("resolution", "preset", "prediction_type", "steps", "batch_size", "lr", "cfg_scale",
            "n_synthetic", "sampling_steps", "seed")
"""Options of the group level a cell is run with (the CLI's names, ``--cfg-scale`` ...)."""


def _run(command: list, log: Path) -> float:
    """Run a CLI command with its output in ``log``; return the wall time (s)."""
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run([str(c) for c in command], stdout=handle,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"exited {proc.returncode}: {' '.join(map(str, command))}\n{tail}")
    return time.perf_counter() - start


def _done(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def stage_population(args: argparse.Namespace) -> dict:
    """Simulate the population (once)."""
    record = args.work / "population.json"
    if (done := _done(record)) is not None:
        return done
    root = args.work / "population"
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    _run([GENBRAIN, "simulate", root, "--population", "--n-subjects", args.population,
          "--mni-resolution", f"{args.resolution:g}", "--seed", args.seed + 100, "--quiet"],
         args.work / "population.log")
    info = {"n": args.population, "seconds": round(time.perf_counter() - start, 1),
            "root": str(root)}
    atomic_write_text(record, json.dumps(info, indent=2) + "\n")
    return info


def stage_pretrain(args: argparse.Namespace) -> dict:
    """Pretrain the population checkpoint up to ``--pretrain-steps`` (resumes)."""
    population = _done(args.work / "population.json")
    if population is None:
        raise SystemExit("run --stage population first")
    out = args.work / "population_model"
    config = out / "config.json"
    if config.is_file():
        done = _pretrain_info(out)
        if (done["preset"], done["prediction_type"]) != (args.preset, args.prediction_type):
            raise SystemExit(f"{out} is a {done['preset']} {done['prediction_type']} model, not "
                             f"{args.preset} {args.prediction_type}: give another --work")
        if done["steps"] >= args.pretrain_steps:
            return done
    root = Path(population["root"])
    modalities = [a for m in POPULATION_MODALITIES for a in ("--modality", m)]
    seconds = _run([GENBRAIN, "pretrain", root / "derivatives" / "mnimaps", "--participants",
                    root, "--out", out, "--preset", args.preset, "--prediction-type",
                    args.prediction_type, "--resolution",
                    f"{args.resolution:g}", "--steps", args.pretrain_steps, "--batch-size",
                    args.pretrain_batch_size, "--checkpoint-every", 250, "--seed", args.seed,
                    *modalities, "--condition", "age", "--condition", "sex",
                    "--work-dir", args.work],
                   args.work / f"pretrain_{args.pretrain_steps}.log")
    times = _done(args.work / "pretrain_times.json") or {}
    times[str(args.pretrain_steps)] = round(seconds, 1)
    atomic_write_text(args.work / "pretrain_times.json", json.dumps(times, indent=2) + "\n")
    return _pretrain_info(out)


def _pretrain_info(out: Path) -> dict:
    config = json.loads((out / "config.json").read_text())
    loss = pd.read_csv(out / "loss.tsv", sep="\t")["loss"]
    times = _done(out.parent / "pretrain_times.json") or {}
    return {"path": str(out), "steps": config["provenance"]["steps"], "preset": config["preset"],
            "prediction_type": config["diffusion"]["prediction_type"],
            "n_images": config["provenance"]["n_images"],
            "batch_size": config["provenance"]["batch_size"],
            "modalities": config["modalities"], "final_loss": float(loss.tail(50).mean()),
            "seconds": round(sum(times.values()), 1)}


def simulate_site(root: Path, n: int, args: argparse.Namespace):
    """The site of size ``n``: MNI maps only, one site, planted effects (cached)."""
    config = SimulationConfig.fast(n_subjects=n, n_sites=1, modalities=("T1w",), native=False,
                                   mnimaps=True, maps=("GM",), subject_truth=False,
                                   mni_resolution=args.resolution, seed=args.seed)
    marker = root / "site.json"
    if marker.is_file():
        return SimpleSim(root / "bids")
    start = time.perf_counter()
    simulate_dataset(root / "bids", config, overwrite=True)
    atomic_write_text(marker, json.dumps({"seconds": round(time.perf_counter() - start, 1)}))
    return SimpleSim(root / "bids")


class SimpleSim:
    """Where a simulated site's parts are (``simulate_dataset``'s result, re-opened)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.groundtruth = root / "derivatives" / "groundtruth"
        self.mnimaps = root / "derivatives" / "mnimaps"
        self.table = pd.read_csv(self.groundtruth / "simulation.tsv", sep="\t")


def settings(args: argparse.Namespace) -> dict:
    """The group-level settings of this call (:data:`SETTINGS`; ``lr`` None: the CLI's)."""
    return {name: getattr(args, name) for name in SETTINGS}


def group_options(args: argparse.Namespace) -> list:
    """The group level's options for :func:`settings` (``--lr`` only when given)."""
    options = []
    for name, value in settings(args).items():
        if value is not None:
            flag = "--" + name.replace("_", "-")
            options += [flag, f"{value:g}" if isinstance(value, float) else value]
    return options


def run_cell(n: int, mode: str, args: argparse.Namespace) -> list[dict]:
    """Group level of one site size and mode; its result rows (cached)."""
    root = args.work / f"n{n}"
    record = root / f"{mode}.json"
    if (done := _done(record)) is not None:
        ran = {name: done[0]["requested"][name] for name in SETTINGS}
        if ran != settings(args):
            raise SystemExit(f"N={n} {mode} in {args.work} was run with {ran}, not "
                             f"{settings(args)}: give another --work")
        return done
    root.mkdir(parents=True, exist_ok=True)
    sim = simulate_site(root, n, args)
    out = root / mode
    if out.exists():
        shutil.rmtree(out)
    reference = effect_path(sim.groundtruth, "GM", "diagnosis", args.resolution)
    command = [BIDS_GENBRAIN, sim.root, out, "group", "--derivatives", sim.mnimaps,
               *group_options(args), "--modality", "GM", "--condition", "age", "sex",
               "--contrast", "diagnosis", "--reference-map", reference, "--nprocs", 1,
               "--omp-nthreads", 1, "--work-dir", out / "work"]
    if mode == "finetune":
        command += ["--model", args.work / "population_model"]
    seconds = _run(command, root / f"{mode}.log")
    rows = evaluate(n, mode, sim, out, args, seconds)
    atomic_write_text(record, json.dumps(rows, indent=2) + "\n")
    return rows


def planted_region(truth: np.ndarray) -> tuple[np.ndarray, int]:
    """Voxels where the planted effect is at least half its extreme, and the effect's sign."""
    extreme = truth.min() if abs(truth.min()) >= abs(truth.max()) else truth.max()
    if extreme == 0:
        raise ValueError("the planted effect map is zero everywhere")
    return truth / extreme >= 0.5, int(np.sign(extreme))


def region_means(path: Path, region: np.ndarray) -> tuple[float, float]:
    """Mean of a statmap inside ``region`` and elsewhere in the brain (finite, nonzero)."""
    data = np.asanyarray(nb.load(path).dataobj, dtype=np.float64)
    brain = np.isfinite(data) & (data != 0)
    return float(data[brain & region].mean()), float(data[brain & ~region].mean())


def maps_correlation(a: Path, b: Path) -> float:
    """Pearson r of two statmaps over the voxels finite and nonzero in both."""
    x, y = (np.asanyarray(nb.load(p).dataobj, dtype=np.float64) for p in (a, b))
    keep = np.isfinite(x) & np.isfinite(y) & (x != 0) & (y != 0)
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def synthetic_intervals(out: Path, reference_path: Path, kept: np.ndarray,
                        args: argparse.Namespace) -> pd.DataFrame:
    """Bootstrap intervals of the synthetic map's agreement, over the kept synthetic images."""
    store = CohortStore(out / "work" / "group" / "synthetic_cohort")
    table = store.table.iloc[kept].reset_index(drop=True)
    for column in ("diagnosis", "sex"):
        table[column] = table[column].astype(str)
    reference = reference_vector(nb.load(reference_path), resolution=args.resolution,
                                 mask=store.mask())
    boot = bootstrap_comparison(store.data, table, reference, rows=kept, contrast="diagnosis",
                                confounds=["age", "sex"], n_boot=N_BOOT, seed=args.seed,
                                progress=False)
    return boot.summary


def evaluate(n: int, mode: str, sim: SimpleSim, out: Path, args: argparse.Namespace,
             seconds: float) -> list[dict]:
    """Rows of the result table (one per map) for one site size and mode."""
    bwas = out / "group" / "bwas"
    table = pd.read_csv(bwas / "contrast-diagnosis_comparison.tsv", sep="\t").set_index("metric")
    reference = effect_path(sim.groundtruth, "GM", "diagnosis", args.resolution)
    truth, truth_meta = load_effect_map(sim.groundtruth, "GM", "diagnosis", args.resolution)
    region, truth_sign = planted_region(truth)
    memo = pd.read_csv(bwas / "memorization.tsv", sep="\t")
    kept = np.flatnonzero(~memo["flagged"].to_numpy(dtype=bool))
    loss = pd.read_csv(out / "group" / "model" / "loss.tsv", sep="\t")["loss"]
    model = json.loads((out / "group" / "model" / "config.json").read_text())
    provenance = model["provenance"]
    groups = sim.table["diagnosis"].value_counts()
    paths = {desc: bwas / (STATMAP.format(res=res_label(args.resolution), desc=desc)
                           + ".nii.gz") for desc in ("real", "synthetic")}
    synthetic_ci = synthetic_intervals(out, reference, kept, args)
    rows = []
    for desc, path in paths.items():
        levels = json.loads(path.with_name(path.name.replace(".nii.gz", ".json"))
                            .read_text())["Levels"]
        inside, outside = region_means(path, region)
        row = {"n": n, "mode": mode, "n_CN": int(groups.get("CN", 0)),
               "n_patient": int(groups.get("patient", 0)), "map": desc,
               "d_direction": f"{levels['active']} - {levels['reference']}"}
        for metric in METRICS:
            row[metric] = float(table.loc[metric, desc])
            if desc == "real":
                low, high = table.loc[metric, "real_ci_low"], table.loc[metric, "real_ci_high"]
            else:
                low, high = synthetic_ci.loc[metric, "ci_low"], synthetic_ci.loc[metric, "ci_high"]
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = float(low), float(high)
        row.update({
            "preset": model["preset"], "prediction_type": model["diffusion"]["prediction_type"],
            "resolution": args.resolution, "steps": int(provenance["train_config"]["steps"]),
            "batch_size": int(provenance["batch_size"]), "cfg_scale": args.cfg_scale,
            "n_synthetic": args.n_synthetic, "sampling_steps": args.sampling_steps,
            "seed": args.seed, "mean_d_region": inside, "mean_d_outside": outside,
            "truth_sign_region": truth_sign,
            "direction_agrees": bool(np.sign(inside) == truth_sign and row["r"] > 0),
            "n_synthetic_kept": int(len(kept)),
            "synthetic_median_max_r": float(memo["max_r"].median()),
            "final_loss": float(loss.tail(10).mean()),
            "lr": float(provenance["train_config"]["lr"]),
            "synthetic_real_d_r": maps_correlation(paths["real"], paths["synthetic"]),
            "group_s": round(seconds, 1),
            "truth_description": truth_meta.get("Description", ""),
            "requested": settings(args),
        })
        rows.append(row)
    ratio = rows[1]["mean_d_region"] / rows[0]["mean_d_region"]
    for row in rows:
        row["region_d_synthetic_over_real"] = ratio
    return rows


def _fmt(value: float, low: float = math.nan, high: float = math.nan) -> str:
    if not np.isfinite(value):
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) else "")


def _value(results: pd.DataFrame, column: str) -> str:
    """The value(s) of ``column`` over all rows (``a/b`` when they differ)."""
    return "/".join(f"{v:g}" if isinstance(v, float) else str(v)
                    for v in sorted(set(results[column])))


def _by_mode(results: pd.DataFrame, column: str) -> str:
    """The values of ``column`` per mode, e.g. ``scratch 0.001, finetune 0.0001``."""
    return ", ".join(f"{mode} {_value(part, column)}"
                     for mode, part in results.groupby("mode", sort=False))


def markdown(results: pd.DataFrame, args: argparse.Namespace, pretrain: dict | None,
             population: dict | None, note: str) -> str:
    """The Markdown report: settings, sign convention, agreement tables, the claim, timings."""
    direction = results["d_direction"].iloc[0]
    lines = [
        "# BWAS maps against the planted truth (group level through the CLI)", "",
        f"Single-site simulated studies (`SimulationConfig.fast`, MNI maps only, "
        f"{_value(results, 'resolution')} mm grid, seed {_value(results, 'seed')}); group "
        f"level: `{_value(results, 'preset')}` model predicting "
        f"`{_value(results, 'prediction_type')}`, {_value(results, 'steps')} steps of batch "
        f"{_value(results, 'batch_size')}, {_value(results, 'n_synthetic')} synthetic images "
        f"(balanced over diagnosis) with {_value(results, 'sampling_steps')} DDIM steps at "
        f"guidance scale {_value(results, 'cfg_scale')}, GM probability, contrast diagnosis, "
        "confounds age and sex; reference map = the planted GM diagnosis effect. Modes: "
        "`scratch` = trained from scratch on the site; `finetune` = fine-tuned from the "
        "population checkpoint below, adding the diagnosis embedder (learning rates, from "
        f"the models' provenance: {_by_mode(results, 'lr')}).", "",
    ]
    if pretrain is not None:
        lines += [
            f"Population checkpoint: `genbrain simulate --population` with {population['n']} "
            f"healthy participants (18-90 years, both sexes, 4 sites; "
            f"{population['seconds'] / 60:.1f} min), `genbrain pretrain` of "
            f"`{pretrain['preset']}` (`{pretrain['prediction_type']}`) on "
            f"{pretrain['n_images']} images ({', '.join(pretrain['modalities'])}; modality "
            f"index as a condition, age and sex), {pretrain['steps']} steps of batch "
            f"{pretrain['batch_size']} ({pretrain['seconds'] / 60:.1f} min), final loss "
            f"{pretrain['final_loss']:.4f}.", ""]
    lines += [
        "Intervals: 95 % normal bootstrap (Fisher z for r), 200 draws: the real map's over "
        "the site's participants (within each group), the synthetic map's over the synthetic "
        "images kept by the privacy gate (the sampling of the synthetic cohort only, not the "
        "training of the model).", "",
        f"Sign: d = {direction} (statmap sidecar `Levels`); the truth is "
        f"\"{results['truth_description'].iloc[0]}\", negative in the planted regions. "
        "Agreement means r > 0 and a negative mean d in the regions.", "",
        *([note, ""] if note else []),
        "| N (CN/patient) | mode | map | r | Dice d>0 | Dice d<0 | Dice micro | Dice top 20 % "
        "| mean d in regions | mean d elsewhere |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results.itertuples(index=False):
        cells = [_fmt(getattr(row, m), getattr(row, f"{m}_ci_low"),
                      getattr(row, f"{m}_ci_high")) for m in METRICS]
        lines.append(f"| {row.n} ({row.n_CN}/{row.n_patient}) | {row.mode} | {row.map} | "
                     + " | ".join(cells)
                     + f" | {row.mean_d_region:.3f} | {row.mean_d_outside:.3f} |")
    lines += ["", "## The GenBrain claim: does the synthetic map beat the real site map?", ""]
    for (n, mode), part in results.groupby(["n", "mode"], sort=False):
        real = part[part["map"] == "real"].iloc[0]
        synth = part[part["map"] == "synthetic"].iloc[0]
        verdict = []
        for metric in ("r", "dice_top"):
            s, r = synth[metric], real[metric]
            beyond = (" (above the real CI)" if s > real[f"{metric}_ci_high"] else
                      " (below the real CI)" if s < real[f"{metric}_ci_low"] else
                      " (inside the real CI)")
            verdict.append(f"{metric} {s:.3f} vs {r:.3f}: {'yes' if s > r else 'no'}{beyond}")
        lines.append(f"* N = {n}, {mode}: " + "; ".join(verdict))
    lines += ["", "| N | mode | r synthetic d vs real d | region d synthetic / real "
              "| synthetic kept | median max r synthetic vs training | final loss "
              "| group level s |",
              "|---|---|---|---|---|---|---|---|"]
    for row in results[results["map"] == "synthetic"].itertuples(index=False):
        lines.append(f"| {row.n} | {row.mode} | {row.synthetic_real_d_r:.3f} "
                     f"| {row.region_d_synthetic_over_real:.2f} "
                     f"| {row.n_synthetic_kept} | {row.synthetic_median_max_r:.3f} "
                     f"| {row.final_loss:.4f} | {row.group_s} |")
    return "\n".join(lines) + "\n"


def stage_report(args: argparse.Namespace) -> str:
    """Tables of the cells run so far (the report names the ones not run) -> ``--out``."""
    rows, missing = [], []
    for n in args.sizes:
        for mode in args.modes:
            cell = _done(args.work / f"n{n}" / f"{mode}.json")
            if cell is None:
                missing.append(f"N = {n} {mode}")
            else:
                rows += cell
    if not rows:
        raise SystemExit("no cell run yet (--stage group)")
    results = pd.DataFrame(rows)
    pretrain = (_pretrain_info(args.work / "population_model")
                if "finetune" in args.modes else None)
    population = _done(args.work / "population.json")
    name = f"bench_bwas_truth_{args.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{name}.tsv",
                      results.drop(columns=["truth_description", "requested"])
                      .to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.4f"))
    note = " ".join([args.note] + ([f"Not run: {', '.join(missing)}."] if missing else []))
    report = markdown(results, args, pretrain, population, note.strip())
    atomic_write_text(args.out / f"{name}.md", report)
    return report


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="Folder for every stage's data and results (kept; stages done "
                             "are skipped).")
    parser.add_argument("--stage", nargs="+", default=["population", "pretrain", "group",
                                                       "report"],
                        choices=["population", "pretrain", "group", "report"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--resolution", type=float, default=8.0,
                        help="MNI grid (mm) of the simulated maps and the models.")
    parser.add_argument("--preset", default=DEMO_PRESET,
                        help="Preset of the scratch models and of the population checkpoint.")
    parser.add_argument("--prediction-type", default=DEMO_PREDICTION,
                        help="Training target of the scratch models and of the population "
                             "checkpoint (fine-tuning keeps the checkpoint's).")
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None,
                        help="Group-level learning rate (default: the CLI's, by mode).")
    parser.add_argument("--cfg-scale", type=float, default=config_default("cfg_scale"))
    parser.add_argument("--n-synthetic", type=int, default=100)
    parser.add_argument("--sampling-steps", type=int, default=15)
    parser.add_argument("--population", type=int, default=1000,
                        help="Participants of the simulated population.")
    parser.add_argument("--pretrain-steps", type=int, default=12000)
    parser.add_argument("--pretrain-batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", default="GM", help="Results are bench_bwas_truth_NAME.*")
    parser.add_argument("--note", default="", help="A line on the run (machine, load).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.work = args.work.resolve()
    if "population" in args.stage and "finetune" in args.modes:
        info = stage_population(args)
        CONSOLE.print(f"population: {info['n']} participants ({info['seconds']} s)")
    if "pretrain" in args.stage and "finetune" in args.modes:
        info = stage_pretrain(args)
        CONSOLE.print(f"population checkpoint: {info['steps']} steps, loss "
                      f"{info['final_loss']:.4f}")
    if "group" in args.stage:
        for n in args.sizes:
            for mode in args.modes:
                with CONSOLE.status(f"N={n} {mode}: group level"):
                    rows = run_cell(n, mode, args)
                CONSOLE.print(f"N={n} {mode}: r real {rows[0]['r']:.3f}, synthetic "
                              f"{rows[1]['r']:.3f}, synthetic vs real "
                              f"{rows[1]['synthetic_real_d_r']:.3f} ({rows[0]['group_s']} s)")
    if "report" in args.stage:
        print(stage_report(args))


if __name__ == "__main__":
    main()
