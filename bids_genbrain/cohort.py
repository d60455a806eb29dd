"""Derivatives -> an on-disk cohort store the model trains from.

A store is a folder::

    data.f32      row-major array, shape (n_images, n_voxels), float32 (``data.f16``: float16,
                  half the disk for UK Biobank-sized cohorts): brain-mask voxels (mask order)
                  of every image, normalised to [0, 1] per modality
    table.tsv     one row per image: participant_id, session_id, modality, source path,
                  the condition columns, and ``<condition>_flag`` where a value was censored
                  (``89+``) or a range (``26-30``)
    cohort.json   grid (resolution, shape, affine, mask sha256), storage dtype, modalities,
                  normalisation (per modality ``lo``/``hi``: stored = clip((raw - lo) /
                  (hi - lo), 0, 1)), condition specs, sources, the sha256 of the data file
                  and the fingerprint of its inputs (``inputs_sha256``: files, sizes, mtimes,
                  rows, specs, grid), by which ``build_cohort(..., reuse=True)`` keeps an
                  up-to-date store

Images are found by the output naming contract
(``sub-<l>[_ses-<s>]_space-MNI152NLin6Asym_res-<r>_..._<suffix>.nii[.gz]``) with a
glob and pybids' entity parser (no layout database: fast on large derivative trees).
Modalities by name (:func:`bids_genbrain.derivatives.modality_entities`, from the naming
table): ``T1w``, ``T2w``, ``FLAIR`` (``desc-preproc``), ``GM`` (``label-GM_probseg``),
``GMmod`` (``label-GM_desc-modulated_probseg``, VBM), and any other map by its ``desc``
(``FA`` -> ``desc-FA_dwimap``) or suffix. Images on another grid are
resampled to the requested one (with a warning).

Building reads the images with parallel workers (``n_jobs`` processes), each writing its rows
straight into the file, so memory stays at a few images per worker whatever N; the file is
reserved on disk first (a full disk fails at once), then normalised in one streaming pass.
The folder appears under its final name only when complete. Readers (training batches, BWAS,
the privacy gate) read rows with ``pread`` (:mod:`bids_genbrain.arrays`), so a cohort larger
than memory works and never inflates the reading process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import warnings
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nb
import numpy as np
import pandas as pd

from .arrays import iter_row_blocks
from .derivatives import TEMPLATE, modality_entities
from .errors import InputError
from .model.tokens import mask_sha256
from .templates import brain_mask, mni_grid
from .utils import allocate, atomic_dir, atomic_path, atomic_write_text

if TYPE_CHECKING:  # torch is imported where conditions are encoded, not by reader workers
    import torch

    from .model.conditions import ConditionSpec

LOGGER = logging.getLogger(__name__)

STORE_VERSION = 2
DTYPES = {"float32": "data.f32", "float16": "data.f16"}
"""Storage dtypes and their data file names."""
PERCENTILES = (0.5, 99.5)
"""Robust range of an intensity modality: medians over images of these in-mask percentiles."""

_SKIP_SUFFIXES = {"mask", "xfm", "dseg"}


class CohortError(InputError):
    """A cohort cannot be built or opened (no images, bad grid, unknown modality)."""


def _matches(ents: dict[str, Any], query: dict[str, str | None], name: str) -> bool:
    if ents.get("suffix") in _SKIP_SUFFIXES:
        return False
    if query["suffix"] == "*":  # a generic map: its desc or its suffix is the name
        return ents.get("desc") == name or (ents.get("suffix") == name and not ents.get("label"))
    return all(ents.get(k) == v for k, v in query.items())


def find_images(roots: Sequence[Path | str], modality: str, resolution: float) -> pd.DataFrame:
    """MNI-space images of one modality under derivatives roots.

    Parameters
    ----------
    roots : sequence of path-like
        Derivatives datasets (participant-level outputs, fMRIPrep ...).
    modality : str
        See :func:`modality_entities`.
    resolution : float
        Wanted grid; where a subject/session has several ``res-`` versions, this one is used.

    Returns
    -------
    pandas.DataFrame
        Columns ``participant_id`` (``sub-<l>``), ``session_id`` (``ses-<s>`` or None),
        ``modality``, ``path``; sorted.
    """
    from bids.layout import parse_file_entities

    query = modality_entities(modality)
    want_res = f"{resolution:g}"
    chosen: dict[tuple, tuple[bool, Path]] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise CohortError(f"{root}: derivatives folder not found")
        for path in sorted(root.glob(f"sub-*/**/sub-*_space-{TEMPLATE}_*.nii*")):
            ents = parse_file_entities(str(path))
            if not _matches(ents, query, modality):
                continue
            key_ents = {k: v for k, v in ents.items() if k not in ("res", "extension")}
            key = tuple(sorted((k, str(v)) for k, v in key_ents.items()))
            exact = str(ents.get("res")) == want_res
            if key not in chosen or (exact and not chosen[key][0]):
                chosen[key] = (exact, path)
    rows = []
    for key, (_, path) in chosen.items():
        ents = dict(key)
        rows.append({
            "participant_id": f"sub-{ents['subject']}",
            "session_id": f"ses-{ents['session']}" if "session" in ents else None,
            "modality": modality,
            "path": str(path),
        })
    table = pd.DataFrame(rows, columns=["participant_id", "session_id", "modality", "path"])
    return table.sort_values(["participant_id", "session_id", "path"],
                             na_position="first").reset_index(drop=True)


def _load_on_grid(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    img = nb.load(path)
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if img.ndim != 3:
        raise CohortError(f"{path}: expected a 3D image, got shape {img.shape}")
    if img.shape != shape or not np.allclose(img.affine, affine, atol=1e-3):
        from nilearn.image import resample_img

        warnings.warn(f"{path.name}: grid {img.shape} differs from the model grid {shape}; "
                      "resampling (linear)", stacklevel=3)
        img = resample_img(img, target_affine=affine, target_shape=shape,
                           interpolation="continuous", force_resample=True, copy_header=True)
    return np.asanyarray(img.dataobj, dtype=np.float32)


def image_values(path: Path | str, resolution: float) -> np.ndarray:
    """Brain-mask voxels (mask order, original units) of an MNI-space image on a model grid.

    Parameters
    ----------
    path : path-like
        A 3D image in MNI152NLin6Asym space (resampled, with a warning, when on another grid).
    resolution : float
        Model grid (mm).

    Returns
    -------
    ndarray of float32, shape (n_voxels,)

    Raises
    ------
    CohortError
        Not 3D, or non-finite values inside the brain mask.
    """
    shape, affine = mni_grid(resolution)
    return _grid_values(Path(path), shape, affine, brain_mask(resolution))


def _grid_values(path: Path, shape: tuple[int, ...], affine: np.ndarray,
                 mask: np.ndarray) -> np.ndarray:
    values = _load_on_grid(path, shape, affine)[mask]
    if not np.all(np.isfinite(values)):
        raise CohortError(f"{path}: non-finite values inside the brain mask")
    return values


def _match_conditions(images: pd.DataFrame, participants: pd.DataFrame | None,
                      conditions: Sequence[str]) -> pd.DataFrame:
    """Attach condition columns (typed as in ``participants``) to the image rows."""
    if not conditions:
        return images
    if participants is None:
        raise CohortError(f"conditions {list(conditions)} need a participants table")
    missing = [c for c in conditions if c not in participants.columns]
    if missing:
        raise CohortError(f"conditions {missing} are not columns of the participants table "
                          f"(columns: {[c for c in participants.columns]})")
    table = participants.copy()
    if "participant_id" not in table.columns:
        raise CohortError("the participants table needs a participant_id column")
    table["participant_id"] = ["sub-" + str(p).strip().removeprefix("sub-")
                               for p in table["participant_id"]]
    keys = ["participant_id"]
    if "session_id" in table.columns and images["session_id"].notna().any():
        table["session_id"] = ["ses-" + str(s).strip().removeprefix("ses-")
                               for s in table["session_id"]]
        keys.append("session_id")
    dup = table[keys].duplicated()
    if dup.any():
        raise CohortError(f"the participants table has several rows for "
                          f"{table.loc[dup, keys].iloc[0].tolist()}; give one row per "
                          f"{' and '.join(keys)}")
    flags = [f"{c}_flag" for c in conditions if f"{c}_flag" in table.columns]
    merged = images.merge(table[keys + list(conditions) + flags], on=keys, how="left")
    unmatched = merged.loc[merged[list(conditions)].isna().all(axis=1), "participant_id"]
    if len(unmatched):
        LOGGER.warning("%d image(s) have no conditions in the participants table (e.g. %s); "
                       "they train as unconditional", len(unmatched), unmatched.iloc[0])
    return merged


def build_cohort(
    roots: Sequence[Path | str],
    out: Path | str,
    *,
    modalities: Sequence[str] = ("GMmod",),
    participants: pd.DataFrame | None = None,
    conditions: Sequence[str] = (),
    resolution: float = 2.0,
    cfg_dropout: float = 0.1,
    dtype: str = "float32",
    n_jobs: int = 1,
    progress: bool = True,
    reuse: bool = False,
    participant_ids: Collection[str] | None = None,
) -> CohortStore:
    """Collect derivatives into a cohort store (written atomically as a folder).

    Parameters
    ----------
    roots : sequence of path-like
        Derivatives datasets.
    out : path-like
        Store folder to create (replaced if it exists).
    modalities : sequence of str
        Modalities to include (:func:`modality_entities`); one store can hold several.
    participants : pandas.DataFrame, optional
        Typed participants table (``participant_id`` [+ ``session_id``] and condition columns),
        e.g. :func:`bids_genbrain.bids.read_participants`. A condition's ``<name>_flag``
        column (``censored``/``range`` values, :mod:`bids_genbrain.covariates`) is carried
        into the store's table.
    conditions : sequence of str
        Columns of ``participants`` to condition on (``age``, ``sex`` ...).
    resolution : float
        Model grid in mm (2 = paper).
    cfg_dropout : float
        CFG dropout rate recorded in each condition's spec.
    dtype : {"float32", "float16"}
        Storage of the normalised values (float16: half the disk and the reading time;
        values in [0, 1] keep about 3 significant digits).
    n_jobs : int
        Processes reading images in parallel (the result does not depend on it).
    progress : bool
        Show a progress bar.
    reuse : bool
        Return the store already in ``out`` when it was built from the same inputs (the same
        image files, by path, size and modification time, the same participants rows,
        modalities, conditions, grid and dtype; recorded as ``inputs_sha256``) instead of
        reading every image again: a resumed or relaunched training run on a large population
        starts at once.
    participant_ids : collection of str, optional
        Keep only these participants' images (``sub-<label>``; default all).

    Returns
    -------
    CohortStore

    Raises
    ------
    CohortError
        No image found, or conditions that the table does not have.
    OSError
        ``ENOSPC`` when the disk cannot hold the store (raised before any image is read).
    """
    from .model.conditions import ConditionSpec, infer_spec

    if not modalities:
        raise CohortError("give at least one modality")
    if dtype not in DTYPES:
        raise CohortError(f"storage dtype {dtype!r} unknown; use one of {list(DTYPES)}")
    reserved = sorted(set(conditions) & {"participant_id", "session_id", "modality", "path"})
    if reserved:
        raise CohortError(f"{reserved} cannot be conditions (reserved store columns)")
    frames = [find_images(roots, m, resolution) for m in modalities]
    for m, f in zip(modalities, frames, strict=True):
        if f.empty:
            raise CohortError(
                f"no {m} images on the {TEMPLATE} grid under {[str(r) for r in roots]} "
                f"(looked for sub-*_space-{TEMPLATE}_res-*_{_describe(m)})"
            )
    images = pd.concat(frames, ignore_index=True)
    if participant_ids is not None:
        images = images[images["participant_id"].isin(set(participant_ids))]
        if images.empty:
            raise CohortError(f"none of the selected participants has {'/'.join(modalities)} "
                              "images (see --participant-label, --exclude-participants)")
        images = images.reset_index(drop=True)
    table = _match_conditions(images, participants, conditions)
    specs = [infer_spec(c, table[c], dropout=cfg_dropout) for c in conditions]
    specs.append(ConditionSpec("modality", "categorical", levels=list(modalities), dropout=0.0))
    signature = _inputs_sha256(table, specs, resolution, dtype)
    if reuse and (Path(out) / "cohort.json").is_file():
        previous = json.loads((Path(out) / "cohort.json").read_text(encoding="utf-8"))
        if previous.get("version") == STORE_VERSION and previous.get(
                "inputs_sha256") == signature:
            LOGGER.info("cohort store %s is up to date (%d images); reusing it", out,
                        previous["n_images"])
            return CohortStore(out)

    mask = brain_mask(resolution)
    shape, affine = mni_grid(resolution)
    n_images, n_vox = len(table), int(mask.sum())
    with atomic_dir(out) as tmp:
        raw = tmp / "raw.f32"
        allocate(raw, n_images * n_vox * 4)
        bounds = _read_images(list(table["path"]), raw, mask, shape, affine, n_jobs, progress)
        norm = _normalisation(table["modality"].to_numpy(), bounds, modalities)
        for m in modalities:  # how the modality's files are named, for writing samples back
            first = table.loc[table["modality"] == m, "path"].iloc[0]
            norm[m]["entities"] = _naming_entities(Path(first))
        data = tmp / DTYPES[dtype]
        digest = _normalise_into(raw, data, (n_images, n_vox), table["modality"].to_numpy(),
                                 norm, np.dtype(dtype))
        table.to_csv(tmp / "table.tsv", sep="\t", index=False, na_rep="n/a")
        meta = {
            "version": STORE_VERSION,
            "space": TEMPLATE,
            "resolution": float(resolution),
            "shape": list(shape),
            "affine": affine.tolist(),
            "mask_sha256": mask_sha256(mask),
            "n_images": n_images,
            "n_voxels": n_vox,
            "dtype": dtype,
            "modalities": list(modalities),
            "normalisation": norm,
            "conditions": [s.to_dict() for s in specs],
            "sources": [str(Path(r).resolve()) for r in roots],
            "data_sha256": digest,
            "inputs_sha256": signature,
        }
        atomic_write_text(tmp / "cohort.json", json.dumps(meta, indent=2) + "\n")
    return CohortStore(out)


def _inputs_sha256(table: pd.DataFrame, specs: Sequence[Any], resolution: float,
                   dtype: str) -> str:
    """Fingerprint of what a store is built from: image rows, their files' size and mtime,
    the condition specs, the grid and the storage dtype."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": STORE_VERSION, "resolution": float(resolution),
                              "dtype": dtype, "specs": [s.to_dict() for s in specs]},
                             sort_keys=True, default=str).encode())
    digest.update(table.to_csv(sep="\t", index=False, na_rep="n/a").encode())
    for path in table["path"]:
        stat = os.stat(path)
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


_WORKER: dict[str, Any] = {}
"""What a reader process holds: the open data file, the grid and the mask."""


def _init_reader(raw: str, mask: np.ndarray, shape: tuple[int, ...], affine: np.ndarray) -> None:
    _WORKER.update(fd=os.open(raw, os.O_WRONLY), mask=mask, shape=shape, affine=affine)


def _read_one(task: tuple[int, str]) -> tuple[int, np.ndarray]:
    """Read image ``i`` into row ``i`` of the raw file; return its robust range."""
    i, path = task
    values = _grid_values(Path(path), _WORKER["shape"], _WORKER["affine"], _WORKER["mask"])
    payload = memoryview(np.ascontiguousarray(values, dtype=np.float32)).cast("B")
    offset, done = i * payload.nbytes, 0
    while done < payload.nbytes:
        done += os.pwrite(_WORKER["fd"], payload[done:], offset + done)
    return i, np.percentile(values, PERCENTILES)


def _read_images(paths: list[str], raw: Path, mask: np.ndarray, shape: tuple[int, ...],
                 affine: np.ndarray, n_jobs: int, progress: bool) -> np.ndarray:
    """Read every image into its row of ``raw`` (float32); return per-image percentiles."""
    bounds = np.zeros((len(paths), 2))
    tasks = list(enumerate(paths))
    n_jobs = max(1, min(int(n_jobs), len(paths) // 16))  # a worker costs an import: >= 16 each
    if n_jobs == 1:
        _init_reader(str(raw), mask, shape, affine)
        try:
            for i, b in _progress(map(_read_one, tasks), progress, "Reading images", len(tasks)):
                bounds[i] = b
        finally:
            os.close(_WORKER.pop("fd"))
        return bounds
    # forkserver: workers never inherit a parent's threads (torch, ITK) or locks
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(n_jobs, mp_context=context, initializer=_init_reader,
                             initargs=(str(raw), mask, shape, affine)) as pool:
        results = pool.map(_read_one, tasks, chunksize=8)
        for i, b in _progress(results, progress, "Reading images", len(tasks)):
            bounds[i] = b
    return bounds


def _normalisation(modality: np.ndarray, bounds: np.ndarray,
                   modalities: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The [0, 1] mapping of every modality (fixed for probabilities, robust range else)."""
    norm: dict[str, dict[str, Any]] = {}
    for m in modalities:
        rows = np.flatnonzero(modality == m)
        q = modality_entities(m)
        if q["suffix"] == "probseg" and q["desc"] is None:
            norm[m] = {"lo": 0.0, "hi": 1.0, "method": "probability"}
            continue
        lo, hi = float(np.median(bounds[rows, 0])), float(np.median(bounds[rows, 1]))
        if hi <= lo:
            raise CohortError(f"modality {m}: images are constant inside the mask")
        norm[m] = {"lo": lo, "hi": hi,
                   "method": f"robust percentiles {PERCENTILES[0]}-{PERCENTILES[1]}"}
    return norm


def _normalise_into(raw: Path, data: Path, shape: tuple[int, int], modality: np.ndarray,
                    norm: dict[str, dict[str, Any]], dtype: np.dtype) -> str:
    """Stream ``raw`` (float32) into ``data`` (``dtype``), normalised; return its sha256.

    float32 is normalised in place (``raw`` becomes ``data``): no second copy on disk.
    """
    source = np.memmap(raw, dtype=np.float32, mode="r", shape=shape)
    digest = hashlib.sha256()
    lo = np.array([norm[m]["lo"] for m in modality], dtype=np.float64)
    span = np.array([norm[m]["hi"] - norm[m]["lo"] for m in modality], dtype=np.float64)
    in_place = dtype == np.float32
    target = raw if in_place else data
    if not in_place:
        allocate(data, shape[0] * shape[1] * dtype.itemsize)
    fd = os.open(target, os.O_WRONLY)
    try:
        row_bytes = shape[1] * dtype.itemsize
        for positions, block in iter_row_blocks(source, block_mb=32.0):
            values = (block - lo[positions, None]) / span[positions, None]
            payload = np.clip(values, 0.0, 1.0).astype(dtype).tobytes()
            digest.update(payload)
            offset, done = int(positions[0]) * row_bytes, 0
            while done < len(payload):
                done += os.pwrite(fd, payload[done:], offset + done)
    finally:
        os.close(fd)
    del source
    if in_place:
        os.replace(raw, data)
    else:
        raw.unlink()
    return digest.hexdigest()


def _naming_entities(path: Path) -> dict[str, str | None]:
    from bids.layout import parse_file_entities

    ents = parse_file_entities(str(path))
    return {"suffix": ents["suffix"], "desc": ents.get("desc"), "label": ents.get("label")}


def _describe(modality: str) -> str:
    q = modality_entities(modality)
    parts = [f"label-{q['label']}" if q["label"] not in (None, "*") else "",
             f"desc-{q['desc']}" if q["desc"] else "", q["suffix"] if q["suffix"] != "*" else "*"]
    return "_".join(p for p in parts if p) + ".nii.gz"


def _progress(items: Iterable[Any], enabled: bool, label: str,
              total: int | None = None) -> Iterable[Any]:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=label, transient=True, total=total)


class CohortStore:
    """An opened cohort store (read-only memmap, table, metadata).

    Parameters
    ----------
    path : path-like
        Store folder written by :func:`build_cohort`.

    Attributes
    ----------
    data : numpy.memmap, shape (n_images, n_voxels)
        float32 or float16 (``meta["dtype"]``); stream it with
        :func:`bids_genbrain.arrays.iter_row_blocks` (or pass it to the GLM / privacy gate,
        which do) rather than indexing it, which maps its pages into the process.
    table : pandas.DataFrame
    meta : dict
    conditions : list of ConditionSpec
    """

    def __init__(self, path: Path | str) -> None:
        from .model.conditions import ConditionSpec

        self.path = Path(path)
        meta_path = self.path / "cohort.json"
        if not meta_path.is_file():
            raise CohortError(f"{self.path}: not a cohort store (no cohort.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("version") not in (1, STORE_VERSION):
            raise CohortError(f"{self.path}: store version {self.meta.get('version')} is not "
                              f"{STORE_VERSION}; rebuild it")
        dtype = self.meta.get("dtype", "float32")  # version 1: float32 only
        self.data = np.memmap(self.path / DTYPES[dtype], dtype=dtype, mode="r",
                              shape=(self.meta["n_images"], self.meta["n_voxels"]))
        self.table = pd.read_csv(self.path / "table.tsv", sep="\t", na_values=["n/a"],
                                 keep_default_na=False, dtype={"session_id": object})
        self.conditions = [ConditionSpec.from_dict(c) for c in self.meta["conditions"]]

    def __len__(self) -> int:
        return int(self.meta["n_images"])

    @property
    def resolution(self) -> float:
        """Grid spacing in mm."""
        return float(self.meta["resolution"])

    @property
    def modalities(self) -> list[str]:
        """Modality names (levels of the ``modality`` condition)."""
        return list(self.meta["modalities"])

    @property
    def normalisation(self) -> dict[str, dict[str, Any]]:
        """Per modality ``lo``/``hi`` of the [0, 1] mapping."""
        return dict(self.meta["normalisation"])

    def mask(self) -> np.ndarray:
        """The brain mask of the store's grid, checked against the recorded sha256."""
        mask = brain_mask(self.resolution)
        if mask_sha256(mask) != self.meta["mask_sha256"]:
            raise CohortError(f"{self.path}: built on a different brain mask than this "
                              "installation's template; rebuild the store")
        return mask

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Read image rows from disk.

        Parameters
        ----------
        indices : sequence of int
            Rows, in the order wanted (repeats allowed).

        Returns
        -------
        ndarray of float32, shape (len(indices), n_voxels)
            Store space [0, 1].
        """
        idx = np.asarray(indices, dtype=np.int64)
        rows = np.empty((len(idx), self.data.shape[1]), dtype=np.float32)
        for positions, block in iter_row_blocks(self.data, idx, n_rows=max(1, len(idx))):
            rows[positions] = block  # read in file order, by pread (never mapped)
        return rows

    def encode(self, specs: Sequence[ConditionSpec] | None = None) -> dict[str, torch.Tensor]:
        """Encoded conditions of every image (the store's specs, or a model's).

        Returns
        -------
        dict of str to torch.Tensor, shape (n_images,)
        """
        from .model.conditions import encode_table

        return encode_table(self.conditions if specs is None else specs, self.table)

    def denormalise(self, values: np.ndarray, modality: str) -> np.ndarray:
        """Map store values of ``modality`` back to the original units."""
        return denormalise(values, self.normalisation[modality])


def normalise(values: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Map original units of one modality to store space: ``clip((v - lo) / (hi - lo), 0, 1)``.

    Parameters
    ----------
    values : ndarray
        Original units.
    norm : dict
        ``{"lo": float, "hi": float}`` from the store or checkpoint.

    Returns
    -------
    ndarray of float32
    """
    scaled = (np.asarray(values, dtype=np.float64) - norm["lo"]) / (norm["hi"] - norm["lo"])
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def denormalise(values: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Invert the [0, 1] mapping of one modality.

    Parameters
    ----------
    values : ndarray
        Store-space values.
    norm : dict
        ``{"lo": float, "hi": float}`` from the store or checkpoint.

    Returns
    -------
    ndarray
        ``lo + values * (hi - lo)``.
    """
    return norm["lo"] + np.asarray(values) * (norm["hi"] - norm["lo"])


def rescaled_rows(store: CohortStore, to: CohortStore, path: Path | str) -> np.ndarray:
    """``store``'s images in the units of another store (a float32 file), for comparisons.

    Every store maps each modality to [0, 1] with its own ``lo``/``hi`` (robust percentiles of
    its own images, except for probability maps), so the values of two stores (a real and a
    synthetic cohort) are in different units; distances, MMD and SSIM between them need one
    scale. Rows are streamed (memory: one block).

    Parameters
    ----------
    store : CohortStore
        One modality.
    to : CohortStore
        The store whose normalisation of that modality is wanted.
    path : path-like
        File to write (replaced atomically); not written when both mappings are equal.

    Returns
    -------
    ndarray, shape (len(store), n_voxels)
        ``store.data`` itself when the mappings agree, else a read-only float32 memmap of
        ``path``: ``clip((lo_s + v (hi_s - lo_s) - lo_t) / (hi_t - lo_t), 0, 1)``, clipped
        as ``to`` clips its own images (a copy of one of ``to``'s images then has its values,
        except where ``store``'s own range clipped it).
    """
    (modality,) = store.modalities
    own, target = store.normalisation[modality], to.normalisation[modality]
    if own["lo"] == target["lo"] and own["hi"] == target["hi"]:
        return store.data
    scale = (own["hi"] - own["lo"]) / (target["hi"] - target["lo"])
    shift = (own["lo"] - target["lo"]) / (target["hi"] - target["lo"])
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        for _, block in iter_row_blocks(store.data, block_mb=32.0):
            values = block.astype(np.float32) * np.float32(scale) + np.float32(shift)
            out.write(np.clip(values, 0.0, 1.0, out=values).tobytes())
    return np.memmap(path, dtype=np.float32, mode="r", shape=store.data.shape)
