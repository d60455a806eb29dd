"""Seconds per subject and displacement error: fast vs accurate vs --sloppy vs a bare antspyx SyN.

On one synthetic T1w with a known scanner <-> MNI mapping (oblique, anisotropic, LPS; the
generator of the tests), this runs

1. the participant workflow with each preset (``fast``, the default: 2 mm template;
   ``accurate``: 1 mm template; ``sloppy``: SyN down to 4 mm),
2. a bare ``ants.registration(type_of_transform="SyN")`` of the bias-free native image to the
   1 mm template (no N4, no brain extraction, no segmentation),

and prints wall-clock and CPU seconds, their ratios to the bare call, and the mean /
95th-percentile distance (mm) between the recovered and the true mapping over template brain
voxels.

Results (benchmarks/results/bench_registration.tsv; 2 shared cores in a heavy slot, load average
2-4, one ITK thread; 1.5 x 1.5 x 1.8 mm oblique LPS T1w, 3 mm warp; 2 mm output grid; offline
template fallback)::

    method            seconds  cpu_seconds  mean_error_mm  p95_error_mm  seconds_vs_bare
    fast (default)      407.5        352.6          0.639         1.609             2.63
    bare antspyx SyN    154.8        148.4          1.178         2.784             1.00
    --sloppy            125.7        116.7          1.045         2.275             0.81

``accurate`` was not in that run (over half an hour); an earlier run measured it at 2054.6 s
and 0.510 mm (1.261 mm p95) with the bare call at 232.9 s on more loaded cores.

Usage::

    python benchmarks/bench_registration.py [--resolution 2] [--zooms 1.5 1.5 1.8]
        [--omp-nthreads 2] [--methods fast accurate sloppy bare] [--out bench_registration.tsv]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _anat_synth import displacement_error, make_native  # noqa: E402

from bids_genbrain.templates import get_template  # noqa: E402
from bids_genbrain.workflows.base import preprocess_participant  # noqa: E402


def _workflow(native: Path, root: Path, *, preset: str, resolution: float,
              omp_nthreads: int) -> tuple[float, float, Path]:
    start, cpu = time.monotonic(), time.process_time()
    res = preprocess_participant("bench", {None: {"T1w": [str(native)]}},
                                 output_dir=root / "out", work_dir=root / "work",
                                 sloppy=preset == "sloppy",
                                 registration="fast" if preset == "sloppy" else preset,
                                 resolution=resolution, omp_nthreads=omp_nthreads,
                                 plugin="Linear")[0]
    if not res.success:
        raise RuntimeError(res.reason)
    return time.monotonic() - start, time.process_time() - cpu, res.outputs["xfm_forward"]


def _bare_syn(native: Path, root: Path) -> tuple[float, float, str]:
    import ants

    start, cpu = time.monotonic(), time.process_time()
    reg = ants.registration(ants.image_read(str(get_template(1.0))), ants.image_read(str(native)),
                            type_of_transform="SyN", write_composite_transform=True,
                            outprefix=str(root / "bare_"))
    return time.monotonic() - start, time.process_time() - cpu, reg["fwdtransforms"]


METHODS = {"fast": "fast (default)", "accurate": "--registration accurate",
           "sloppy": "--sloppy", "bare": "bare antspyx SyN"}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the benchmark and print (and optionally save) its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--zooms", type=float, nargs=3, default=(1.5, 1.5, 1.8))
    parser.add_argument("--omp-nthreads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="what to time (accurate is the slowest)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.omp_nthreads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        native = root / "sub-bench_T1w.nii.gz"
        truth = make_native(native, zooms=tuple(args.zooms), seed=args.seed)
        for name in args.methods:
            folder = root / name
            folder.mkdir()
            if name == "bare":
                seconds, cpu, xfm = _bare_syn(native, folder)
            else:
                seconds, cpu, xfm = _workflow(native, folder, preset=name,
                                              resolution=args.resolution,
                                              omp_nthreads=args.omp_nthreads)
            err = displacement_error([xfm], truth, args.resolution, folder)
            rows.append({"method": METHODS[name], "seconds": round(seconds, 1),
                         "cpu_seconds": round(cpu, 1),
                         "mean_error_mm": round(float(err.mean()), 3),
                         "p95_error_mm": round(float(np.percentile(err, 95)), 3)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    bare = table[table["method"] == METHODS["bare"]]
    if len(bare):
        table["seconds_vs_bare"] = (table["seconds"] / float(bare["seconds"].iloc[0])).round(2)
        table["cpu_vs_bare"] = (table["cpu_seconds"] / float(bare["cpu_seconds"].iloc[0])).round(2)
    print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)
    return table


if __name__ == "__main__":
    main()
