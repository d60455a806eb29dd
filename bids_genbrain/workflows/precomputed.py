"""Use existing MNI-space derivatives (fMRIPrep, sMRIPrep, QSIPrep ...) instead of preprocessing.

``--derivatives PATH...`` folders are indexed with pybids; every 3D image of a participant in
an MNI space is brought into this dataset under our naming (``space-MNI152NLin6Asym``,
``res-<resolution>``), so the group level reads it like our own outputs:

- ``space-MNI152NLin6Asym`` on exactly our grid: copied unchanged;
- ``space-MNI152NLin6Asym`` at another resolution or field of view: resampled onto our grid
  (linear; nearest neighbour for masks and label maps), with a warning;
- another MNI template (e.g. ``MNI152NLin2009cAsym``): resampled likewise, with a warning that
  no template-to-template transform is applied (the templates differ by a few mm locally).

Entities other than BIDS's own (QSIPrep's ``model-``/``param-`` ...) are folded into ``desc``
(``param-fa`` -> ``desc-fa``), so any MNI-space map (FA, MD, seed FC ...) becomes a
modality named by its entities. 4D series are skipped.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

from ..derivatives import ENTITY_ORDER, derivative_path, sidecar_path, write_image, write_json
from ..templates import TEMPLATE, _res_label, mni_grid
from ..utils import atomic_path

LOGGER = logging.getLogger(__name__)

_NEAREST_SUFFIXES = ("mask", "dseg")


@dataclass
class ImportedMap:
    """One derivative brought into the output dataset.

    Attributes
    ----------
    source, target : pathlib.Path
    resampled : bool
        True when the image was resampled onto our grid.
    """

    source: Path
    target: Path
    resampled: bool


def _parse_name(name: str) -> tuple[dict[str, str], str, str]:
    """Entities, suffix and extension of a BIDS file name."""
    ext = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
    stem = name[: -len(ext)] if ext else name
    *pairs, suffix = stem.split("_")
    entities = dict(p.split("-", 1) for p in pairs if "-" in p)
    return entities, suffix, ext


def _target_entities(entities: dict[str, str], resolution: float) -> dict[str, str]:
    known = {k: v for k, v in entities.items() if k in ENTITY_ORDER}
    extra = [v for k, v in entities.items() if k not in ENTITY_ORDER]
    if extra:
        known["desc"] = "".join([known.get("desc", ""), *extra])
    known = {k: "".join(ch for ch in v if ch.isalnum()) for k, v in known.items()}
    if "space" in known:
        known["space"] = TEMPLATE
        known["res"] = _res_label(resolution)
    return known


def _on_grid(img: nb.spatialimages.SpatialImage, resolution: float) -> bool:
    shape, affine = mni_grid(resolution)
    return tuple(img.shape[:3]) == tuple(shape) and np.allclose(img.affine, affine, atol=1e-3)


def find_mni_derivatives(derivatives: Sequence[Path | str], subject_id: str,
                         session_id: str | None = None) -> list[Path]:
    """MNI-space images and MNI transforms of one participant in derivatives folders.

    Parameters
    ----------
    derivatives : sequence of path-like
        Derivatives dataset roots (need not pass BIDS validation).
    subject_id : str
        Bare label.
    session_id : str, optional
        Keep only this session's files.

    Returns
    -------
    list of pathlib.Path
        NIfTI images whose ``space`` starts with ``MNI`` and ``.h5`` transforms to or from
        MNI152NLin6Asym, sorted.
    """
    from bids import BIDSLayout

    found: set[Path] = set()
    for root in derivatives:
        layout = BIDSLayout(str(root), validate=False, config=["bids", "derivatives"])
        query = {"subject": subject_id}
        if session_id is not None:
            query["session"] = session_id
        for f in layout.get(return_type="filename", **query):
            path = Path(f)
            entities, _, ext = _parse_name(path.name)
            if ext in (".nii", ".nii.gz") and entities.get("space", "").startswith("MNI"):
                found.add(path)
            elif ext == ".h5" and TEMPLATE in (entities.get("from"), entities.get("to")):
                found.add(path)
    return sorted(found)


def import_derivatives(derivatives: Sequence[Path | str], output_dir: Path | str, *,
                       subject_id: str, session_id: str | None = None,
                       resolution: float = 2.0) -> list[ImportedMap]:
    """Bring a participant's MNI-space derivatives into the output dataset.

    Parameters
    ----------
    derivatives : sequence of path-like
        Derivatives dataset roots.
    output_dir : path-like
        Our derivatives root.
    subject_id : str
        Bare label.
    session_id : str, optional
        Only this session.
    resolution : float
        Our output grid (mm).

    Returns
    -------
    list of ImportedMap
        Empty when the participant has no MNI-space derivative.
    """
    from nilearn.image import resample_img

    shape, affine = mni_grid(resolution)
    imported = []
    for source in find_mni_derivatives(derivatives, subject_id, session_id):
        entities, suffix, ext = _parse_name(source.name)
        target_entities = _target_entities(entities, resolution)
        if ext == ".h5":
            if "space" in entities:
                continue
            target = derivative_path(output_dir, target_entities, suffix, ext)
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            imported.append(ImportedMap(source, target, False))
            continue
        img = nb.load(source)
        if len(img.shape) > 3 and img.shape[3] > 1:
            LOGGER.info("skipping 4D derivative %s", source.name)
            continue
        target = derivative_path(output_dir, target_entities, suffix, ext)
        sidecar = {"Sources": [str(source)], "SpatialReference": TEMPLATE}
        if entities.get("space") == TEMPLATE and _on_grid(img, resolution):
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            write_json(sidecar_path(target), sidecar)
            imported.append(ImportedMap(source, target, False))
            continue
        if entities.get("space") != TEMPLATE:
            LOGGER.warning("%s is in %s, not %s: resampled onto the %g mm grid without a "
                           "template-to-template transform (local misalignment of a few mm)",
                           source.name, entities.get("space"), TEMPLATE, resolution)
        else:
            LOGGER.warning("%s is not on the %g mm FSL grid: resampled", source.name, resolution)
        nearest = suffix in _NEAREST_SUFFIXES
        data = nb.Nifti1Image(np.asanyarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]),
                              img.affine)
        out = resample_img(data, target_affine=affine, target_shape=shape,
                           interpolation="nearest" if nearest else "linear",
                           force_resample=True, copy_header=True)
        sidecar.update(Resampled=True, SourceSpace=entities.get("space"),
                       Interpolation="nearest" if nearest else "linear")
        write_image(nb.Nifti1Image(np.asanyarray(out.dataobj, dtype=np.float32), affine),
                    target, sidecar)
        imported.append(ImportedMap(source, target, True))
    return imported
