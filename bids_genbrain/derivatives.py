"""BIDS-Derivatives naming and writing: the one place that knows output file names.

Names follow fMRIPrep's entity order (``sub, ses, ..., from, to, mode, space, res, label,
desc``) and BIDS-Stats-Models for statistical maps (``contrast, desc, stat``). Every write is
atomic (a temporary file beside the target, renamed on success), so a killed run never
leaves a truncated image that a rerun would mistake for a finished one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nb

from . import __version__
from .utils import atomic_path, atomic_write_text

BIDS_VERSION = "1.9.0"
PIPELINE_NAME = "bids_genbrain"

ENTITY_ORDER = (
    "sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "from", "to", "mode",
    "space", "cohort", "res", "den", "atlas", "roi", "label", "hemi", "contrast", "desc", "stat",
)
"""Order of entities in a file name (fMRIPrep, then BIDS-Stats-Models' contrast/stat)."""

DATATYPE_OF_SUFFIX = {
    "T1w": "anat", "T2w": "anat", "FLAIR": "anat", "PDw": "anat", "mask": "anat",
    "probseg": "anat", "dseg": "anat", "xfm": "anat", "boldref": "func", "bold": "func",
    "dwi": "dwi", "statmap": None,
}


def bids_name(entities: Mapping[str, Any], suffix: str, extension: str = ".nii.gz") -> str:
    """Compose a BIDS file name from entities in the canonical order.

    Parameters
    ----------
    entities : mapping
        Entity key to label, e.g. ``{"sub": "01", "space": "MNI152NLin6Asym", "res": 2}``.
        ``None`` values are skipped; a ``sub-`` or ``ses-`` prefix in a label is removed.
    suffix : str
        BIDS suffix (``T1w``, ``mask``, ``probseg``, ``statmap`` ...).
    extension : str
        With its leading dot.

    Returns
    -------
    str

    Examples
    --------
    >>> bids_name({"sub": "01", "space": "MNI152NLin6Asym", "res": 2, "desc": "preproc"}, "T1w")
    'sub-01_space-MNI152NLin6Asym_res-2_desc-preproc_T1w.nii.gz'
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}; known: {ENTITY_ORDER}")
    parts = []
    for key in ENTITY_ORDER:
        value = entities.get(key)
        if value is None:
            continue
        label = str(value)
        if key in ("sub", "ses") and label.startswith(f"{key}-"):
            label = label[len(key) + 1:]
        if not label.isalnum():
            raise ValueError(f"BIDS label for {key!r} must be alphanumeric, got {label!r}")
        parts.append(f"{key}-{label}")
    if not suffix.isalnum():
        raise ValueError(f"BIDS suffix must be alphanumeric, got {suffix!r}")
    return "_".join(parts + [suffix]) + extension


def derivative_path(
    root: Path | str,
    entities: Mapping[str, Any],
    suffix: str,
    extension: str = ".nii.gz",
    datatype: str | None = None,
) -> Path:
    """Full path of a derivative: ``root/sub-<l>[/ses-<s>]/<datatype>/<name>``.

    Parameters
    ----------
    root : path-like
        Derivatives dataset root.
    entities, suffix, extension
        See :func:`bids_name`.
    datatype : str, optional
        Folder under the subject/session; defaults from the suffix (``anat`` for images).
        Files without a ``sub`` entity go directly under ``root`` (or ``root/datatype``).
    """
    root = Path(root)
    folder = root
    if entities.get("sub") is not None:
        folder = folder / f"sub-{str(entities['sub']).removeprefix('sub-')}"
        if entities.get("ses") is not None:
            folder = folder / f"ses-{str(entities['ses']).removeprefix('ses-')}"
        datatype = datatype or DATATYPE_OF_SUFFIX.get(suffix) or "anat"
    if datatype:
        folder = folder / datatype
    return folder / bids_name(entities, suffix, extension)


def sidecar_path(path: Path | str) -> Path:
    """The JSON sidecar of a data file (``x.nii.gz`` -> ``x.json``)."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".h5", ".gii"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def write_json(path: Path | str, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_image(
    img: nb.spatialimages.SpatialImage,
    path: Path | str,
    sidecar: Mapping[str, Any] | None = None,
) -> Path:
    """Write a NIfTI image atomically, with its JSON sidecar when given.

    Parameters
    ----------
    img : nibabel image
    path : path-like
        Target ``.nii.gz`` path (usually from :func:`derivative_path`).
    sidecar : mapping, optional
        Sidecar metadata (``Sources``, ``SkullStripped`` ...).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        nb.save(img, tmp)
    if sidecar is not None:
        write_json(sidecar_path(path), sidecar)
    return path


def container_info() -> dict[str, str] | None:
    """Container type and tag when running inside Docker or Singularity/Apptainer, else None."""
    if os.environ.get("SINGULARITY_NAME") or os.environ.get("APPTAINER_NAME"):
        tag = os.environ.get("SINGULARITY_NAME") or os.environ.get("APPTAINER_NAME", "")
        return {"Type": "singularity", "Tag": tag}
    if Path("/.dockerenv").exists() or os.environ.get("GENBRAIN_DOCKER_TAG"):
        return {"Type": "docker", "Tag": os.environ.get("GENBRAIN_DOCKER_TAG", "unknown")}
    return None


def write_dataset_description(
    root: Path | str,
    *,
    name: str = "bids_genbrain outputs",
    source_datasets: list[Mapping[str, Any]] | None = None,
    description: str | None = None,
    dataset_type: str = "derivative",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write (or keep) ``dataset_description.json`` of a derivatives dataset.

    Parameters
    ----------
    root : path-like
        Dataset root.
    name : str
        ``Name`` field.
    source_datasets : list of dict, optional
        ``SourceDatasets`` entries, e.g. ``[{"URL": "file:///data/bids"}]``.
    description : str, optional
        Free text placed in ``GeneratedBy[0].Description``.
    dataset_type : {"derivative", "raw"}
        ``raw`` for simulated input datasets.
    extra : mapping, optional
        Further top-level fields (``Authors``, ``License``, ``DatasetLinks`` ...).

    Returns
    -------
    pathlib.Path
        Path of the written file.
    """
    generated_by: dict[str, Any] = {
        "Name": PIPELINE_NAME,
        "Version": __version__,
        "CodeURL": "https://github.com/bids-genbrain/bids_genbrain",
    }
    if description:
        generated_by["Description"] = description
    container = container_info()
    if container:
        generated_by["Container"] = container
    data: dict[str, Any] = {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": dataset_type,
        "GeneratedBy": [generated_by],
    }
    if source_datasets:
        data["SourceDatasets"] = list(source_datasets)
    data.update(extra or {})
    return write_json(Path(root) / "dataset_description.json", data)


def bids_uri(path: Path | str, dataset_root: Path | str, dataset_name: str = "raw") -> str:
    """A BIDS URI (``bids:<dataset>:<relative path>``) for ``Sources`` fields."""
    rel = Path(path).resolve().relative_to(Path(dataset_root).resolve())
    return f"bids:{dataset_name}:{rel.as_posix()}"
