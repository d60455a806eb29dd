"""MNI152NLin6Asym template access: TemplateFlow first, an offline fallback second.

GenBrain works on FSL's MNI152NLin6Asym grid (2 mm: 91 x 109 x 91, origin at voxel
(45, 63, 36)). This module is the single place that knows that grid, where the template
images come from, and how the brain mask is defined.

Sources, in order:

1. TemplateFlow (``tpl-MNI152NLin6Asym``), when its files are present with content in the
   TemplateFlow home, or can be downloaded. TemplateFlow writes a skeleton of 0-byte files on
   import, so a file counts only when it opens as an image.
2. An offline fallback built from the ICBM152 2009a nonlinear symmetric T1, GM and WM images
   that nilearn ships (``mni_icbm152_*_tal_nlin_sym_09a_converted``: 1 mm, 197 x 233 x 189,
   uint8), resampled onto FSL's grid. It is a different MNI152 template (TemplateFlow's
   MNI152NLin2009aSym, not MNI152NLin6Asym); its space name is kept as MNI152NLin6Asym
   because the grid is, and the source is recorded in :func:`template_source` so reports and
   sidecars can say so. It never stands in for a template in a template-to-template
   transform (:mod:`bids_genbrain.spaces`).

Set ``GENBRAIN_TEMPLATES=fallback`` to skip TemplateFlow (no 5 s network timeout), or
``GENBRAIN_TEMPLATES=templateflow`` to require it (an error when it cannot be had).
Grids other than 1 mm and 2 mm (e.g. 4 mm for tests) are resampled from the 1 mm image.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np

from .derivatives import TEMPLATE, res_label
from .utils import atomic_path, cache_dir

LOGGER = logging.getLogger(__name__)

_FSL_1MM_SHAPE = (182, 218, 182)
_FSL_ORIGIN_MM = np.array([90.0, -126.0, -72.0])
TISSUES = ("GM", "WM", "CSF")
_TF_STATE = {"failed": False}


class TemplateError(RuntimeError):
    """A template cannot be obtained from TemplateFlow nor the offline fallback."""


def mni_grid(resolution: float = 2.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of FSL's MNI152 grid at ``resolution`` mm.

    Parameters
    ----------
    resolution : float
        Isotropic voxel size in mm (1 and 2 are FSL's; any positive value gives a grid with
        the same origin and field of view).

    Returns
    -------
    shape : tuple of int
        ``(91, 109, 91)`` at 2 mm, ``(182, 218, 182)`` at 1 mm.
    affine : ndarray, shape (4, 4)
        Voxel to MNI mm (LAS storage, as FSL: x flips).
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    shape = tuple(int(np.ceil(s / resolution)) for s in _FSL_1MM_SHAPE)
    affine = np.diag([-resolution, resolution, resolution, 1.0])
    affine[:3, 3] = _FSL_ORIGIN_MM
    return shape, affine  # type: ignore[return-value]


def _valid_image(path: Path | str | None) -> bool:
    if path is None:
        return False
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        nb.load(path).header  # noqa: B018 - opening validates the header
    except Exception:  # noqa: BLE001 - any unreadable file is not a template
        return False
    return True


_TF_QUERIES = {
    ("T1w", None): dict(suffix="T1w", desc=None),
    ("mask", None): dict(suffix="mask", desc="brain"),
    ("probseg", "GM"): dict(suffix="probseg", label="GM"),
    ("probseg", "WM"): dict(suffix="probseg", label="WM"),
    ("probseg", "CSF"): dict(suffix="probseg", label="CSF"),
}


def _templateflow_get(resolution: int, suffix: str, label: str | None) -> Path | None:
    """A TemplateFlow file with content, or None (offline, absent, skeleton only)."""
    mode = os.environ.get("GENBRAIN_TEMPLATES", "auto").lower()
    if mode == "fallback" or _TF_STATE["failed"]:
        return None
    try:
        import templateflow.api as tflow

        path = tflow.get(TEMPLATE, resolution=resolution, **_TF_QUERIES[(suffix, label)])
    except Exception as exc:  # noqa: BLE001 - network and index errors alike
        LOGGER.info("TemplateFlow unavailable (%s); using the offline fallback.", exc)
        _TF_STATE["failed"] = True  # do not wait on the network again in this process
        return None
    if isinstance(path, list):
        path = path[0] if path else None
    return Path(path) if _valid_image(path) else None


def _nilearn_icbm(kind: str) -> nb.Nifti1Image:
    import nilearn

    data_dir = Path(nilearn.__file__).parent / "datasets" / "data"
    path = data_dir / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    if not _valid_image(path):
        raise TemplateError(
            f"offline template fallback missing: {path}; reinstall nilearn or allow TemplateFlow"
            " downloads (unset GENBRAIN_TEMPLATES)"
        )
    return nb.load(path)


def _resample_to_grid(img: nb.Nifti1Image, resolution: float, order: int) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    shape, affine = mni_grid(resolution)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    src = np.linalg.inv(img.affine)
    vox = src[:3, :3] @ xyz + src[:3, 3:4]
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    if resolution > 1.0 and order > 0:
        # anti-alias with a centred Gaussian (FWHM sqrt(r^2 - r_in^2) voxels); an even-sized
        # box filter would shift the image by half a source voxel
        from scipy.ndimage import gaussian_filter

        ratio = resolution / float(np.abs(img.affine[0, 0]))
        sigma = np.sqrt(max(ratio**2 - 1.0, 0.0)) / 2.3548
        data = gaussian_filter(data, sigma=sigma, mode="constant")
    out = map_coordinates(data, vox, order=order, mode="constant", cval=0.0)
    return out.reshape(shape)


def _fallback_arrays(resolution: float) -> dict[tuple[str, str | None], np.ndarray]:
    """Template T1w, brain mask and tissue priors on the FSL grid from nilearn's ICBM152."""
    t1 = _resample_to_grid(_nilearn_icbm("t1"), resolution, order=1)
    gm = _resample_to_grid(_nilearn_icbm("gm"), resolution, order=1) / 255.0
    wm = _resample_to_grid(_nilearn_icbm("wm"), resolution, order=1) / 255.0
    from scipy.ndimage import binary_closing, binary_fill_holes

    mask = binary_fill_holes(binary_closing(t1 > 0.2 * 255, iterations=2))
    gm = np.clip(gm, 0, 1) * mask
    wm = np.clip(wm, 0, 1) * mask
    csf = np.clip(1.0 - gm - wm, 0, 1) * mask
    total = np.maximum(gm + wm + csf, 1e-6)
    return {
        ("T1w", None): (t1 / 255.0 * 10000.0 * mask).astype(np.float32),
        ("mask", None): mask.astype(np.uint8),
        ("probseg", "GM"): (gm / total).astype(np.float32),
        ("probseg", "WM"): (wm / total).astype(np.float32),
        ("probseg", "CSF"): (csf / total).astype(np.float32),
    }


def _fallback_name(resolution: float, suffix: str, label: str | None) -> str:
    ents = [f"tpl-{TEMPLATE}", f"res-{res_label(resolution)}"]
    if label:
        ents.append(f"label-{label}")
    if suffix == "mask":
        ents.append("desc-brain")
    return "_".join(ents) + f"_{suffix}.nii.gz"


def _template_caches() -> list[Path]:
    """Folders of derived template files, in lookup order.

    The project cache first; then a per-user temporary folder, written when the cache is
    read-only (a container image's prebuilt cache, a shared cluster install).
    """
    user = Path(tempfile.gettempdir()) / f"bids_genbrain-{os.getuid()}" / "templates"
    return [cache_dir() / "templates", user]


def _cached_template(folder: str, name: str) -> Path | None:
    for root in _template_caches():
        if _valid_image(root / folder / name):
            return root / folder / name
    return None


def _writable_folder(folder: str) -> Path:
    for root in _template_caches():
        try:
            (root / folder).mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root / folder, os.W_OK):
            return root / folder
    raise TemplateError(f"no writable folder for derived templates ({_template_caches()}); "
                        "set GENBRAIN_CACHE_DIR to a writable folder")


def _fallback_get(resolution: float, suffix: str, label: str | None) -> Path:
    folder = f"fallback-v2-res-{res_label(resolution)}"
    found = _cached_template(folder, _fallback_name(resolution, suffix, label))
    if found is not None:
        return found
    target = _writable_folder(folder)
    _, affine = mni_grid(resolution)
    for (suf, lab), arr in _fallback_arrays(resolution).items():
        img = nb.Nifti1Image(arr, affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(affine, code=4)
        img.header.set_sform(affine, code=4)
        with atomic_path(target / _fallback_name(resolution, suf, lab)) as tmp:
            img.to_filename(tmp)
    return target / _fallback_name(resolution, suffix, label)


def _resampled_tf_get(resolution: float, suffix: str, label: str | None) -> Path | None:
    """TemplateFlow's 1 mm image resampled to a non-standard grid, cached."""
    source = _templateflow_get(1, suffix, label)
    if source is None:
        return None
    folder = f"templateflow-v2-res-{res_label(resolution)}"
    found = _cached_template(folder, _fallback_name(resolution, suffix, label))
    if found is not None:
        return found
    target = _writable_folder(folder) / _fallback_name(resolution, suffix, label)
    order = 0 if suffix == "mask" else 1
    arr = _resample_to_grid(nb.load(source), resolution, order=order)
    if suffix == "mask":
        arr = (arr > 0.5).astype(np.uint8)
    img = nb.Nifti1Image(arr.astype(np.float32 if suffix != "mask" else np.uint8),
                         mni_grid(resolution)[1])
    with atomic_path(target) as tmp:
        img.to_filename(tmp)
    return target


def get_template(resolution: float = 2.0, *, suffix: str = "T1w", label: str | None = None) -> Path:
    """Path to a template image on FSL's MNI grid.

    Parameters
    ----------
    resolution : float
        Voxel size in mm (see :func:`mni_grid`).
    suffix : {"T1w", "mask", "probseg"}
        The T1w template, the brain mask, or a tissue prior.
    label : {"GM", "WM", "CSF"}, optional
        Tissue, required for ``suffix="probseg"``.

    Returns
    -------
    pathlib.Path
        A NIfTI file with content (never a TemplateFlow 0-byte skeleton).

    Raises
    ------
    TemplateError
        When ``GENBRAIN_TEMPLATES=templateflow`` and TemplateFlow cannot provide the file, or
        when the offline fallback data are missing.
    """
    if (suffix, label) not in _TF_QUERIES:
        raise ValueError(f"unknown template image suffix={suffix!r} label={label!r}")
    mode = os.environ.get("GENBRAIN_TEMPLATES", "auto").lower()
    standard = float(resolution) in (1.0, 2.0)
    path = (
        _templateflow_get(int(resolution), suffix, label)
        if standard
        else _resampled_tf_get(resolution, suffix, label)
    )
    if path is not None:
        return path
    if mode == "templateflow":
        raise TemplateError(
            f"TemplateFlow could not provide {TEMPLATE} res-{resolution:g} {suffix}"
            f"{' ' + label if label else ''}; run with network once (or set TEMPLATEFLOW_HOME to"
            " a pre-fetched copy), or unset GENBRAIN_TEMPLATES to use the offline fallback"
        )
    return _fallback_get(resolution, suffix, label)


def template_source() -> str:
    """Where templates come from in this process: ``"templateflow"`` or ``"nilearn-icbm152"``.

    Returns
    -------
    str
        ``"templateflow"`` when the 2 mm T1w template is served by TemplateFlow.
    """
    path = get_template(2.0, suffix="T1w")
    return "nilearn-icbm152" if path.parent.name.startswith("fallback-") else "templateflow"


def load_template(resolution: float = 2.0, *, suffix: str = "T1w",
                  label: str | None = None) -> nb.Nifti1Image:
    """Load :func:`get_template` as an image (see there for parameters)."""
    return nb.load(get_template(resolution, suffix=suffix, label=label))


@functools.lru_cache(maxsize=8)
def brain_mask(resolution: float = 2.0) -> np.ndarray:
    """The template brain mask as a boolean array on :func:`mni_grid` (``resolution``).

    Parameters
    ----------
    resolution : float
        Voxel size in mm.

    Returns
    -------
    ndarray of bool, shape ``mni_grid(resolution)[0]``
        Read-only; about 228k voxels at 2 mm.
    """
    img = load_template(resolution, suffix="mask")
    mask = np.asanyarray(img.dataobj) > 0.5
    shape, _ = mni_grid(resolution)
    if mask.shape != shape:
        raise TemplateError(f"template mask has shape {mask.shape}, expected {shape}")
    mask.setflags(write=False)
    return mask


def prefetch(resolutions: tuple[float, ...] = (1.0, 2.0), *,
             source: str = "templateflow") -> list[Path]:
    """Make every template file the app uses at ``resolutions`` present on disk.

    Used at container build time (so the image runs offline) and by ``genbrain
    fetch-templates`` on a cluster's login node.

    Parameters
    ----------
    resolutions : tuple of float
        Grids in mm; 1 and 2 are TemplateFlow's, others are resampled from its 1 mm images
        (or built by the fallback) and cached.
    source : {"templateflow", "fallback"}
        Download from TemplateFlow (needs network once), or build the offline fallback from
        nilearn's ICBM152 (no network; see the module docstring).

    Returns
    -------
    list of pathlib.Path
        The files, all with content.

    Raises
    ------
    TemplateError
        When a TemplateFlow file cannot be downloaded.
    """
    if source not in ("templateflow", "fallback"):
        raise ValueError(f"source must be 'templateflow' or 'fallback', got {source!r}")
    previous = os.environ.get("GENBRAIN_TEMPLATES")
    os.environ["GENBRAIN_TEMPLATES"] = source
    _TF_STATE["failed"] = False
    try:
        return [get_template(res, suffix=suffix, label=label)
                for res in resolutions for (suffix, label) in _TF_QUERIES]
    finally:
        if previous is None:
            os.environ.pop("GENBRAIN_TEMPLATES")
        else:
            os.environ["GENBRAIN_TEMPLATES"] = previous
