"""Benchmark: why is a synthetic cohort's d smaller than the real one's?

Cohen's d is a mean difference over a residual SD. A model can shrink d by missing the mean
difference (the condition is not learned) or by inflating the SD (noisy samples: each sample
carries sampling error on top of the cohort's biological variance). This benchmark takes a
model trained by ``bench_conditioning.py`` on a simulated site (planted diagnosis effect) and,
for a balanced synthetic cohort sampled at each setting (CFG scale, DDIM steps, K-sample
averaging), compares with the real cohort:

* ``effect_ratio``: mean synthetic / real adjusted mean difference (GLM ``effect``,
  patient - CN, confounds age and sex) in the planted regions;
* ``sigma_ratio``: median over brain voxels (and ``sigma_ratio_region`` in the planted
  regions) of the synthetic / real residual SD;
* ``d_ratio``: synthetic / real mean d in the planted regions (= effect_ratio / sigma_ratio
  roughly);
* ``r_effect`` and ``r_d``: Pearson r of the synthetic and the real effect maps and d maps.

Usage::

    python benchmarks/bench_effect_size.py MODEL_DIR SITE_BIDS --out results.tsv \\
        --cfg 1 2 4 --steps 15 50 --average 1 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bids_genbrain.cohort import CohortStore
from bids_genbrain.model.checkpoint import load_checkpoint
from bids_genbrain.model.sampling import sample
from bids_genbrain.simulate import load_effect_map
from bids_genbrain.stats.compare import compare_maps
from bids_genbrain.stats.glm import fit_glm, make_design
from bids_genbrain.synthetic import balanced_conditions

CONDITIONS = ["age", "sex", "diagnosis"]


def _design(table: pd.DataFrame):
    plain = table[CONDITIONS].astype({"sex": str, "diagnosis": str})
    return make_design(plain, "diagnosis", ["age", "sex"])


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("store", type=Path, help="The site's cohort store (age, sex, diagnosis).")
    parser.add_argument("groundtruth", type=Path, help="The simulator's groundtruth folder.")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[15])
    parser.add_argument("--average", type=int, nargs="+", default=[1])
    parser.add_argument("--n-synthetic", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_checkpoint(args.model)
    store = CohortStore(args.store)
    mask = store.mask()
    table = store.table.astype({"sex": "category", "diagnosis": "category"})
    real = fit_glm(np.asarray(store.data, dtype=np.float64), _design(store.table))
    truth, _ = load_effect_map(args.groundtruth, "GM", "diagnosis", store.resolution)
    truth = truth[mask]
    region = truth <= 0.5 * truth.min()
    wanted = balanced_conditions(table, CONDITIONS, args.n_synthetic, contrast="diagnosis",
                                 seed=args.seed)
    rows = []
    for cfg, steps, average in itertools.product(args.cfg, args.steps, args.average):
        tic = time.perf_counter()
        images = np.empty((len(wanted), int(mask.sum())), dtype=np.float32)
        for i, img in sample(bundle, wanted, args.seed, steps=steps, cfg_scale=cfg,
                             average=average, batch_size=50):
            images[i] = np.asanyarray(img.dataobj)[mask]
        synth = fit_glm(images.astype(np.float64), _design(wanted))
        inside = real.sigma > 0
        row = {"model": args.model.name, "cfg": cfg, "steps": steps, "average": average,
               "n_synthetic": len(wanted),
               "effect_real": float(real.effect[region].mean()),
               "effect_synth": float(synth.effect[region].mean()),
               "effect_ratio": float(synth.effect[region].mean() / real.effect[region].mean()),
               "sigma_ratio": float(np.median(synth.sigma[inside] / real.sigma[inside])),
               "sigma_ratio_region": float(np.median(synth.sigma[region] / real.sigma[region])),
               "d_real": float(real.d[region].mean()), "d_synth": float(synth.d[region].mean()),
               "d_ratio": float(synth.d[region].mean() / real.d[region].mean()),
               "r_effect": compare_maps(synth.effect, real.effect)["r"],
               "r_d": compare_maps(synth.d, real.d)["r"],
               "r_effect_truth": compare_maps(synth.effect, truth)["r"],
               "r_real_effect_truth": compare_maps(real.effect, truth)["r"],
               "sample_s": round(time.perf_counter() - tic, 1)}
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in row.items()}), flush=True)
    out = pd.DataFrame(rows)
    if args.out.is_file():
        out = pd.concat([pd.read_csv(args.out, sep="\t"), out], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, sep="\t", index=False, float_format="%.5g")


if __name__ == "__main__":
    main()
