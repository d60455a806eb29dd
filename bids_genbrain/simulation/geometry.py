"""Where a subject's anatomy ends up in the scanner, and the native image grid.

The true mapping of an MNI point ``x`` (mm) to the scanner world of one image (RAS mm, the
world of that image's NIfTI affine) is::

    subject = A (x + u(x))            A: diagonal size scaling, u: smooth B-spline displacement
    scanner = R subject + t           R, t: the head's rigid pose in that acquisition

(:class:`Deformation` for the first line, :class:`Pose` for the second). The native grid
(:class:`ImageGeometry`) has its own voxel sizes, axis order and flips, and may be tilted
(oblique) against the scanner axes. Rendering a native image needs the inverse of the first
line; it is solved once per subject-session on the knot grid (fixed point iteration) and
interpolated linearly, which is accurate to about 0.05 mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nb
import numpy as np
from scipy.ndimage import spline_filter
from scipy.spatial.transform import Rotation

from .config import Acquisition
from .fields import BSplineField, sample

INVERSE_SPACING_MM = 2.0
"""Grid spacing of the tabulated inverse displacement (linear interpolation in between)."""

ORIENTATIONS = ("RAS", "LAS", "LPS", "RPI", "LPI", "PIR", "PIL", "ASR", "AIL", "LIP", "RIA", "LSA",
                "SRA", "IPL")
"""Axis codes native images are drawn from (axial, sagittal, coronal and odd ones)."""


def det_identity_plus(jacobian: np.ndarray) -> np.ndarray:
    """``det(I + J)`` at every grid point of ``jacobian`` (3, 3, ...), by cofactors."""
    j = jacobian.astype(np.float64) + np.eye(3).reshape((3, 3) + (1,) * (jacobian.ndim - 2))
    return (j[0, 0] * (j[1, 1] * j[2, 2] - j[1, 2] * j[2, 1])
            - j[0, 1] * (j[1, 0] * j[2, 2] - j[1, 2] * j[2, 0])
            + j[0, 2] * (j[1, 0] * j[2, 1] - j[1, 1] * j[2, 0]))


def min_det(jacobian: np.ndarray) -> float:
    """Smallest determinant of ``I + jacobian`` over a grid; ``jacobian`` is (3, 3, ...)."""
    return float(det_identity_plus(jacobian).min())


@dataclass
class Deformation:
    """MNI -> subject mapping ``y = A (x + u(x))`` of one subject-session.

    Parameters
    ----------
    scale : ndarray, shape (3,)
        Diagonal of ``A``.
    displacement : BSplineField
        ``u`` (3 components, mm).
    region : ndarray of bool
        Knots (of ``displacement``'s grid) where :meth:`pullback` must be exact: the head
        and a margin. Elsewhere (air) the inverse is only approximated to first order.
    """

    scale: np.ndarray
    displacement: BSplineField
    region: np.ndarray
    _inverse: np.ndarray | None = field(default=None, repr=False)
    _inverse_origin: np.ndarray | None = field(default=None, repr=False)

    def forward(self, points_mm: np.ndarray) -> np.ndarray:
        """Subject mm of MNI points, shape (3, N) -> (3, N)."""
        u = self.displacement.at_points(points_mm)
        return (self.scale[:, None] * (points_mm + u)).astype(np.float32)

    def forward_grid(self, axes_mm: tuple[np.ndarray, ...]) -> np.ndarray:
        """Subject mm of every point of an axis-aligned MNI grid, shape (3, X, Y, Z)."""
        u = self.displacement.on_grid(axes_mm)
        grid = np.stack(np.meshgrid(*axes_mm, indexing="ij")).astype(np.float32)
        return self.scale[:, None, None, None].astype(np.float32) * (grid + u)

    def log_jacobian_grid(self, axes_mm: tuple[np.ndarray, ...]) -> np.ndarray:
        """``log det`` of the mapping's Jacobian on an axis-aligned MNI grid (analytic).

        Returns
        -------
        ndarray, shape (X, Y, Z), float32
            ``log(det A) + log det(I + grad u)``.

        Raises
        ------
        ValueError
            The mapping folds (det <= 0.05) somewhere on the grid.
        """
        det = det_identity_plus(self.displacement.jacobian_on_grid(axes_mm))
        if det.min() <= 0.05:
            raise ValueError("the simulated deformation folds (det J <= 0.05); lower"
                             " deformation_mm or the ventricle effect")
        return (np.log(det) + np.log(self.scale).sum()).astype(np.float32)

    def _inverse_displacement(self) -> np.ndarray:
        """``w`` on the inverse grid, with ``x = z + w(z)`` solving ``x + u(x) = z``.

        Solved at the knots of ``region`` by fixed-point iteration ``x <- z - u(x)`` (a
        contraction for the fields simulated here) until every point moves less than
        0.005 mm (elsewhere ``w = -u``). ``w`` is then interpolated with cubic B-splines onto
        a grid of ``INVERSE_SPACING_MM`` over the region's bounding box, from which
        :meth:`pullback` interpolates linearly.
        """
        if self._inverse is None:
            field_u = self.displacement
            axes = field_u.knot_axes()
            z = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).astype(np.float64)
            table = field_u.on_grid(axes)
            x = z - table.reshape(3, -1)
            inside = np.flatnonzero(self.region)
            x_in, z_in = x[:, inside], z[:, inside]
            _fixed_point(x_in, z_in, field_u.at_points, tolerance=0.005)
            x[:, inside] = x_in
            values = (x - z).reshape(table.shape)
            coef = np.stack([spline_filter(v, order=3, mode="mirror") for v in values])
            spline = BSplineField(coef, field_u.origin_mm, field_u.spacing_mm)
            knots = np.argwhere(self.region)
            fine = tuple(np.arange(axes[d][knots[:, d].min()], axes[d][knots[:, d].max()] + 1e-6,
                                   INVERSE_SPACING_MM) for d in range(3))
            self._inverse_origin = np.array([a[0] for a in fine])
            self._inverse = spline.on_grid(fine)
        return self._inverse

    def pullback(self, subject_mm: np.ndarray) -> np.ndarray:
        """MNI mm of subject points (the inverse mapping), shape (3, N) -> (3, N)."""
        inverse = self._inverse_displacement()
        z = subject_mm / self.scale[:, None]
        index = (z - self._inverse_origin[:, None]) / INVERSE_SPACING_MM
        w = np.stack([sample(c, index, order=1, mode="nearest")
                      for c in inverse])
        return (z + w).astype(np.float32)


def _fixed_point(x: np.ndarray, z: np.ndarray, displacement, tolerance: float) -> None:
    """Iterate ``x <- z - displacement(x)`` in place, per point until its step < tolerance."""
    active = np.arange(x.shape[1])
    for _ in range(100):
        residual = x[:, active] + displacement(x[:, active]) - z[:, active]
        x[:, active] -= residual
        active = active[np.abs(residual).max(0) >= tolerance]
        if active.size == 0:
            return
    raise ValueError("the simulated deformation could not be inverted")


@dataclass(frozen=True)
class Pose:
    """Rigid placement of the head in the scanner: ``scanner = R subject + t``."""

    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, subject_mm: np.ndarray) -> np.ndarray:
        """Scanner mm of subject points (3, ...)."""
        flat = subject_mm.reshape(3, -1)
        out = self.rotation @ flat + self.translation[:, None]
        return out.reshape(subject_mm.shape).astype(np.float32)

    def describe(self) -> dict[str, list[float]]:
        """Rotation (Euler xyz degrees) and translation (mm) for sidecars."""
        angles = Rotation.from_matrix(self.rotation).as_euler("xyz", degrees=True)
        return {"RotationDegreesXYZ": [round(float(a), 4) for a in angles],
                "TranslationMM": [round(float(a), 4) for a in self.translation]}


@dataclass(frozen=True)
class ImageGeometry:
    """A native image grid: shape and voxel -> scanner (RAS mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    voxel_size: tuple[float, float, float]
    axcodes: str
    oblique_deg: float

    def describe(self) -> dict[str, object]:
        """Geometry facts for sidecars."""
        return {"Shape": list(self.shape), "VoxelSizeMM": [round(v, 4) for v in self.voxel_size],
                "AxisCodes": self.axcodes,
                "ObliqueDegrees": round(self.oblique_deg, 4)}


def draw_pose(rng: np.random.Generator, acq: Acquisition) -> Pose:
    """A random head pose: pitch up to ``max_rotation_deg``, roll and yaw up to half of it."""
    limit = acq.max_rotation_deg
    angles = rng.uniform(-1, 1, 3) * np.array([limit, limit / 2, limit / 2])
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    translation = rng.uniform(-1, 1, 3) * acq.max_translation_mm
    return Pose(rotation, translation)


def _axis_matrix(codes: str) -> np.ndarray:
    """Signed permutation: column j is the world direction of voxel axis j."""
    ornt = nb.orientations.axcodes2ornt(tuple(codes))
    out = np.zeros((3, 3))
    for j, (axis, flip) in enumerate(ornt):
        out[int(axis), j] = flip
    return out


def draw_geometry(rng: np.random.Generator, acq: Acquisition, head_scanner_mm: np.ndarray,
                  brain_scanner_mm: np.ndarray) -> ImageGeometry:
    """A random native grid that holds the brain (and most of the head).

    Parameters
    ----------
    rng : numpy.random.Generator
    acq : Acquisition
    head_scanner_mm, brain_scanner_mm : ndarray, shape (3, N)
        Sample points of the head and the brain in scanner mm (for the field of view).

    Returns
    -------
    ImageGeometry
    """
    lo, hi = acq.voxel_size_range
    if rng.uniform() < acq.anisotropic_fraction:
        inplane = rng.uniform(lo, (lo + hi) / 2)
        voxel = np.array([inplane, inplane, rng.uniform(inplane, hi)])
    else:
        voxel = np.full(3, rng.uniform(lo, hi))
    codes = ORIENTATIONS[rng.integers(len(ORIENTATIONS))]
    oblique = 0.0
    tilt = np.eye(3)
    if rng.uniform() < acq.oblique_fraction:
        axis = rng.standard_normal(3)
        oblique = float(rng.uniform(0.2, 1.0) * acq.max_oblique_deg)
        tilt = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(oblique)).as_matrix()
    directions = tilt @ _axis_matrix(codes)
    head = directions.T @ head_scanner_mm
    brain = directions.T @ brain_scanner_mm
    low = head.min(1) - 6.0
    high = head.max(1) + 6.0
    if acq.fov_crop:
        room_low = np.maximum(brain.min(1) - 4.0 - low, 0.0)
        room_high = np.maximum(high - brain.max(1) - 4.0, 0.0)
        low = low + rng.uniform(0, 0.7, 3) * room_low
        high = high - rng.uniform(0, 0.7, 3) * room_high
    shape = tuple(int(np.ceil((high[d] - low[d]) / voxel[d])) for d in range(3))
    affine = np.eye(4)
    affine[:3, :3] = directions @ np.diag(voxel)
    affine[:3, 3] = directions @ (low + voxel / 2)
    return ImageGeometry(shape, affine, tuple(float(v) for v in voxel), codes, oblique)


def render(source: np.ndarray, source_affine: np.ndarray, geometry: ImageGeometry, pose: Pose,
           deformation: Deformation) -> np.ndarray:
    """Resample an MNI-space (anatomy grid) image into a native grid.

    Each native voxel centre goes scanner -> subject (inverse pose) -> MNI (inverse
    deformation) -> anatomy-grid index; the source is interpolated linearly there.

    Parameters
    ----------
    source : ndarray
        Image on the anatomy grid.
    source_affine : ndarray, shape (4, 4)
    geometry : ImageGeometry
    pose : Pose
    deformation : Deformation

    Returns
    -------
    ndarray, shape ``geometry.shape``, float32
    """
    to_subject = np.eye(4)
    to_subject[:3, :3] = pose.rotation.T
    to_subject[:3, 3] = -pose.rotation.T @ pose.translation
    vox_to_subject = to_subject @ geometry.affine
    to_source = np.linalg.inv(source_affine)
    out = np.empty(geometry.shape, dtype=np.float32)
    nx, ny, nz = geometry.shape
    slab = max(1, (1 << 19) // (ny * nz))  # bounded memory: about 0.5 M voxels at a time
    jk = np.indices((ny, nz), dtype=np.float32).reshape(2, -1)
    for start in range(0, nx, slab):
        stop = min(start + slab, nx)
        i = np.repeat(np.arange(start, stop, dtype=np.float32), ny * nz)
        ijk = np.vstack([i, np.tile(jk, stop - start)])
        subject = vox_to_subject[:3, :3] @ ijk + vox_to_subject[:3, 3:4]
        mni = deformation.pullback(subject)
        index = to_source[:3, :3] @ mni + to_source[:3, 3:4]
        out[start:stop] = sample(source, index, order=1).reshape(stop - start, ny, nz)
    return out
