"""Benchmark: chunked voxel-wise GLM (bids_genbrain.stats.glm) versus nilearn's SecondLevelModel.

Builds N synthetic modulated-GM-like maps on the MNI 2 mm grid (brain mask, ~228k voxels)
in an on-disk float32 memmap, then fits a 4-regressor design (diagnosis, age, sex,
intercept) and the diagnosis t contrast:

* ours: ``make_design`` + ``fit_glm`` streaming voxel chunks from the memmap;
* nilearn: ``SecondLevelModel(mask_img).fit(4D image, design_matrix)`` +
  ``compute_contrast(..., output_type="stat")`` on the same data given as an in-memory 4D
  image (its natural input; building that image is not timed).

Each is run once; wall time and peak traced memory (``tracemalloc``, numpy allocations
included; the memmap's page cache is not an allocation) are reported with the largest
absolute difference of the t maps, printed and written as TSV and Markdown. Optional
``--scaling N ...`` runs ours alone at larger N to show that its memory does not grow.

Usage::

    GENBRAIN_TEMPLATES=fallback python benchmarks/bench_glm.py --n 500 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd

from bids_genbrain.stats.glm import fit_glm, make_design
from bids_genbrain.templates import brain_mask, get_template, mni_grid


def make_cohort(path: Path, n: int, resolution: float, seed: int) -> tuple[np.memmap,
                                                                          pd.DataFrame]:
    """Write ``n`` masked GM-like maps with age and diagnosis effects to a memmap."""
    rng = np.random.default_rng(seed)
    mask = brain_mask(resolution)
    gm = np.asarray(nb.load(get_template(resolution, suffix="probseg", label="GM")).dataobj,
                    dtype=np.float32)[mask]
    table = pd.DataFrame({
        "diagnosis": rng.choice(["control", "patient"], n),
        "age": rng.uniform(20, 80, n).round(1),
        "sex": rng.choice(["F", "M"], n),
    })
    effect = np.zeros(gm.size, dtype=np.float32)
    effect[: gm.size // 10] = 0.03
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, gm.size))
    for a in range(0, n, 64):
        rows = slice(a, min(a + 64, n))
        block = gm + rng.normal(0, 0.08, (rows.stop - rows.start, gm.size)).astype(np.float32)
        block -= (0.002 * (table["age"].to_numpy()[rows] - 50))[:, None].astype(np.float32) * gm
        block += np.outer(table["diagnosis"].to_numpy()[rows] == "patient", effect)
        store[rows] = block
    store.flush()
    del store
    return np.load(path, mmap_mode="r"), table


def measure(func: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``func`` once: its result, wall seconds, peak traced MiB."""
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    out = func()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, seconds, peak


def run_nilearn(images: np.ndarray, design_matrix: pd.DataFrame, contrast: np.ndarray,
                resolution: float) -> tuple[np.ndarray, float, float]:
    """nilearn's SecondLevelModel on the same data as a 4D in-memory image."""
    from nilearn.glm.second_level import SecondLevelModel

    shape, affine = mni_grid(resolution)
    mask = brain_mask(resolution)
    data = np.zeros((*shape, images.shape[0]), dtype=np.float32)
    i, j, k = np.nonzero(mask)  # C order, as the masked voxel columns
    for a in range(0, images.shape[1], 32768):
        sl = slice(a, a + 32768)
        data[i[sl], j[sl], k[sl]] = images[:, sl].T
    img4d = nb.Nifti1Image(data, affine)
    mask_img = nb.Nifti1Image(mask.astype(np.uint8), affine)

    def fit() -> np.ndarray:
        model = SecondLevelModel(mask_img=mask_img, minimize_memory=True)
        model.fit(img4d, design_matrix=design_matrix)
        t_img = model.compute_contrast(contrast, second_level_stat_type="t",
                                       output_type="stat")
        return np.asarray(t_img.dataobj)[mask]

    return measure(fit)


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of ``frame`` (pandas' ``to_markdown`` needs tabulate, not installed)."""
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |",
             "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the benchmark and write ``bench_glm.tsv`` / ``bench_glm.md`` in ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of maps")
    parser.add_argument("--resolution", type=float, default=2.0, help="grid in mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the memmaps go (default: a temporary folder)")
    parser.add_argument("--scaling", type=int, nargs="*", default=[],
                        help="extra N for ours alone (memory growth)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        images, table = make_cohort(Path(tmp) / "cohort.npy", args.n, args.resolution,
                                    args.seed)
        print(f"cohort: {images.shape[0]} maps x {images.shape[1]} voxels "
              f"({images.nbytes / 2**20:.0f} MiB on disk)")
        design = make_design(table, "diagnosis", ["age", "sex"])
        assert design.matrix.shape[1] == 4
        ours, t_ours, mem_ours = measure(
            lambda: fit_glm(images, make_design(table, "diagnosis", ["age", "sex"])).t)
        print(f"bids_genbrain: {t_ours:.2f} s, peak {mem_ours:.0f} MiB")
        theirs, t_nl, mem_nl = run_nilearn(images, design.matrix, design.contrast,
                                           args.resolution)
        diff = float(np.max(np.abs(ours - theirs)))
        print(f"nilearn: {t_nl:.2f} s, peak {mem_nl:.0f} MiB; max |t diff| = {diff:.2e}")
        rows = [
            {"method": "bids_genbrain fit_glm (memmap, chunked)", "n_images": args.n,
             "seconds": t_ours, "peak_mib": mem_ours, "max_abs_t_diff": diff},
            {"method": "nilearn SecondLevelModel (4D in memory)", "n_images": args.n,
             "seconds": t_nl, "peak_mib": mem_nl, "max_abs_t_diff": 0.0},
        ]
        del images
        for n in args.scaling:
            big, big_table = make_cohort(Path(tmp) / f"cohort-{n}.npy", n, args.resolution,
                                         args.seed)
            _, sec, mem = measure(
                lambda: fit_glm(big, make_design(big_table, "diagnosis", ["age", "sex"])).t)
            print(f"bids_genbrain at N={n}: {sec:.2f} s, peak {mem:.0f} MiB")
            rows.append({"method": "bids_genbrain fit_glm (memmap, chunked)", "n_images": n,
                         "seconds": sec, "peak_mib": mem, "max_abs_t_diff": np.nan})
            del big
    result = pd.DataFrame(rows)
    result.insert(1, "n_voxels", int(brain_mask(args.resolution).sum()))
    result.insert(2, "n_regressors", 4)
    speedup = t_nl / t_ours
    print(f"speed-up: {speedup:.1f}x (target >= 20x); memory ratio {mem_nl / mem_ours:.1f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.out / "bench_glm.tsv", sep="\t", index=False, float_format="%.4g")
    (args.out / "bench_glm.md").write_text(
        f"# BWAS GLM benchmark (N = {args.n}, {args.resolution:g} mm grid, 4 regressors)\n\n"
        + markdown_table(result)
        + f"\n\nSpeed-up over nilearn: {speedup:.1f}x; peak memory ratio "
        f"{mem_nl / mem_ours:.1f}x; max |t difference| {diff:.2e}.\n")
    return result


if __name__ == "__main__":
    main()
