"""Subjects' anatomy in MNI space: template tissue maps with planted effects and a head shell.

The template (:func:`bids_genbrain.templates.get_template` GM/WM/CSF probabilities) is placed
on a padded MNI grid (the *anatomy grid*: FSL's grid at ``anatomy_resolution`` with room for
the synthetic skull and scalp). A subject's tissue maps on that grid are the template's with
GM density effects (age, diagnosis, score, smooth individual variation); what GM loses
becomes CSF. Outside the brain mask a layered shell (extra-cerebral CSF, skull, scalp, each of
subject-specific thickness) gives brain extraction work to do. Intensities are linear mixtures
of per-tissue values, so every contrast is a weighted sum of the same maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates

from ..templates import TISSUES, brain_mask, load_template, mni_grid
from .config import Effects, Region
from .fields import BSplineField

PAD_MM = 24.0
"""Margin around FSL's MNI box on the anatomy grid (room for skull and scalp)."""
KNOT_SPACING_MM = 4.0
"""Knot spacing of every smooth random field (independent of the grids)."""
SHELL_LAYERS = ("CSF", "bone", "scalp")
MAX_SHELL_MM = 3.0 + 7.0 + 8.0
"""Thickest possible shell: extra-cerebral CSF + skull + scalp."""

BASE_INTENSITY = {
    # relative intensities of GM, WM, CSF, bone (skull), scalp (fat/skin), 3 T
    "T1w": {"GM": 0.62, "WM": 1.0, "CSF": 0.22, "bone": 0.08, "scalp": 0.95},
    "T2w": {"GM": 0.50, "WM": 0.36, "CSF": 1.0, "bone": 0.06, "scalp": 0.55},
    "FLAIR": {"GM": 0.66, "WM": 0.50, "CSF": 0.08, "bone": 0.05, "scalp": 0.62},
}


def region_weight(points_mm: np.ndarray, regions: tuple[Region, ...]) -> np.ndarray:
    """Soft membership (0..1) of points in the union of spherical regions.

    Parameters
    ----------
    points_mm : ndarray, shape (3, ...)
        MNI mm coordinates.
    regions : tuple of Region

    Returns
    -------
    ndarray, shape (...), float32
        ``min(1, sum of logistic sphere weights)`` (edge width 1.5 mm); exactly 0 where the
        sum is below 0.001 (beyond about 10 mm outside a sphere).
    """
    total = np.zeros(points_mm.shape[1:], dtype=np.float32)
    shape = (3,) + (1,) * (points_mm.ndim - 1)
    for region in regions:
        centre = np.asarray(region.center_mm, dtype=np.float32).reshape(shape)
        dist = np.sqrt(((points_mm - centre) ** 2).sum(0))
        logistic = 1.0 / (1.0 + np.exp(np.clip((dist - region.radius_mm) / 1.5, -50, 50)))
        total += logistic.astype(np.float32)
    return np.where(total < 1e-3, 0.0, np.minimum(total, 1.0)).astype(np.float32)


def grid_axes_mm(shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, ...]:
    """MNI mm coordinate along each axis of an axis-aligned (diagonal) grid."""
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise ValueError("grid_axes_mm needs an axis-aligned affine")
    return tuple(affine[d, d] * np.arange(shape[d]) + affine[d, 3] for d in range(3))


def grid_points_mm(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """MNI mm coordinates of every voxel, shape (3, X, Y, Z), float32."""
    axes = grid_axes_mm(shape, affine)
    return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)


def age_pattern(points_mm: np.ndarray, effects: Effects) -> np.ndarray:
    """Fractional GM loss per decade: 1.5x the mean frontally, 0.5x occipitally."""
    y = points_mm[1]
    pattern = effects.age_gm_loss_per_decade * (1.0 + 0.5 * np.clip(y / 70.0, -1, 1))
    return pattern.astype(np.float32)


def resample_to_grid(data: np.ndarray, src_affine: np.ndarray, shape: tuple[int, int, int],
                     affine: np.ndarray) -> np.ndarray:
    """Resample a volume onto an axis-aligned grid, averaging over the target voxel first.

    A Gaussian of FWHM ``sqrt(target^2 - source^2)`` (when the target voxels are larger)
    stands in for the target voxel's footprint; it is centred, so no half-voxel shift.
    Target voxels on source voxel centres (FSL's grids at multiples of each other) are
    picked exactly; other grids are interpolated linearly.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z)
    src_affine, affine : ndarray, shape (4, 4)
        Voxel to mm of the source and target grids.
    shape : tuple of int
        Target shape.

    Returns
    -------
    ndarray, shape ``shape``, float32 (zero outside the source)
    """
    src_vox = float(np.abs(src_affine[0, 0]))
    dst_vox = float(np.abs(affine[0, 0]))
    sigma = np.sqrt(max(dst_vox**2 - src_vox**2, 0.0)) / 2.3548 / src_vox
    data, src_affine = _crop_nonzero(data, src_affine, margin=int(np.ceil(3 * sigma)) + 2)
    if dst_vox > src_vox * 1.01:
        data = gaussian_filter(data.astype(np.float32), sigma, mode="constant", truncate=3.0)
    mapping = np.linalg.inv(src_affine) @ affine
    step = np.diag(mapping)[:3]
    offset = mapping[:3, 3]
    aligned = (np.allclose(mapping[:3, :3], np.diag(step)) and np.allclose(step, np.rint(step))
               and np.all(np.rint(step) >= 1) and np.allclose(offset, np.rint(offset)))
    if aligned:
        out = np.zeros(shape, dtype=np.float32)
        index = [np.rint(offset[d] + step[d] * np.arange(shape[d])).astype(int) for d in range(3)]
        keep = [(ix >= 0) & (ix < data.shape[d]) for d, ix in enumerate(index)]
        out[np.ix_(*keep)] = data[np.ix_(*[ix[k] for ix, k in zip(index, keep)])]
        return out
    coords = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = mapping[:3, :3] @ coords + mapping[:3, 3:4]
    out = map_coordinates(data, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    return out.reshape(shape).astype(np.float32)


@dataclass
class TissueMaps:
    """One subject-session's tissue probabilities on the anatomy grid.

    Attributes
    ----------
    brain : dict of str to ndarray
        ``GM``, ``WM``, ``CSF`` on the template's brain voxels (flat, float32).
    shell : dict of str to ndarray
        ``CSF``, ``bone``, ``scalp`` on the shell voxels (flat, float32).
    """

    brain: dict[str, np.ndarray]
    shell: dict[str, np.ndarray]


class TemplateAnatomy:
    """The template on the anatomy grid, shared by all subjects of a run.

    Parameters
    ----------
    resolution : float
        Anatomy grid voxel size (mm).
    effects : Effects
        Planted effects (their spatial patterns are precomputed here).
    skull : bool
        Build the head shell.
    """

    def __init__(self, resolution: float, effects: Effects, *, skull: bool):
        self.resolution = float(resolution)
        self.effects = effects
        self.skull = skull
        mni_shape, mni_affine = mni_grid(self.resolution)
        pad = int(np.ceil(PAD_MM / self.resolution))
        self.pad = pad
        self.shape = tuple(s + 2 * pad for s in mni_shape)
        shift = np.eye(4)
        shift[:3, 3] = -pad
        self.affine = mni_affine @ shift
        inner = tuple(slice(pad, pad + s) for s in mni_shape)

        mask = np.zeros(self.shape, dtype=bool)
        mask[inner] = brain_mask(self.resolution)
        self.brain_index = np.flatnonzero(mask)
        self.template: dict[str, np.ndarray] = {}
        for tissue in TISSUES:
            full = np.zeros(self.shape, dtype=np.float32)
            full[inner] = np.asanyarray(load_template(self.resolution, suffix="probseg",
                                                      label=tissue).dataobj, dtype=np.float32)
            self.template[tissue] = np.clip(full.ravel()[self.brain_index], 0, 1)

        points = self._points(self.brain_index)
        self.age_map = age_pattern(points, effects)
        self.diagnosis_map = effects.diagnosis_gm_loss * region_weight(
            points, effects.diagnosis_regions)
        self.score_map = effects.score_gm_effect * region_weight(points, effects.score_regions)

        dist = distance_transform_edt(~mask, sampling=self.resolution).astype(np.float32)
        head = (dist > 0) & (dist < MAX_SHELL_MM + self.resolution)
        self.shell_index = np.flatnonzero(head) if skull else np.zeros(0, dtype=np.int64)
        self.shell_distance = dist.ravel()[self.shell_index]
        extent = mask | head if skull else mask
        self.head_points = self._points(np.flatnonzero(_subsample(extent, self.resolution)))
        self.brain_points = self._points(np.flatnonzero(_subsample(mask, self.resolution)))
        self.bounds_mm = _bounds(self.shape, self.affine)
        self.ventricle_field = self._ventricle_field(mask)
        self.knot_region = self._knot_region(dist)
        self.ventricle_knot_jacobian = self.ventricle_field.jacobian_on_grid(
            self.ventricle_field.knot_axes())

    def _points(self, flat_index: np.ndarray) -> np.ndarray:
        ijk = np.stack(np.unravel_index(flat_index, self.shape)).astype(np.float32)
        return (self.affine[:3, :3] @ ijk + self.affine[:3, 3:4]).astype(np.float32)

    def knot_bounds(self) -> np.ndarray:
        """Region (3, 2) in mm every random field must cover: the anatomy grid."""
        return self.bounds_mm

    def _knot_region(self, dist: np.ndarray) -> np.ndarray:
        """Knots within 12 mm of the head (brain and shell): where warps must invert exactly."""
        knots = BSplineField.zeros(n_components=1, bounds_mm=self.bounds_mm,
                                   spacing_mm=KNOT_SPACING_MM)
        grid = np.stack(np.meshgrid(*knots.knot_axes(), indexing="ij")).reshape(3, -1)
        inv = np.linalg.inv(self.affine)
        index = inv[:3, :3] @ grid + inv[:3, 3:4]
        outside = map_coordinates(dist, index, order=1, mode="nearest")
        reach = (MAX_SHELL_MM if self.skull else 0.0) + 12.0
        return (outside <= reach).reshape(knots.coefficients.shape[1:])

    def _ventricle_field(self, mask: np.ndarray) -> BSplineField:
        """Unit outward displacement around the ventricles (largest displacement 1 mm).

        Ventricles are the template's CSF (p > 0.5) deep in a central box; the field is
        minus the gradient of their Gaussian-smoothed indicator, on the knot grid.
        """
        template = BSplineField.zeros(n_components=3, bounds_mm=self.bounds_mm,
                                      spacing_mm=KNOT_SPACING_MM)
        axes = template.knot_axes()
        knots = np.stack(np.meshgrid(*axes, indexing="ij"))
        csf = np.zeros(self.shape, dtype=np.float32)
        csf.ravel()[self.brain_index] = self.template["CSF"]
        depth = distance_transform_edt(mask, sampling=self.resolution)
        central = ((np.abs(knots[0]) < 30) & (knots[1] > -50) & (knots[1] < 32)
                   & (knots[2] > -4) & (knots[2] < 32))
        index = np.linalg.inv(self.affine)[:3, :3] @ knots.reshape(3, -1) + np.linalg.inv(
            self.affine)[:3, 3:4]
        csf_k = map_coordinates(csf, index, order=1).reshape(knots.shape[1:])
        depth_k = map_coordinates(depth, index, order=1).reshape(knots.shape[1:])
        ventricles = ((csf_k > 0.5) & (depth_k > 12.0) & central).astype(np.float64)
        potential = gaussian_filter(ventricles, 6.0 / KNOT_SPACING_MM)
        coef = -np.stack(np.gradient(potential, KNOT_SPACING_MM))
        field = BSplineField(coef, template.origin_mm, KNOT_SPACING_MM)
        peak = float(np.sqrt((field.on_grid(axes) ** 2).sum(0)).max())
        return field * (1.0 / peak if peak > 0 else 0.0)

    def tissue_maps(self, *, age: float, patient: bool, score_z: float,
                    gm_field: BSplineField, wm_field: BSplineField,
                    shell_mm: tuple[float, float, float]) -> TissueMaps:
        """A subject-session's tissue probabilities.

        Parameters
        ----------
        age : float
            Age at the session (years).
        patient : bool
            Diagnosis.
        score_z : float
            Continuous score in control SD units.
        gm_field, wm_field : BSplineField
            The subject's smooth log-density variation of GM and WM (1 component each).
        shell_mm : tuple of float
            Thickness of extra-cerebral CSF, skull and scalp.

        Returns
        -------
        TissueMaps
        """
        eff = self.effects
        loss = self.age_map * ((age - eff.age_reference) / 10.0) - self.score_map * score_z
        if patient:
            loss = loss + self.diagnosis_map
        loss = np.clip(loss, -0.5, 0.9)
        gm0, wm0, csf0 = (self.template[t] for t in TISSUES)
        eps_gm = self._field_at_brain(gm_field)
        eps_wm = self._field_at_brain(wm_field)
        gm = gm0 * np.exp(eps_gm) * (1.0 - loss)
        wm = np.minimum(wm0 * np.exp(eps_wm), 1.0)
        total = gm0 + wm0 + csf0
        gm = np.clip(np.minimum(gm, total - wm), 0.0, 1.0)
        csf = np.clip(total - gm - wm, 0.0, 1.0)
        brain = {"GM": gm.astype(np.float32), "WM": wm.astype(np.float32),
                 "CSF": csf.astype(np.float32)}
        shell: dict[str, np.ndarray] = {}
        if self.skull:
            d = self.shell_distance
            edges = np.cumsum(shell_mm)
            inside = [np.clip((e - d) / self.resolution + 0.5, 0.0, 1.0) for e in edges]
            shell = {"CSF": inside[0], "bone": inside[1] - inside[0],
                     "scalp": inside[2] - inside[1]}
        return TissueMaps(brain, shell)

    def _field_at_brain(self, field: BSplineField) -> np.ndarray:
        """A scalar field at the brain voxels (grid evaluation over the brain's bounding box)."""
        ijk = np.unravel_index(self.brain_index, self.shape)
        lo = [int(a.min()) for a in ijk]
        hi = [int(a.max()) + 1 for a in ijk]
        axes = grid_axes_mm(self.shape, self.affine)
        box = field.on_grid(tuple(axes[d][lo[d]:hi[d]] for d in range(3)))[0]
        return box[ijk[0] - lo[0], ijk[1] - lo[1], ijk[2] - lo[2]]

    def contrast(self, maps: TissueMaps, intensity: dict[str, float]) -> np.ndarray:
        """An image on the anatomy grid: tissue probabilities times tissue intensities.

        Parameters
        ----------
        maps : TissueMaps
        intensity : dict
            Intensity of ``GM``, ``WM``, ``CSF``, ``bone`` and ``scalp``.

        Returns
        -------
        ndarray, shape ``self.shape``, float32
        """
        image = np.zeros(int(np.prod(self.shape)), dtype=np.float32)
        image[self.brain_index] = sum(maps.brain[t] * intensity[t] for t in TISSUES)
        if maps.shell:
            image[self.shell_index] = sum(maps.shell[t] * intensity[t] for t in SHELL_LAYERS)
        return image.reshape(self.shape)

    def class_volumes(self, maps: TissueMaps) -> dict[tuple[str, str], np.ndarray]:
        """Every tissue class as a full volume on the anatomy grid.

        Returns
        -------
        dict
            ``("brain", GM|WM|CSF)`` and ``("shell", CSF|bone|scalp)`` -> volume.
        """
        out = {}
        for part, index, classes in (("brain", self.brain_index, maps.brain),
                                     ("shell", self.shell_index, maps.shell)):
            for name, values in classes.items():
                volume = np.zeros(int(np.prod(self.shape)), dtype=np.float32)
                volume[index] = values
                out[(part, name)] = volume.reshape(self.shape)
        return out


def _crop_nonzero(data: np.ndarray, affine: np.ndarray,
                  margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of the non-zero voxels (plus ``margin``) and its affine."""
    lo, hi = [], []
    for axis in range(3):
        nonzero = np.flatnonzero(np.any(data != 0, axis=tuple(a for a in range(3) if a != axis)))
        if nonzero.size == 0:
            return data, affine
        lo.append(max(int(nonzero[0]) - margin, 0))
        hi.append(min(int(nonzero[-1]) + margin + 1, data.shape[axis]))
    shift = np.eye(4)
    shift[:3, 3] = lo
    return data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], affine @ shift


def _subsample(mask: np.ndarray, resolution: float, step_mm: float = 6.0) -> np.ndarray:
    """Keep every ``step_mm`` / resolution-th voxel of a mask (for bounding boxes)."""
    step = max(1, int(round(step_mm / resolution)))
    out = np.zeros_like(mask)
    out[::step, ::step, ::step] = mask[::step, ::step, ::step]
    return out


def _bounds(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """(3, 2) min/max mm of an axis-aligned grid."""
    corners = np.array([[0, 0, 0], [s - 1 for s in shape]], dtype=float).T
    mm = affine[:3, :3] @ corners + affine[:3, 3:4]
    return np.stack([mm.min(1), mm.max(1)], axis=1)
