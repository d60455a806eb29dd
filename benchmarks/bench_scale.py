"""Benchmark: UK Biobank-sized cohorts on the 2 mm grid (228k voxels), streamed from disk.

Measures, each in its own process (so peak RSS is that step's alone):

``simulate``  (not timed) a cohort store of N images written directly on disk (no NIfTI):
              template GM + 4 smooth subject components + age and sex effects + a diagnosis
              effect in 10 % of the voxels + noise, clipped to [0, 1]; ``--dtype float16``
              (default) or ``float32``; a participants table (diagnosis, age, sex, 3 sites).
              With ``--privacy``: a synthetic store (10,000) and a training store (1,000)
              where ten synthetic images are noisy copies of training images.
``read``      one plain sequential read of the store's data file (the physical limit).
``bwas``      ``fit_glm`` on the store (diagnosis with age, sex, site): wall time, peak RSS,
              and the planted effect recovered (mean d inside vs outside its voxels).
``maps``      (not timed) N NIfTI maps for ``build`` (written once; ``build`` makes them too).
``build``     ``build_cohort`` from N NIfTI maps (written once, not timed) with 1 and 2
              reader processes: seconds per 1000 images, peak RSS of the parent (each worker
              holds one image at a time).
``privacy``   the privacy gate (``check_memorization``; ``memorization_table`` where that is
              absent) of the synthetic against the training store: wall time, peak RSS, and
              whether the planted copies are flagged, each with its source.
``report``    collects the JSON results into ``bench_scale.tsv`` / ``bench_scale.md``.

Before every timed pass the data files are evicted from the page cache
(``posix_fadvise(DONTNEED)``), so each pass reads from the disk as a first pass would.

Usage (timings with the machine otherwise idle: /work/team/exclusive)::

    export GENBRAIN_TEMPLATES=fallback R=/work/scratch/stress/scale
    python benchmarks/bench_scale.py simulate --root $R --n 44000
    python benchmarks/bench_scale.py simulate --root $R --privacy
    python benchmarks/bench_scale.py read --root $R
    python benchmarks/bench_scale.py bwas --root $R
    python benchmarks/bench_scale.py maps --root $R --n 1000      # not timed
    python benchmarks/bench_scale.py build --root $R --n 1000
    python benchmarks/bench_scale.py privacy --root $R
    python benchmarks/bench_scale.py report --root $R --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

RESOLUTION = 2.0


def _rss_mb() -> float:
    """Peak resident set of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _evict(path: Path) -> None:
    """Drop ``path`` from the page cache (the next read comes from the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _save(root: Path, name: str, record: dict[str, Any]) -> None:
    record = {"step": name, "host": platform.node(), "cpus": os.cpu_count(),
              "load_1min_at_start": record.pop("_load", None), **record}
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "results" / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from bids_genbrain.templates import brain_mask, get_template

    mask = brain_mask(RESOLUTION)
    gm = np.asarray(nb.load(get_template(RESOLUTION, suffix="probseg", label="GM")).dataobj,
                    dtype=np.float32)
    return mask, gm, gm[mask]


def _components(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` smooth spatial patterns (unit variance inside the mask), shape (k, n_voxels)."""
    out = []
    for _ in range(k):
        field = gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), 4.0)
        values = field[mask]
        out.append((values - values.mean()) / values.std())
    return np.stack(out)


def simulate_store(path: Path, n: int, dtype: str, seed: int, *,
                   copies_of: Path | None = None, n_copies: int = 0) -> pd.DataFrame:
    """Write a cohort store of ``n`` simulated images; return its table."""
    from bids_genbrain.cohort import DTYPES, STORE_VERSION
    from bids_genbrain.model.tokens import mask_sha256
    from bids_genbrain.templates import TEMPLATE, mni_grid
    from bids_genbrain.utils import allocate, atomic_dir, atomic_write_text

    rng = np.random.default_rng(seed)
    mask, _, gm = _template()
    n_vox = gm.size
    comps = _components(mask, 4, rng) * 0.03 * gm
    effect = np.zeros(n_vox, dtype=np.float32)
    effect[rng.permutation(n_vox)[: n_vox // 10]] = 1.0
    table = pd.DataFrame({
        "participant_id": [f"sub-{i + 1:06d}" for i in range(n)],
        "session_id": "n/a",
        "modality": "GMmod",
        "path": "simulated",
        "diagnosis": rng.choice(["CN", "patient"], n, p=[0.7, 0.3]),
        "age": rng.uniform(45, 82, n).round(1),
        "sex": rng.choice(["F", "M"], n),
        "site": rng.choice(["s1", "s2", "s3"], n),
    })
    copy_rows = rng.choice(n, size=n_copies, replace=False) if n_copies else np.array([], int)
    train = None
    if copies_of is not None:
        from bids_genbrain.cohort import CohortStore

        train = CohortStore(copies_of)
        table.loc[copy_rows, "copy_of"] = rng.choice(len(train), size=n_copies, replace=False)
    dt = np.dtype(dtype)
    block = 256
    with atomic_dir(path) as tmp:
        data = tmp / DTYPES[dtype]
        allocate(data, n * n_vox * dt.itemsize)
        fd = os.open(data, os.O_WRONLY)
        try:
            for a in range(0, n, block):
                rows = slice(a, min(a + block, n))
                k = rows.stop - rows.start
                sub = table.iloc[rows]
                values = rng.standard_normal((k, n_vox), dtype=np.float32)
                values *= 0.05
                values += gm
                values += rng.standard_normal((k, 4), dtype=np.float32) @ comps
                values -= (0.003 * (sub["age"].to_numpy() - 60)).astype(np.float32)[:, None] * gm
                values += (0.02 * (sub["sex"].to_numpy() == "M")).astype(np.float32)[:, None]
                values -= np.outer(sub["diagnosis"].to_numpy() == "patient",
                                   0.02 * effect).astype(np.float32)
                if train is not None:
                    for j in np.flatnonzero(sub.get("copy_of", pd.Series(dtype=float)).notna()):
                        src = int(sub["copy_of"].iloc[j])
                        values[j] = train.read([src])[0] + rng.normal(0, 0.005, n_vox)
                np.clip(values, 0.0, 1.0, out=values)
                os.pwrite(fd, values.astype(dt).tobytes(), rows.start * n_vox * dt.itemsize)
        finally:
            os.close(fd)
        table.to_csv(tmp / "table.tsv", sep="\t", index=False, na_rep="n/a")
        shape, affine = mni_grid(RESOLUTION)
        meta = {"version": STORE_VERSION, "space": TEMPLATE, "resolution": RESOLUTION,
                "shape": list(shape), "affine": affine.tolist(), "mask_sha256": mask_sha256(mask),
                "n_images": n, "n_voxels": n_vox, "dtype": dtype, "modalities": ["GMmod"],
                "normalisation": {"GMmod": {"lo": 0.0, "hi": 1.0, "method": "simulated"}},
                "conditions": [], "sources": ["bench_scale.py simulate"],
                "data_sha256": "not computed (simulated)"}
        atomic_write_text(tmp / "cohort.json", json.dumps(meta, indent=2) + "\n")
        np.save(tmp / "effect.npy", effect)
    return table


def cmd_simulate(args: argparse.Namespace) -> None:
    root = Path(args.root)
    t0 = time.perf_counter()
    if args.privacy:
        simulate_store(root / "training", args.n_training, args.dtype, args.seed + 1)
        simulate_store(root / "synthetic", args.n_synthetic, args.dtype, args.seed + 2,
                       copies_of=root / "training", n_copies=10)
        name = "simulate_privacy"
    else:
        simulate_store(root / "store", args.n, args.dtype, args.seed)
        name = "simulate"
    sizes = ({"n_synthetic": args.n_synthetic, "n_training": args.n_training} if args.privacy
             else {"n": args.n})
    _save(root, name, {**sizes, "dtype": args.dtype, "seconds": time.perf_counter() - t0})


def _data_file(store: Path) -> Path:
    meta = json.loads((store / "cohort.json").read_text())
    from bids_genbrain.cohort import DTYPES

    return store / DTYPES[meta["dtype"]]


def cmd_read(args: argparse.Namespace) -> None:
    root = Path(args.root)
    path = _data_file(root / "store")
    _evict(path)
    load = os.getloadavg()[0]
    buffer = bytearray(64 << 20)
    t0 = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while got := fh.readinto(buffer):
            total += got
    seconds = time.perf_counter() - t0
    _save(root, "read", {"_load": load, "bytes": total, "seconds": seconds,
                         "gb_per_s": total / 1e9 / seconds, "peak_rss_mb": _rss_mb()})


def cmd_bwas(args: argparse.Namespace) -> None:
    from bids_genbrain.cohort import CohortStore
    from bids_genbrain.stats.glm import fit_glm, make_design

    root = Path(args.root)
    store = CohortStore(root / "store")
    design = make_design(store.table, "diagnosis", ["age", "sex", "site"])
    _evict(_data_file(store.path))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = fit_glm(store.data, design, n_jobs=args.n_jobs, progress=False)
    seconds = time.perf_counter() - t0
    effect = np.load(store.path / "effect.npy") > 0
    _save(root, "bwas", {
        "_load": load, "n": len(store), "n_voxels": store.data.shape[1],
        "dtype": str(store.data.dtype), "design": design.columns, "n_jobs": args.n_jobs,
        "seconds": seconds,
        "peak_rss_mb": _rss_mb(), "bytes": _data_file(store.path).stat().st_size,
        "mean_d_planted": float(result.d[effect].mean()),
        "mean_abs_d_elsewhere": float(np.abs(result.d[~effect]).mean()),
    })


def _write_maps(folder: Path, n: int, seed: int) -> pd.DataFrame:
    from bids_genbrain.derivatives import derivative_path, write_dataset_description, write_image
    from bids_genbrain.templates import mni_grid

    if (folder / "done").is_file():
        return pd.read_csv(folder / "participants.tsv", sep="\t")
    rng = np.random.default_rng(seed)
    mask, gm_img, _ = _template()
    _, affine = mni_grid(RESOLUTION)
    write_dataset_description(folder, name="bench_scale maps")
    ages = rng.uniform(45, 82, n).round(1)
    for i in range(n):
        vol = np.clip(gm_img + rng.normal(0, 0.05, gm_img.shape), 0, 1).astype(np.float32)
        vol[~mask] = 0
        ents = {"sub": f"{i + 1:05d}", "space": "MNI152NLin6Asym", "res": "2", "label": "GM",
                "desc": "modulated"}
        write_image(nb.Nifti1Image(vol, affine), derivative_path(folder, ents, "probseg"))
    table = pd.DataFrame({"participant_id": [f"sub-{i + 1:05d}" for i in range(n)],
                          "age": ages})
    table.to_csv(folder / "participants.tsv", sep="\t", index=False)
    (folder / "done").write_text("ok\n")
    return table


def cmd_maps(args: argparse.Namespace) -> None:
    root = Path(args.root)
    _write_maps(root / f"maps-{args.n}", args.n, args.seed)


def cmd_build(args: argparse.Namespace) -> None:
    import subprocess
    import sys

    root = Path(args.root)
    deriv = root / f"maps-{args.n}"
    _write_maps(deriv, args.n, args.seed)
    if args.n_jobs_one is not None:  # the measured child
        from bids_genbrain.cohort import build_cohort

        for path in deriv.rglob("*.nii.gz"):
            _evict(path)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        store = build_cohort([deriv], root / f"built-{args.n_jobs_one}", dtype=args.dtype,
                             n_jobs=args.n_jobs_one, progress=False)
        seconds = time.perf_counter() - t0
        _save(root, f"build_jobs{args.n_jobs_one}", {
            "_load": load, "n": len(store), "n_jobs": args.n_jobs_one, "dtype": args.dtype,
            "seconds": seconds, "seconds_per_1000": seconds / len(store) * 1000,
            "peak_rss_mb": _rss_mb(),
        })
        return
    for jobs in args.n_jobs:
        subprocess.run([sys.executable, __file__, "build", "--root", str(root), "--n",
                        str(args.n), "--dtype", args.dtype, "--n-jobs-one", str(jobs)],
                       check=True)


def cmd_privacy(args: argparse.Namespace) -> None:
    from bids_genbrain.cohort import CohortStore
    from bids_genbrain.evaluate import privacy

    root = Path(args.root)
    synthetic, training = CohortStore(root / "synthetic"), CohortStore(root / "training")
    for store in (synthetic, training):
        _evict(_data_file(store.path))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    training_ids = list(training.table["participant_id"])
    if hasattr(privacy, "check_memorization"):  # the group level's gate
        gate = "check_memorization (residual r and distance to closest record vs baseline)"
        table = privacy.check_memorization(synthetic.data, training.data,
                                           training_ids=training_ids, progress=False).table
        nearest_column = "dcr_training_id"
    else:
        gate = "memorization_table (raw Pearson r > 0.95)"
        table = privacy.memorization_table(synthetic.data, training.data,
                                           training_ids=training_ids, progress=False)
        nearest_column = "nearest_training_id"
    seconds = time.perf_counter() - t0
    planted = synthetic.table["copy_of"].notna().to_numpy()
    source = np.array([training_ids[int(i)] if i == i else None
                       for i in synthetic.table["copy_of"]], dtype=object)
    flagged = table["flagged"].to_numpy(dtype=bool)
    _save(root, "privacy", {
        "_load": load, "gate": gate, "n_synthetic": len(synthetic), "n_training": len(training),
        "dtype": str(synthetic.data.dtype), "seconds": seconds, "peak_rss_mb": _rss_mb(),
        "planted_copies": int(planted.sum()), "flagged": int(flagged.sum()),
        "flagged_planted": int(flagged[planted].sum()),
        "nearest_is_source": int(np.sum(table[nearest_column].to_numpy()[planted]
                                        == source[planted])),
    })


def cmd_report(args: argparse.Namespace) -> None:
    root, out = Path(args.root), Path(args.out)
    records = {p.stem: json.loads(p.read_text())
               for p in sorted((root / "results").glob("*.json"))}
    rows = []
    read, bwas = records.get("read"), records.get("bwas")
    if bwas:
        rows.append({
            "measure": f"BWAS fit_glm, N={bwas['n']}, {bwas['n_voxels']} voxels, "
                       f"{bwas['dtype']}",
            "seconds": bwas["seconds"], "peak_rss_mb": bwas["peak_rss_mb"],
            "note": f"{len(bwas['design'])} regressors, {bwas['n_jobs']} GLM thread(s); planted d "
                    f"{bwas['mean_d_planted']:.3f} vs mean abs d elsewhere "
                    f"{bwas['mean_abs_d_elsewhere']:.3f}"})
    if read:
        rows.append({
            "measure": f"plain sequential read of the same file ({read['bytes'] / 1e9:.1f} GB)",
            "seconds": read["seconds"], "peak_rss_mb": read["peak_rss_mb"],
            "note": f"{read['gb_per_s']:.2f} GB/s"})
    if read and bwas:
        rows.append({"measure": "ratio BWAS / plain read",
                     "seconds": bwas["seconds"] / read["seconds"], "peak_rss_mb": None,
                     "note": "1.0 = the disk's limit"})
    for name in sorted(k for k in records if k.startswith("build_jobs")):
        r = records[name]
        rows.append({
            "measure": f"cohort store build, {r['n']} NIfTI maps, {r['n_jobs']} reader(s), "
                       f"{r['dtype']}",
            "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
            "note": f"{r['seconds_per_1000']:.1f} s per 1000 images"})
    if "privacy" in records:
        r = records["privacy"]
        rows.append({
            "measure": f"privacy gate {r['n_synthetic']} synthetic x {r['n_training']} "
                       f"training, {r['dtype']}: {r['gate']}",
            "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
            "note": f"planted copies flagged {r['flagged_planted']}/{r['planted_copies']}, "
                    f"flagged in all {r['flagged']}, nearest = source "
                    f"{r['nearest_is_source']}/{r['planted_copies']}"})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench_scale.tsv", sep="\t", index=False, float_format="%.3f")
    loads = {k: v.get("load_1min_at_start") for k, v in records.items()
             if "load_1min_at_start" in v}
    lines = ["# bench_scale: UK Biobank-sized cohorts (2 mm grid, streamed from disk)", "",
             "`python benchmarks/bench_scale.py ...` (see its docstring); each step in its own "
             "process, data files evicted from the page cache before each timed pass. "
             f"Machine: {os.cpu_count()} cores; conditions: {args.conditions or 'not stated'}; "
             "1-min load average at the start of "
             "each step: " + ", ".join(f"{k} {v:.1f}" for k, v in loads.items() if v is not None)
             + ".", "", "| measure | seconds | peak RSS (MB) | note |", "|---|---|---|---|"]
    for row in rows:
        rss = "" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"
        lines.append(f"| {row['measure']} | {row['seconds']:.2f} | {rss} | {row['note']} |")
    (out / "bench_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("simulate", "read", "bwas", "maps", "build", "privacy", "report"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    sub.choices["simulate"].add_argument("--n", type=int, default=44000)
    sub.choices["simulate"].add_argument("--privacy", action="store_true")
    sub.choices["simulate"].add_argument("--n-synthetic", type=int, default=10000)
    sub.choices["simulate"].add_argument("--n-training", type=int, default=1000)
    sub.choices["maps"].add_argument("--n", type=int, default=1000)
    sub.choices["build"].add_argument("--n", type=int, default=1000)
    sub.choices["build"].add_argument("--n-jobs", type=int, nargs="+", default=[1, 2])
    sub.choices["build"].add_argument("--n-jobs-one", type=int, help=argparse.SUPPRESS)
    sub.choices["bwas"].add_argument("--n-jobs", type=int, default=2, help="GLM threads")
    sub.choices["report"].add_argument("--out", default="benchmarks/results")
    sub.choices["report"].add_argument(
        "--conditions", default="", help="how the timings were taken (load, exclusive slots)")
    args = parser.parse_args()
    {"simulate": cmd_simulate, "read": cmd_read, "bwas": cmd_bwas, "maps": cmd_maps,
     "build": cmd_build,
     "privacy": cmd_privacy, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
