"""BIDS-Derivatives naming and writing: the one place that knows output file names.

Names follow fMRIPrep's entity order (``sub, ses, ..., from, to, mode, space, res, label,
desc``) and BIDS-Stats-Models for statistical maps (``contrast, desc, stat``). Every write is
atomic (a temporary file beside the target, renamed on success), so a killed run never
leaves a truncated image that a rerun would mistake for a finished one.

:data:`KINDS` is the naming table: each kind of derivative (``preproc``, ``GMmod``,
``mask``, ``statmap`` ...) with its suffix, fixed entities, space and extension. Writers ask
:func:`kind_path` for a file's path; readers ask :func:`kind_entities` (or
:func:`modality_entities` for a model modality) what to match. To add a kind, add one entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from . import __version__
from .utils import atomic_path, atomic_write_text

BIDS_VERSION = "1.9.0"
PIPELINE_NAME = "bids_genbrain"
TEMPLATE = "MNI152NLin6Asym"
"""The standard space of every MNI-space output."""

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

IMAGE_MODALITIES = ("T1w", "T2w", "FLAIR")
"""Anatomical contrasts: the suffix of the image kinds (``preproc``, ``enhanced`` ...)."""


@dataclass(frozen=True)
class Kind:
    """How the files of one kind of derivative are named.

    Attributes
    ----------
    suffix : str or None
        BIDS suffix; None where the image's modality is the suffix (``desc-preproc_T1w``).
    entities : mapping
        Entities every file of the kind carries (``desc``, ``label``, ``mode``).
    mni : bool
        On the MNI grid: ``space-MNI152NLin6Asym_res-<r>`` (:func:`mni_entities`).
    extension : str
        With its leading dot.
    description : str
        What the file holds (docs, sidecars).
    """

    suffix: str | None
    entities: Mapping[str, str] = field(default_factory=dict)
    mni: bool = True
    extension: str = ".nii.gz"
    description: str = ""


KINDS: dict[str, Kind] = {
    # participant level, MNI grid
    "preproc": Kind(None, {"desc": "preproc"}, description="bias-corrected image"),
    "enhanced": Kind(None, {"desc": "enhanced"}, description="image restored by the model"),
    "synthetic": Kind(None, {"desc": "synthetic"},
                      description="modality imputed by the model from the others"),
    "mask": Kind("mask", {"desc": "brain"}, description="brain mask"),
    "GM": Kind("probseg", {"label": "GM"}, description="grey matter probability"),
    "WM": Kind("probseg", {"label": "WM"}, description="white matter probability"),
    "CSF": Kind("probseg", {"label": "CSF"}, description="CSF probability"),
    "GMmod": Kind("probseg", {"label": "GM", "desc": "modulated"},
                  description="modulated GM (GM x Jacobian determinant: VBM)"),
    "logjacobian": Kind("jacobian", {"desc": "log"},
                        description="log Jacobian determinant of the template-to-native map"),
    # participant level, native space
    "native_preproc": Kind(None, {"desc": "preproc"}, mni=False,
                           description="bias-corrected reference image"),
    "native_mask": Kind("mask", {"desc": "brain"}, mni=False, description="brain mask"),
    "native_dseg": Kind("dseg", mni=False, description="GM/WM/CSF labels"),
    "qc": Kind("metrics", {"desc": "qc"}, mni=False, extension=".tsv",
               description="quality metrics"),
    "xfm": Kind("xfm", {"mode": "image"}, mni=False, extension=".h5",
                description="composite transform (from-/to- given)"),
    "coreg": Kind("xfm", {"mode": "image"}, mni=False, extension=".mat",
                  description="rigid coregistration to the reference contrast"),
    # group level
    "statmap": Kind("statmap", description="BWAS statistic (contrast-, desc-, stat- given)"),
    # genbrain evaluate / augment
    "metrics": Kind("metrics", mni=False, extension=".tsv",
                    description="evaluation or augmentation table (desc- names it)"),
    "atlas": Kind("dseg", description="atlas labels on the MNI grid (atlas- given)"),
    "atlas_labels": Kind("dseg", mni=False, extension=".tsv",
                         description="atlas label table: index, name, voxels (atlas- given)"),
}
"""The naming table: kind -> suffix, fixed entities, space, extension."""

MODEL_MODALITIES = ("T1w", "T2w", "FLAIR", "GM", "WM", "CSF", "GMmod")
"""Named modalities of the model: an image contrast (``preproc`` kind) or a map kind."""


def res_label(resolution: float) -> str:
    """The ``res-`` label of a grid spacing in mm: ``2`` -> ``"2"``, ``1.5`` -> ``"1p5"``."""
    return f"{float(resolution):g}".replace(".", "p")


def mni_entities(resolution: float, **entities: Any) -> dict[str, Any]:
    """``entities`` plus ``space-MNI152NLin6Asym`` and ``res-<resolution>``."""
    return {**entities, "space": TEMPLATE, "res": res_label(resolution)}


def kind_entities(kind: str, *, modality: str | None = None,
                  resolution: float | None = None, **entities: Any) -> tuple[dict[str, Any], str]:
    """Entities and suffix of a file of ``kind``.

    Parameters
    ----------
    kind : str
        A key of :data:`KINDS`.
    modality : str, optional
        The suffix of kinds without one (``preproc``: ``T1w``, ``T2w``, ``FLAIR``).
    resolution : float, optional
        Grid of MNI kinds (required for them).
    **entities
        ``sub``, ``ses``, ``from``, ``to``, ``contrast``, ``stat``, ... (a kind's fixed
        entities cannot be changed).

    Returns
    -------
    entities : dict
    suffix : str

    Raises
    ------
    ValueError
        Unknown kind, missing modality or resolution, or an entity that contradicts the kind.
    """
    try:
        spec = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown derivative kind {kind!r}; known: {sorted(KINDS)}") from None
    suffix = spec.suffix or modality
    if suffix is None:
        raise ValueError(f"derivative kind {kind!r} needs the image modality (its suffix)")
    clash = {k: v for k, v in entities.items()
             if k in spec.entities and v is not None and v != spec.entities[k]}
    if clash:
        raise ValueError(f"derivative kind {kind!r} has {dict(spec.entities)}; got {clash}")
    ents = {**entities, **spec.entities}
    if spec.mni:
        if resolution is None:
            raise ValueError(f"derivative kind {kind!r} is on the MNI grid: give resolution")
        ents = mni_entities(resolution, **ents)
    return ents, suffix


def kind_path(root: Path | str, kind: str, *, modality: str | None = None,
              resolution: float | None = None, **entities: Any) -> Path:
    """Path of a derivative of ``kind`` under ``root`` (see :func:`kind_entities`).

    Examples
    --------
    >>> kind_path("/out", "GMmod", sub="01", resolution=2).name
    'sub-01_space-MNI152NLin6Asym_res-2_label-GM_desc-modulated_probseg.nii.gz'
    """
    ents, suffix = kind_entities(kind, modality=modality, resolution=resolution, **entities)
    return derivative_path(root, ents, suffix, KINDS[kind].extension)


def modality_entities(name: str) -> dict[str, str | None]:
    """Entities (``suffix``, ``desc``, ``label``) that select a model modality's files.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_MODALITIES`, or a ``desc`` / suffix of any other MNI-space map
        (``FA`` -> ``desc-FA_dwimap``).

    Returns
    -------
    dict
        ``suffix``/``desc``/``label``; ``"*"`` means any value.
    """
    if name in IMAGE_MODALITIES:
        kind, suffix = KINDS["preproc"], name
    elif name in MODEL_MODALITIES:
        kind = KINDS[name]
        suffix = kind.suffix
    else:
        return {"suffix": "*", "desc": name, "label": "*"}
    return {"suffix": suffix, "desc": kind.entities.get("desc"),
            "label": kind.entities.get("label")}


def parse_name(name: str) -> tuple[dict[str, str], str, str]:
    """Entities, suffix and extension of a BIDS file name (the inverse of :func:`bids_name`).

    Examples
    --------
    >>> parse_name("sub-01_space-MNI152NLin6Asym_res-2_desc-preproc_T1w.nii.gz")
    ({'sub': '01', 'space': 'MNI152NLin6Asym', 'res': '2', 'desc': 'preproc'}, 'T1w', '.nii.gz')
    """
    ext = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
    stem = name[: -len(ext)] if ext else name
    *pairs, suffix = stem.split("_")
    entities = dict(p.split("-", 1) for p in pairs if "-" in p)
    return entities, suffix, ext


def masked_to_image(values: np.ndarray, mask: np.ndarray, resolution: float) -> nb.Nifti1Image:
    """A NIfTI image on the MNI grid from the values of the voxels in ``mask``.

    Parameters
    ----------
    values : ndarray, shape (n_voxels,)
        One value per ``True`` voxel of ``mask``, in C order (the cohort store's order).
    mask : ndarray of bool, shape mni_grid(resolution)[0]
    resolution : float
        Grid spacing in mm.

    Returns
    -------
    nibabel.Nifti1Image
        float32, zero outside the mask, MNI affine in the sform and qform (code 4, mm).
    """
    from .templates import mni_grid

    shape, affine = mni_grid(resolution)
    mask = np.asarray(mask, dtype=bool)
    values = np.asarray(values)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} is not the {resolution:g} mm grid {shape}")
    if values.shape != (int(mask.sum()),):
        raise ValueError(f"{values.shape[0] if values.ndim else 0} values for a mask of "
                         f"{int(mask.sum())} voxels")
    volume = np.zeros(shape, dtype=np.float32)
    volume[mask] = values
    img = nb.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=4)
    img.header.set_sform(affine, code=4)
    return img


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


def dataset_description(
    *,
    name: str = "bids_genbrain outputs",
    source_datasets: list[Mapping[str, Any]] | None = None,
    description: str | None = None,
    dataset_type: str = "derivative",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of a derivatives dataset's ``dataset_description.json``.

    Parameters
    ----------
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
    dict
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
    return data


def write_dataset_description(root: Path | str, **fields: Any) -> Path:
    """Write ``dataset_description.json`` of a dataset that one process owns (fields as
    :func:`dataset_description`); a derivatives root that parallel jobs share uses
    :func:`bids_genbrain.summaries.ensure_dataset_description`."""
    return write_json(Path(root) / "dataset_description.json", dataset_description(**fields))


def bids_uri(path: Path | str, dataset_root: Path | str, dataset_name: str = "raw") -> str:
    """A BIDS URI (``bids:<dataset>:<relative path>``) for ``Sources`` fields."""
    rel = Path(path).resolve().relative_to(Path(dataset_root).resolve())
    return f"bids:{dataset_name}:{rel.as_posix()}"
