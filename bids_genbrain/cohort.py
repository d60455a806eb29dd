"""Derivatives -> an on-disk cohort store the model trains from.

A store is a folder::

    data.f32      float32 memmap, shape (n_images, n_voxels): brain-mask voxels (mask order)
                  of every image, normalised to [0, 1] per modality
    table.tsv     one row per image: participant_id, session_id, modality, source path and
                  the condition columns
    cohort.json   grid (resolution, shape, affine, mask sha256), modalities, normalisation
                  (per modality ``lo``/``hi``: stored = clip((raw - lo) / (hi - lo), 0, 1)),
                  condition specs, sources, and the sha256 of data.f32

Images are found by the output naming contract
(``sub-<l>[_ses-<s>]_space-MNI152NLin6Asym_res-<r>_..._<suffix>.nii[.gz]``) with a
glob and pybids' entity parser (no layout database: fast on large derivative trees).
Modalities by name: ``T1w``, ``T2w``, ``FLAIR`` (``desc-preproc``), ``GM``
(``label-GM_probseg``), ``GMmod`` (``label-GM_desc-modulated_probseg``, VBM), and any other
map by its ``desc`` (``FA`` -> ``desc-FA_dwimap``) or suffix. Images on another grid are
resampled to the requested one (with a warning). Training reads batches from the memmap, so a
cohort larger than memory works.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd
import torch

from .errors import InputError
from .model.conditions import ConditionSpec, encode_table, infer_spec
from .model.tokens import mask_sha256
from .templates import TEMPLATE, brain_mask, mni_grid
from .utils import atomic_write_text

LOGGER = logging.getLogger(__name__)

STORE_VERSION = 1
PERCENTILES = (0.5, 99.5)
"""Robust range of an intensity modality: medians over images of these in-mask percentiles."""

MODALITIES: dict[str, dict[str, str | None]] = {
    "T1w": {"suffix": "T1w", "desc": "preproc", "label": None},
    "T2w": {"suffix": "T2w", "desc": "preproc", "label": None},
    "FLAIR": {"suffix": "FLAIR", "desc": "preproc", "label": None},
    "GM": {"suffix": "probseg", "desc": None, "label": "GM"},
    "WM": {"suffix": "probseg", "desc": None, "label": "WM"},
    "CSF": {"suffix": "probseg", "desc": None, "label": "CSF"},
    "GMmod": {"suffix": "probseg", "desc": "modulated", "label": "GM"},
}
"""Named modalities and the entities their files carry."""

_SKIP_SUFFIXES = {"mask", "xfm", "dseg"}


class CohortError(InputError):
    """A cohort cannot be built or opened (no images, bad grid, unknown modality)."""


def modality_entities(name: str) -> dict[str, str | None]:
    """Entities (``suffix``, ``desc``, ``label``) that select a modality's files.

    Parameters
    ----------
    name : str
        A name of :data:`MODALITIES`, or a ``desc`` / suffix of any other MNI-space map.

    Returns
    -------
    dict
        ``suffix``/``desc``/``label``; ``"*"`` means any value.
    """
    if name in MODALITIES:
        return dict(MODALITIES[name])
    return {"suffix": "*", "desc": name, "label": "*"}


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
    merged = images.merge(table[keys + list(conditions)], on=keys, how="left")
    unmatched = merged.loc[merged[list(conditions)].isna().all(axis=1), "participant_id"]
    if len(unmatched):
        LOGGER.warning("%d image(s) have no conditions in the participants table (e.g. %s); "
                       "they train as unconditional", len(unmatched), unmatched.iloc[0])
    return merged


def _sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_cohort(
    roots: Sequence[Path | str],
    out: Path | str,
    *,
    modalities: Sequence[str] = ("GMmod",),
    participants: pd.DataFrame | None = None,
    conditions: Sequence[str] = (),
    resolution: float = 2.0,
    cfg_dropout: float = 0.1,
    progress: bool = True,
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
        e.g. :func:`bids_genbrain.bids.read_participants`.
    conditions : sequence of str
        Columns of ``participants`` to condition on (``age``, ``sex`` ...).
    resolution : float
        Model grid in mm (2 = paper).
    cfg_dropout : float
        CFG dropout rate recorded in each condition's spec.
    progress : bool
        Show a progress bar.

    Returns
    -------
    CohortStore

    Raises
    ------
    CohortError
        No image found, or conditions that the table does not have.
    """
    if not modalities:
        raise CohortError("give at least one modality")
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
    table = _match_conditions(images, participants, conditions)
    specs = [infer_spec(c, table[c], dropout=cfg_dropout) for c in conditions]
    specs.append(ConditionSpec("modality", "categorical", levels=list(modalities), dropout=0.0))

    mask = brain_mask(resolution)
    shape, affine = mni_grid(resolution)
    n_images, n_vox = len(table), int(mask.sum())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        arr = np.memmap(tmp / "data.f32", dtype=np.float32, mode="w+", shape=(n_images, n_vox))
        bounds = np.zeros((n_images, 2))
        for i, path in enumerate(_progress(table["path"], progress, "Reading images")):
            values = _load_on_grid(Path(path), shape, affine)[mask]
            if not np.all(np.isfinite(values)):
                raise CohortError(f"{path}: non-finite values inside the brain mask")
            arr[i] = values
            bounds[i] = np.percentile(values, PERCENTILES)
        norm = _normalise(arr, table["modality"].to_numpy(), bounds, modalities)
        for m in modalities:  # how the modality's files are named, for writing samples back
            first = table.loc[table["modality"] == m, "path"].iloc[0]
            norm[m]["entities"] = _naming_entities(Path(first))
        arr.flush()
        del arr
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
            "modalities": list(modalities),
            "normalisation": norm,
            "conditions": [s.to_dict() for s in specs],
            "sources": [str(Path(r).resolve()) for r in roots],
            "data_sha256": _sha256_file(tmp / "data.f32"),
        }
        atomic_write_text(tmp / "cohort.json", json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return CohortStore(out)


def _naming_entities(path: Path) -> dict[str, str | None]:
    from bids.layout import parse_file_entities

    ents = parse_file_entities(str(path))
    return {"suffix": ents["suffix"], "desc": ents.get("desc"), "label": ents.get("label")}


def _describe(modality: str) -> str:
    q = modality_entities(modality)
    parts = [f"label-{q['label']}" if q["label"] not in (None, "*") else "",
             f"desc-{q['desc']}" if q["desc"] else "", q["suffix"] if q["suffix"] != "*" else "*"]
    return "_".join(p for p in parts if p) + ".nii.gz"


def _normalise(arr: np.memmap, modality: np.ndarray, bounds: np.ndarray,
               modalities: Sequence[str], chunk: int = 64) -> dict[str, dict[str, Any]]:
    """Map every modality to [0, 1] in place; return the mapping per modality."""
    norm: dict[str, dict[str, Any]] = {}
    for m in modalities:
        rows = np.flatnonzero(modality == m)
        q = modality_entities(m)
        if q["suffix"] == "probseg" and q["desc"] is None:
            lo, hi, method = 0.0, 1.0, "probability"
        else:
            lo, hi = float(np.median(bounds[rows, 0])), float(np.median(bounds[rows, 1]))
            method = f"robust percentiles {PERCENTILES[0]}-{PERCENTILES[1]}"
            if hi <= lo:
                raise CohortError(f"modality {m}: images are constant inside the mask")
        for start in range(0, len(rows), chunk):
            sel = rows[start:start + chunk]
            arr[sel] = np.clip((arr[sel] - lo) / (hi - lo), 0.0, 1.0)
        norm[m] = {"lo": lo, "hi": hi, "method": method}
    return norm


def _progress(items: Iterable[Any], enabled: bool, label: str) -> Iterable[Any]:
    if not enabled:
        return items
    from rich.progress import track

    return track(list(items), description=label, transient=True)


class CohortStore:
    """An opened cohort store (read-only memmap, table, metadata).

    Parameters
    ----------
    path : path-like
        Store folder written by :func:`build_cohort`.

    Attributes
    ----------
    data : numpy.memmap, shape (n_images, n_voxels)
    table : pandas.DataFrame
    meta : dict
    conditions : list of ConditionSpec
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        meta_path = self.path / "cohort.json"
        if not meta_path.is_file():
            raise CohortError(f"{self.path}: not a cohort store (no cohort.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("version") != STORE_VERSION:
            raise CohortError(f"{self.path}: store version {self.meta.get('version')} is not "
                              f"{STORE_VERSION}; rebuild it")
        self.data = np.memmap(self.path / "data.f32", dtype=np.float32, mode="r",
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
        order = np.argsort(idx, kind="stable")
        rows = np.empty((len(idx), self.data.shape[1]), dtype=np.float32)
        rows[order] = self.data[idx[order]]  # sorted reads are sequential on disk
        return rows

    def encode(self, specs: Sequence[ConditionSpec] | None = None) -> dict[str, torch.Tensor]:
        """Encoded conditions of every image (the store's specs, or a model's).

        Returns
        -------
        dict of str to torch.Tensor, shape (n_images,)
        """
        return encode_table(self.conditions if specs is None else specs, self.table)

    def denormalise(self, values: np.ndarray, modality: str) -> np.ndarray:
        """Map store values of ``modality`` back to the original units."""
        return denormalise(values, self.normalisation[modality])


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
