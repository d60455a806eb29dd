"""Benchmark: simulator speed, and power of the default diagnosis effect at N = 100.

Timings (wall clock and process CPU time, one process, ``n_jobs`` subject threads):

* ``fast``: 20 subjects x T1w + FLAIR with the test preset (2-3 mm native voxels, 2 mm
  anatomy, 4 mm ground truth) -- the target "well under a minute on 2 cores";
* ``full``: a few subjects with the defaults (0.8-1.5 mm native voxels, 1 mm anatomy, 2 mm
  ground truth), reported per subject.

Power: N = 100 (native images skipped, ground truth on the 4 mm grid, default effects):
voxel-wise OLS of the true GM maps on diagnosis + age + sex; the median diagnosis t inside the
planted regions and the fraction of |t| > 3.5 elsewhere. Results are printed and written as
TSV and Markdown.

Usage::

    GENBRAIN_TEMPLATES=fallback python benchmarks/bench_simulate.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_genbrain.simulate import (SimulationConfig, load_effect_map, load_ground_truth,
                                    simulate_dataset)


def _timed(label: str, config: SimulationConfig, n_jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        result = simulate_dataset(Path(tmp) / "bids", config, n_jobs=n_jobs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        voxels = sum(int(np.prod(nb.load(p).shape))
                     for p in result.images["path"])
    return {"run": label, "subjects": config.n_subjects, "images": len(result.images),
            "n_jobs": n_jobs, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "native_voxels_per_image": voxels // max(len(result.images), 1)}


def _power(n: int, seed: int) -> dict:
    config = SimulationConfig.fast(n_subjects=n, modalities=("T1w",), native=False, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate_dataset(Path(tmp) / "bids", config, n_jobs=2)
        truths = [load_ground_truth(sim.groundtruth, p) for p in sim.table["participant_id"]]
        effect, _ = load_effect_map(sim.groundtruth, "GM", "diagnosis", 4.0)
    table = sim.table
    grey = truths[0].brain_mask & (np.mean([t.tissue["GM"] for t in truths], axis=0) > 0.2)
    y = np.stack([t.tissue["GM"][grey] for t in truths])
    design = np.column_stack([np.ones(n), table["diagnosis"] == "patient", table["age"],
                              table["sex"] == "M"]).astype(float)
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    var = (resid**2).sum(0) / (n - 4) * np.linalg.inv(design.T @ design)[1, 1]
    t = beta[1] / np.sqrt(var)
    region, elsewhere = (effect < 0.5 * effect.min())[grey], (effect == 0)[grey]
    return {"run": f"power N={n}", "subjects": n,
            "patients": int((table["diagnosis"] == "patient").sum()),
            "median_t_region": round(float(np.median(t[region])), 2),
            "min_t_region": round(float(t[region].min()), 2),
            "frac_abs_t_gt_3.5_elsewhere": round(float(np.mean(np.abs(t[elsewhere]) > 3.5)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--full-subjects", type=int, default=2)
    parser.add_argument("--power-n", type=int, default=100)
    args = parser.parse_args()
    fast = SimulationConfig.fast(n_subjects=20, n_sites=2, modalities=("T1w", "FLAIR"))
    rows = [_timed("fast 20x2", fast, 1), _timed("fast 20x2", fast, 2),
            _timed(f"full {args.full_subjects}x2",
                   SimulationConfig(n_subjects=args.full_subjects, n_sites=1), 1)]
    timing = pd.DataFrame(rows)
    power = pd.DataFrame([_power(args.power_n, seed) for seed in (1, 2)])
    print(timing.to_string(index=False))
    print(power.to_string(index=False))
    args.out.mkdir(parents=True, exist_ok=True)
    timing.to_csv(args.out / "bench_simulate_timing.tsv", sep="\t", index=False)
    power.to_csv(args.out / "bench_simulate_power.tsv", sep="\t", index=False)
    (args.out / "bench_simulate.md").write_text(
        "# genbrain simulate\n\n" + _markdown(timing) + "\n" + _markdown(power))


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
