"""Other standard spaces brought onto MNI152NLin6Asym: template-to-template transforms.

A map in another TemplateFlow template (fMRIPrep's default ``MNI152NLin2009cAsym``, or
``MNI152NLin2009cSym``, ``MNI152Lin`` ...) is never relabelled: it is resampled onto our grid
through a transform between the two templates, found in this order:

1. **published** -- TemplateFlow's ``tpl-MNI152NLin6Asym_from-<space>_mode-image_xfm.h5``
   (the one fMRIPrep uses), when the TemplateFlow home holds it with content or it can be
   downloaded;
2. **registered** -- an antspyx registration (rigid -> affine -> SyN, cross-correlation) of
   ``<space>``'s T1w template to MNI152NLin6Asym's, both brain-masked TemplateFlow images,
   computed once per space and output resolution and cached under
   ``<cache>/spaces/`` with its measured fit (brain-mask Dice and T1w correlation, before
   and after);
3. otherwise a :class:`SpaceError` (exit 2) that names the space and the fix.

Both templates must be the real TemplateFlow images. The offline fallback of
:mod:`bids_genbrain.templates` (nilearn's ICBM152 2009a symmetric template on FSL's grid) is
never used as a stand-in for either: registering that one image to itself would give the
identity, that is, a relabelling. Without TemplateFlow content such maps are refused; run
``genbrain fetch-templates`` once where there is network (container images have it done).

Transforms follow ANTs' conventions (see :mod:`bids_genbrain.interfaces.ants`): the list
resamples an image of ``<space>`` onto the MNI152NLin6Asym grid. A map that is a tissue
density (VBM-modulated GM) is also multiplied by the Jacobian determinant of the
template-to-template mapping, so that its integral (the tissue volume) is kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from .derivatives import res_label
from .errors import InputError
from .templates import (
    _TF_STATE,
    TEMPLATE,
    _resample_to_grid,
    _valid_image,
    get_template,
    mni_grid,
)
from .utils import atomic_path, atomic_write_text, cache_dir

LOGGER = logging.getLogger(__name__)

REGISTRATION = "antsRegistrationSyNRepro[s]"
"""antspyx transform type of a template-to-template registration."""

_CACHE_VERSION = 1


class SpaceError(InputError):
    """A standard space cannot be brought onto MNI152NLin6Asym."""


@dataclass(frozen=True)
class SpaceTransform:
    """How images of one standard space reach the MNI152NLin6Asym grid.

    Attributes
    ----------
    source : str
        TemplateFlow identifier of the images' space.
    transforms : tuple of str
        ANTs transform list (empty when ``source`` is MNI152NLin6Asym).
    method : {"identity", "templateflow", "registration"}
        Where the transform comes from.
    accuracy : dict
        Measured fit of a computed registration (empty otherwise).
    """

    source: str
    transforms: tuple[str, ...] = ()
    method: str = "identity"
    accuracy: dict[str, Any] = field(default_factory=dict)

    def sidecar(self) -> dict[str, Any]:
        """Sidecar fields that say which transform was applied."""
        if self.method == "identity":
            return {"SourceSpace": self.source}
        described = {
            "templateflow": "TemplateFlow's published template-to-template transform",
            "registration": "antspyx registration of the two TemplateFlow T1w templates "
                            f"({REGISTRATION}), computed once and cached",
        }[self.method]
        info: dict[str, Any] = {"Method": self.method, "Description": described,
                                "File": [Path(t).name for t in self.transforms]}
        if self.accuracy:
            info["Accuracy"] = self.accuracy
        return {"SourceSpace": self.source, "TemplateTransform": info}


def templateflow_home() -> Path:
    """TemplateFlow's home (``$TEMPLATEFLOW_HOME`` or ``~/.cache/templateflow``)."""
    home = os.environ.get("TEMPLATEFLOW_HOME")
    return Path(home) if home else Path.home() / ".cache" / "templateflow"


def _has_content(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    return _valid_image(path) if path.name.endswith((".nii", ".nii.gz")) else True


def _download(template: str, **query: Any) -> Path | None:
    """A TemplateFlow file fetched over the network, or None (offline, absent, skeleton)."""
    if os.environ.get("GENBRAIN_TEMPLATES", "auto").lower() == "fallback" or _TF_STATE["failed"]:
        return None
    try:
        import templateflow.api as tflow

        found = tflow.get(template, **query)
    except Exception as exc:  # noqa: BLE001 - network and index errors alike
        LOGGER.info("TemplateFlow could not provide %s %s (%s)", template, query, exc)
        _TF_STATE["failed"] = True  # do not wait on the network again in this process
        return None
    if isinstance(found, list):
        found = found[0] if len(found) == 1 else None
    return Path(found) if found and _has_content(Path(found)) else None


def _resolution_of(name: str) -> float:
    match = re.search(r"_res-0*(\d+)", name)
    return float(match.group(1)) if match else 1.0


def _tf_image(template: str, suffix: str, desc: str | None) -> Path | None:
    """The finest-resolution TemplateFlow image of a template (``cohort``-free), or None."""
    folder = templateflow_home() / f"tpl-{template}"
    tail = (f"_desc-{desc}" if desc else "") + f"_{suffix}.nii.gz"
    pattern = re.compile(rf"tpl-{re.escape(template)}(_res-\d+)?{re.escape(tail)}$")
    local = sorted((p for p in folder.glob(f"tpl-{template}*{suffix}.nii.gz")
                    if pattern.fullmatch(p.name) and _has_content(p)),
                   key=lambda p: _resolution_of(p.name))
    if local:
        return local[0]
    for res in (1, 2):
        path = _download(template, resolution=res, desc=desc, suffix=suffix, extension=".nii.gz")
        if path is not None:
            return path
    return None


def _published_transform(source: str) -> Path | None:
    name = f"tpl-{TEMPLATE}_from-{source}_mode-image_xfm.h5"
    local = templateflow_home() / f"tpl-{TEMPLATE}" / name
    if _has_content(local):
        return local
    return _download(TEMPLATE, **{"from": source}, mode="image", suffix="xfm", extension=".h5")


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _on_grid(path: Path, resolution: float, mask: bool) -> np.ndarray:
    img = nb.load(path)
    arr = _resample_to_grid(img, resolution, order=0 if mask else 1)
    return (arr > 0.5) if mask else arr


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _fit(target: np.ndarray, target_mask: np.ndarray, moved: np.ndarray,
         moved_mask: np.ndarray) -> dict[str, float]:
    r = np.corrcoef(target[target_mask], moved[target_mask])[0, 1]
    return {"BrainMaskDice": round(_dice(target_mask, moved_mask), 4),
            "T1wCorrelation": round(float(r), 4)}


def _template_images(source: str) -> dict[str, tuple[Path, Path | None]]:
    """T1w and brain mask of ``source`` and of MNI152NLin6Asym (TemplateFlow, with content)."""
    images = {}
    for tpl in (source, TEMPLATE):
        t1w, mask = _tf_image(tpl, "T1w", None), _tf_image(tpl, "mask", "brain")
        if t1w is None:
            raise SpaceError(
                f"space-{source} cannot be brought onto {TEMPLATE}: TemplateFlow has neither "
                f"tpl-{TEMPLATE}_from-{source}_mode-image_xfm.h5 nor the tpl-{tpl} T1w image in "
                f"{templateflow_home()}; run `genbrain fetch-templates --space {source}` once "
                "with network (or set TEMPLATEFLOW_HOME to a copy that has them)")
        images[tpl] = (t1w, mask)
    return images


def _inputs(images: dict[str, tuple[Path, Path | None]]) -> dict[str, str]:
    return {str(p): _sha(p) for pair in images.values() for p in pair if p is not None}


def _register(source: str, resolution: float, folder: Path,
              images: dict[str, tuple[Path, Path | None]]) -> SpaceTransform:
    """Register ``source``'s T1w template to MNI152NLin6Asym's; write the cache entry."""
    import ants
    import ants.config

    ants.config.set_ants_deterministic(on=False, seed_value=1)  # fixed sampling jitter
    (src_t1w, src_mask), (tgt_t1w, tgt_mask) = images[source], images[TEMPLATE]
    masked = src_mask is not None and tgt_mask is not None
    _, affine = mni_grid(resolution)
    target = _on_grid(tgt_t1w, resolution, mask=False)
    target_mask = _on_grid(tgt_mask, resolution, mask=True) if masked else target > 0
    fixed = ants.from_nibabel_nifti(
        nb.Nifti1Image((target * target_mask).astype(np.float32), affine))
    moving_img = nb.load(src_t1w)
    moving = np.asanyarray(moving_img.dataobj, dtype=np.float32)
    moving_mask = (_resample_like(nb.load(src_mask), moving_img) > 0.5) if masked else moving > 0
    if masked:
        moving = moving * moving_mask
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        reg = ants.registration(
            fixed, ants.from_nibabel_nifti(nb.Nifti1Image(moving, moving_img.affine)),
            type_of_transform=REGISTRATION, write_composite_transform=True,
            outprefix=str(Path(tmp) / "reg_"))
        seconds = time.monotonic() - start
        xfm = folder / "xfm.h5"
        with atomic_path(xfm) as part:
            part.write_bytes(Path(reg["fwdtransforms"]).read_bytes())
    src_on_grid = _on_grid(src_t1w, resolution, mask=False)
    src_mask_grid = _on_grid(src_mask, resolution, mask=True) if masked else src_on_grid > 0
    moved = reg["warpedmovout"].numpy()
    moved_mask = apply_space_transform(
        nb.Nifti1Image(moving_mask.astype(np.float32), moving_img.affine), (str(xfm),),
        resolution) > 0.5
    accuracy = {
        "Before": _fit(target, target_mask, src_on_grid, src_mask_grid),
        "After": _fit(target, target_mask, moved, moved_mask),
        "Seconds": round(seconds, 1),
        "Resolution": f"{resolution:g} mm",
        "BrainMasked": masked,
    }
    record = {"version": _CACHE_VERSION, "source": source, "target": TEMPLATE,
              "registration": REGISTRATION, "antspyx": version("antspyx"),
              "inputs": _inputs(images),
              "accuracy": accuracy}
    atomic_write_text(folder / "xfm.json", json.dumps(record, indent=2) + "\n")
    LOGGER.info("registered tpl-%s to tpl-%s at %g mm in %.0f s: %s", source, TEMPLATE,
                resolution, seconds, accuracy)
    return SpaceTransform(source, (str(xfm),), "registration", accuracy)


def _resample_like(img: nb.spatialimages.SpatialImage,
                   like: nb.spatialimages.SpatialImage) -> np.ndarray:
    """``img`` resampled (nearest) onto ``like``'s voxel grid."""
    from scipy.ndimage import map_coordinates

    if img.shape[:3] == like.shape[:3] and np.allclose(img.affine, like.affine, atol=1e-4):
        return np.asanyarray(img.dataobj, dtype=np.float32)
    ijk = np.indices(like.shape[:3], dtype=np.float32).reshape(3, -1)
    to_img = np.linalg.inv(img.affine) @ like.affine
    vox = to_img[:3, :3] @ ijk + to_img[:3, 3:4]
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    return map_coordinates(data, vox, order=0, mode="constant").reshape(like.shape[:3])


def _cache_folder(source: str, resolution: float) -> Path:
    return cache_dir() / "spaces" / f"from-{source}_res-{res_label(resolution)}"


def _cached_registration(source: str, resolution: float,
                         inputs: dict[str, str]) -> SpaceTransform | None:
    """The cached registration of ``source`` if it was made from exactly ``inputs``."""
    folder = _cache_folder(source, resolution)
    record_file, xfm = folder / "xfm.json", folder / "xfm.h5"
    if not (record_file.is_file() and _has_content(xfm)):
        return None
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return None
    if record.get("version") != _CACHE_VERSION or record.get("inputs") != inputs:
        return None
    return SpaceTransform(source, (str(xfm),), "registration", record["accuracy"])


def space_transform(source: str, resolution: float = 2.0) -> SpaceTransform:
    """The transform that brings images of ``source`` onto the MNI152NLin6Asym grid.

    Resolved once per process for a given TemplateFlow home and cache folder.

    Parameters
    ----------
    source : str
        TemplateFlow identifier (``space-`` entity of the images), e.g. ``MNI152NLin2009cAsym``.
    resolution : float
        Output grid (mm); a computed registration runs on this grid.

    Returns
    -------
    SpaceTransform

    Raises
    ------
    SpaceError
        When neither a published transform nor both T1w templates are available.
    """
    return _resolve(source, float(resolution), str(templateflow_home()), str(cache_dir()))


@functools.lru_cache(maxsize=32)
def _resolve(source: str, resolution: float, home: str, cache: str) -> SpaceTransform:
    """:func:`space_transform` for one TemplateFlow home and cache folder."""
    if source == TEMPLATE:
        return SpaceTransform(source)
    if not source.isalnum():
        raise SpaceError(f"space-{source} is not a TemplateFlow identifier")
    published = _published_transform(source)
    if published is not None:
        return SpaceTransform(source, (str(published),), "templateflow")
    images = _template_images(source)
    cached = _cached_registration(source, resolution, _inputs(images))
    if cached is not None:
        return cached
    folder = _cache_folder(source, resolution)
    folder.mkdir(parents=True, exist_ok=True)
    return _register(source, resolution, folder, images)


def apply_space_transform(img: nb.spatialimages.SpatialImage, transforms: tuple[str, ...],
                          resolution: float, *, interpolation: str = "linear") -> np.ndarray:
    """Resample a 3D image through an ANTs transform list onto the output grid.

    Parameters
    ----------
    img : nibabel image
        3D image in the transforms' moving space.
    transforms : tuple of str
        ANTs transform list (last applied first).
    resolution : float
        Output grid (mm).
    interpolation : {"linear", "genericLabel", "nearestNeighbor"}
        ANTs interpolator.

    Returns
    -------
    ndarray, shape ``mni_grid(resolution)[0]``, float32
    """
    import ants

    ref = ants.image_read(str(get_template(resolution))).clone("float")
    data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    moving = ants.from_nibabel_nifti(nb.Nifti1Image(data, img.affine))
    out = ants.apply_transforms(ref, moving, list(transforms), interpolator=interpolation)
    return out.numpy().astype(np.float32)


def log_jacobian_of(transforms: tuple[str, ...], resolution: float) -> np.ndarray:
    """Log Jacobian determinant of a transform list on the output grid (cached per list).

    Parameters
    ----------
    transforms : tuple of str
        ANTs transform list resampling its moving space onto the output grid.
    resolution : float
        Output grid (mm).

    Returns
    -------
    ndarray, shape ``mni_grid(resolution)[0]``
        See :func:`bids_genbrain.interfaces.ants.log_jacobian`.
    """
    from .interfaces.ants import log_jacobian

    with tempfile.TemporaryDirectory() as tmp:
        path = log_jacobian(str(get_template(resolution)), list(transforms), f"{tmp}/")
        return np.asanyarray(nb.load(path).dataobj, dtype=np.float32)


def prefetch_space(source: str) -> list[Path]:
    """Download what :func:`space_transform` needs for ``source`` (needs network once).

    TemplateFlow's published transform when there is one, otherwise both templates' T1w
    and brain mask (the registration is then computed at the first run and cached).

    Parameters
    ----------
    source : str
        TemplateFlow identifier, e.g. ``MNI152NLin2009cAsym``.

    Returns
    -------
    list of pathlib.Path
        Files with content.

    Raises
    ------
    SpaceError
        When neither can be downloaded.
    """
    if source == TEMPLATE:
        return []
    published = _published_transform(source)
    if published is not None:
        return [published]
    found = [_tf_image(tpl, suffix, desc) for tpl in (source, TEMPLATE)
             for suffix, desc in (("T1w", None), ("mask", "brain"))]
    if found[0] is None or found[2] is None:
        raise SpaceError(f"TemplateFlow could not provide tpl-{TEMPLATE}_from-{source}_mode-image"
                         f"_xfm.h5 nor the T1w templates of {source} and {TEMPLATE}; check the "
                         "network and the template name")
    return [p for p in found if p is not None]


__all__ = ["SpaceError", "SpaceTransform", "apply_space_transform", "log_jacobian_of",
           "prefetch_space", "space_transform", "templateflow_home"]
