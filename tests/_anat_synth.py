"""Synthetic native anatomical images with a known scanner <-> MNI mapping (workflow tests).

A native image is the 1 mm template seen through a known physical transform: scanner point
``y`` shows the template at ``S(y) = z + w(z)``, ``z = A^-1 y``, with ``A`` a rigid + scaling
affine (head position and size) and ``w`` a smooth sinusoidal displacement (anatomy). The
voxel grid (``N``) can be anisotropic, oblique and stored with flipped axes (LPS); none of
that changes the physical mapping, which the tests compare with the recovered one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from bids_genbrain.templates import get_template


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    rot = np.eye(4)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    rot[i, i] = rot[j, j] = c
    rot[i, j], rot[j, i] = -s, s
    return rot


@dataclass
class NativeTruth:
    """The true mapping of one synthetic image.

    Attributes
    ----------
    affine : ndarray (4, 4)
        ``A``: template (pre-warp) mm -> scanner mm.
    phases : ndarray (3, 2)
        Phases of the sinusoidal warp.
    warp_mm : float
        Warp amplitude (mm).
    """

    affine: np.ndarray
    phases: np.ndarray
    warp_mm: float

    def warp(self, z: np.ndarray) -> np.ndarray:
        """Displacement ``w(z)`` (mm) at points ``z`` of shape (3, n)."""
        return np.stack([
            self.warp_mm * np.sin(z[(k + 1) % 3] / 25.0 + self.phases[k, 0])
            * np.cos(z[(k + 2) % 3] / 30.0 + self.phases[k, 1])
            for k in range(3)
        ])

    def scanner_to_mni(self, y: np.ndarray) -> np.ndarray:
        """``S(y)``: MNI mm of scanner points ``y`` (RAS mm, shape (3, n))."""
        inv = np.linalg.inv(self.affine)
        z = inv[:3, :3] @ y + inv[:3, 3:4]
        return z + self.warp(z)


def t2_like(t1: np.ndarray) -> np.ndarray:
    """A T2w-like contrast of a skull-stripped T1w: CSF bright, WM dark, 0 outside."""
    inside = t1 > 0.05 * t1.max()
    return np.where(inside, 1.15 * t1.max() - t1, 0.0).astype(np.float32)


def make_native(path: Path | str, *, zooms=(3.0, 3.0, 3.0), rotation_deg=(8.0, -5.0, 6.0),
                scale=(1.05, 1.02, 1.08), shift=(4.0, -6.0, 10.0), warp_mm=3.0,
                oblique_deg=12.0, flip=True, contrast="T1w", noise=0.02, bias=0.2,
                seed=0) -> NativeTruth:
    """Write a synthetic native image and return its true mapping.

    Parameters
    ----------
    path : path-like
        Output NIfTI.
    zooms : tuple of float
        Voxel size (anisotropic allowed).
    rotation_deg, scale, shift
        Head pose and size (``A``).
    warp_mm : float
        Amplitude of the nonlinear anatomy warp.
    oblique_deg : float
        Rotation of the voxel grid about z (an oblique acquisition).
    flip : bool
        Store x and y reversed (LPS voxel order).
    contrast : {"T1w", "T2w"}
        Template intensities, or their T2-like inversion.
    noise, bias : float
        Gaussian noise (fraction of max) and a smooth multiplicative bias amplitude.
    seed : int
        Random seed (warp phases, noise).

    Returns
    -------
    NativeTruth
    """
    rng = np.random.default_rng(seed)
    tpl = nb.load(get_template(1.0))
    data = np.asanyarray(tpl.dataobj, dtype=np.float32)
    if contrast == "T2w":
        data = t2_like(data)
    affine = np.eye(4)
    affine[:3, 3] = shift
    for axis in range(3):
        affine = affine @ _rotation(axis, rotation_deg[axis])
    affine = affine @ np.diag([*scale, 1.0])
    truth = NativeTruth(affine, rng.uniform(0, 2 * np.pi, (3, 2)), float(warp_mm))

    zooms = np.asarray(zooms, dtype=float)
    shape = tuple(int(s) for s in np.ceil(np.array([190.0, 225.0, 190.0]) / zooms))
    grid = np.diag([*zooms, 1.0])
    if flip:
        grid[0, 0] *= -1
        grid[1, 1] *= -1
    grid = _rotation(2, oblique_deg) @ grid
    grid[:3, 3] = affine[:3, 3] - grid[:3, :3] @ ((np.array(shape) - 1) / 2.0)

    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    y = grid[:3, :3] @ ijk + grid[:3, 3:4]
    x = truth.scanner_to_mni(y)
    inv_tpl = np.linalg.inv(tpl.affine)
    vox = inv_tpl[:3, :3] @ x + inv_tpl[:3, 3:4]
    blurred = gaussian_filter(data, sigma=np.maximum(zooms - 1.0, 0.0) / 2.3548)
    image = map_coordinates(blurred, vox, order=1, mode="constant").reshape(shape)
    scale_max = float(image.max())
    image = image + rng.normal(0.0, noise * scale_max, shape) * (image > 0.01 * scale_max)
    field = 1.0 + bias * np.sin(np.linspace(0, np.pi, shape[0]))[:, None, None]
    out = nb.Nifti1Image(np.clip(image * field, 0, None).astype(np.float32), grid)
    out.set_qform(grid, code=1)
    out.set_sform(grid, code=1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out.to_filename(str(path))
    return truth


def mni_to_scanner_map(transforms: list[str | Path], resolution: float,
                       workdir: Path) -> np.ndarray:
    """The recovered MNI -> scanner mapping on the MNI grid, shape (X, Y, Z, 3), RAS mm.

    The ANTs transform list (e.g. ``[T1w->MNI .h5, T2w->T1w .mat]``) is composed into a
    displacement field on the template grid (ITK displacements are LPS).
    """
    import ants

    from bids_genbrain.templates import mni_grid

    ref = ants.image_read(str(get_template(resolution))).clone("float")
    field = ants.apply_transforms(ref, ref, [str(t) for t in transforms],
                                  compose=str(workdir / "truthcheck_"))
    disp = np.asanyarray(nb.load(field).dataobj).squeeze().astype(np.float64)
    disp[..., :2] *= -1.0
    shape, affine = mni_grid(resolution)
    ijk = np.moveaxis(np.indices(shape, dtype=np.float64), 0, -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3] + disp


def displacement_error(transforms: list[str | Path], truth: NativeTruth,
                       resolution: float, workdir: Path) -> np.ndarray:
    """Distance (mm) between the recovered and the true mapping on template brain voxels.

    For each template brain voxel ``x`` the error is ``|S(T(x)) - x|``, ``T`` the recovered
    MNI -> scanner mapping (:func:`mni_to_scanner_map`): how far from ``x`` the true mapping
    sends the native point that the pipeline assigned to ``x``.

    Returns
    -------
    ndarray, shape (n_brain_voxels,)
    """
    from bids_genbrain.templates import brain_mask, mni_grid

    mask = brain_mask(resolution)
    _, affine = mni_grid(resolution)
    x = affine[:3, :3] @ np.argwhere(mask).T + affine[:3, 3:4]
    y = mni_to_scanner_map(transforms, resolution, workdir)[mask].T
    return np.linalg.norm(truth.scanner_to_mni(y) - x, axis=0)


def true_mni_image(resolution: float, contrast: str = "T1w") -> np.ndarray:
    """The true MNI-space image on the output grid (what a perfect pipeline returns).

    The T2w truth is the 1 mm T2-like template resampled onto the grid the way templates
    are, so that partial-volume edges match the native simulation.
    """
    from bids_genbrain.templates import _resample_to_grid

    if contrast != "T2w":
        return np.asanyarray(nb.load(get_template(resolution)).dataobj, dtype=np.float32)
    tpl = nb.load(get_template(1.0))
    t2 = nb.Nifti1Image(t2_like(np.asanyarray(tpl.dataobj, dtype=np.float32)), tpl.affine)
    return _resample_to_grid(t2, resolution, order=1)
