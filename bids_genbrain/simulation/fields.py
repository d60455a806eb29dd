"""Smooth random fields as cubic B-splines on a regular grid in MNI millimetres.

A :class:`BSplineField` is defined everywhere (not only on a grid): its value at a point is
``sum_k c_k beta3((x - origin) / spacing - k)``. It is evaluated on axis-aligned grids with
three small matrix products (exact and fast, with analytic derivatives for Jacobians) and at
arbitrary points with :func:`scipy.ndimage.map_coordinates` (``order=3, prefilter=False``
computes the same sum). Displacement fields, GM density variation and bias fields of the
simulator are all such fields, so the ground truth is exact, not an interpolation of itself.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.ndimage import gaussian_filter, map_coordinates

MARGIN_KNOTS = 5
"""Knots beyond the covered region; random fields taper to zero over them."""


def bspline3(t: np.ndarray) -> np.ndarray:
    """The cubic B-spline kernel ``beta3`` (support ``|t| < 2``)."""
    a = np.abs(t)
    return np.where(a < 1, 2.0 / 3.0 - a**2 + a**3 / 2.0,
                    np.where(a < 2, (2.0 - a) ** 3 / 6.0, 0.0))


def bspline3_derivative(t: np.ndarray) -> np.ndarray:
    """Derivative of :func:`bspline3`."""
    a = np.abs(t)
    return np.where(a < 1, -2.0 * t + 1.5 * t * a,
                    np.where(a < 2, -np.sign(t) * (2.0 - a) ** 2 / 2.0, 0.0))


def sample(volume: np.ndarray, coords: np.ndarray, *, order: int = 1, cval: float = 0.0,
           mode: str = "constant") -> np.ndarray:
    """:func:`scipy.ndimage.map_coordinates` without prefiltering, as float32.

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
        Values (``order=1``) or cubic B-spline coefficients (``order=3``).
    coords : ndarray, shape (3, N)
        Fractional voxel indices.
    order, cval, mode
        As :func:`scipy.ndimage.map_coordinates`.

    Returns
    -------
    ndarray, shape (N,), float32
    """
    out = np.empty(coords.shape[1], dtype=np.float32)
    map_coordinates(volume, coords, output=out, order=order, mode=mode, cval=cval,
                    prefilter=False)
    return out


def _border_window(shape: tuple[int, ...]) -> np.ndarray:
    """0 on the two outer knots of each border, a raised-cosine ramp over the next three."""
    window = np.ones(shape)
    for d, n in enumerate(shape):
        depth = np.minimum(np.arange(n), np.arange(n)[::-1]) - 1.0
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip(depth / (MARGIN_KNOTS - 1), 0.0, 1.0))
        view = [1] * len(shape)
        view[d] = n
        window = window * ramp.reshape(view)
    return window


class BSplineField:
    """A smooth field with ``C`` components on a cubic B-spline grid.

    Parameters
    ----------
    coefficients : ndarray, shape (C, nx, ny, nz)
        B-spline coefficients (knot ``k`` sits at ``origin + k * spacing``).
    origin_mm : array-like, shape (3,)
        Position of knot ``(0, 0, 0)`` in MNI mm (axes x, y, z, RAS).
    spacing_mm : float
        Knot spacing.
    """

    def __init__(self, coefficients: np.ndarray, origin_mm: np.ndarray, spacing_mm: float):
        self.coefficients = np.ascontiguousarray(coefficients, dtype=np.float64)
        self.origin_mm = np.asarray(origin_mm, dtype=np.float64)
        self.spacing_mm = float(spacing_mm)

    @property
    def n_components(self) -> int:
        """Number of components ``C``."""
        return self.coefficients.shape[0]

    def knot_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Knot positions along x, y, z (mm)."""
        return tuple(self.origin_mm[d] + self.spacing_mm * np.arange(self.coefficients.shape[d + 1])
                     for d in range(3))  # type: ignore[return-value]

    def _basis(self, axis_mm: np.ndarray, dim: int, derivative: bool = False) -> sparse.csr_matrix:
        """Sparse (len(axis), n_knots) matrix of kernel weights (4 entries per row)."""
        t = (np.asarray(axis_mm, dtype=np.float64) - self.origin_mm[dim]) / self.spacing_mm
        n_knots = self.coefficients.shape[dim + 1]
        first = np.floor(t).astype(np.int64) - 1
        cols = first[:, None] + np.arange(4)[None, :]
        diff = t[:, None] - cols
        values = bspline3_derivative(diff) / self.spacing_mm if derivative else bspline3(diff)
        outside = (cols < 0) | (cols >= n_knots)  # knots beyond the grid contribute nothing
        values = np.where(outside, 0.0, values)
        cols = np.clip(cols, 0, n_knots - 1)
        return sparse.csr_matrix((values.ravel(), cols.ravel(), np.arange(0, 4 * t.size + 1, 4)),
                                 shape=(t.size, n_knots))

    def on_grid(self, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
                derivative: int | None = None) -> np.ndarray:
        """Evaluate on the grid ``axes_mm[0] x axes_mm[1] x axes_mm[2]``.

        Parameters
        ----------
        axes_mm : tuple of 1-D arrays
            MNI mm coordinates along x, y and z.
        derivative : {None, 0, 1, 2}
            Return the partial derivative along this axis (per mm) instead of the value.

        Returns
        -------
        ndarray, shape (C, len(ax), len(ay), len(az)), float32
        """
        out = self.coefficients  # (C, k0, k1, k2); contract one axis at a time
        for d, ax in enumerate(axes_mm):
            basis = self._basis(ax, d, derivative == d)
            moved = np.moveaxis(out, d + 1, 0)
            flat = basis @ moved.reshape(moved.shape[0], -1)
            out = np.moveaxis(flat.reshape((basis.shape[0], *moved.shape[1:])), 0, d + 1)
        return np.ascontiguousarray(out, dtype=np.float32)

    def jacobian_on_grid(self, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """All partial derivatives on a grid, shape (C, 3, X, Y, Z): ``[c, d]`` is d u_c / d x_d."""
        return np.stack([self.on_grid(axes_mm, derivative=d) for d in range(3)], axis=1)

    def at_points(self, points_mm: np.ndarray) -> np.ndarray:
        """Evaluate at arbitrary points.

        Parameters
        ----------
        points_mm : ndarray, shape (3, N)
            MNI mm coordinates.

        Returns
        -------
        ndarray, shape (C, N), float32
            Points beyond the knot grid see its border coefficients repeated.
        """
        index = (points_mm - self.origin_mm[:, None]) / self.spacing_mm
        return np.stack([sample(c, index, order=3, mode="nearest")
                         for c in self.coefficients])

    @classmethod
    def zeros(cls, *, n_components: int, bounds_mm: np.ndarray, spacing_mm: float) -> BSplineField:
        """A zero field whose knots cover ``bounds_mm`` (3, 2) with ``MARGIN_KNOTS`` of margin.

        Random fields vanish on the margin, so a field is zero outside its knot grid and
        grid and point evaluations agree everywhere.
        """
        bounds = np.asarray(bounds_mm, dtype=np.float64)
        origin = bounds[:, 0] - MARGIN_KNOTS * spacing_mm
        shape = tuple(int(np.ceil((bounds[d, 1] - origin[d]) / spacing_mm)) + MARGIN_KNOTS + 1
                      for d in range(3))
        return cls(np.zeros((n_components, *shape)), origin, spacing_mm)

    @classmethod
    def random(cls, rng: np.random.Generator, *, n_components: int, bounds_mm: np.ndarray,
               spacing_mm: float, smoothness_mm: float, rms: float) -> BSplineField:
        """A Gaussian random field: smoothed white noise at the knots, scaled to ``rms``.

        Parameters
        ----------
        rng : numpy.random.Generator
        n_components : int
        bounds_mm : ndarray, shape (3, 2)
            Region the field must cover (``MARGIN_KNOTS`` of margin are added on each side,
            over which the field tapers to zero).
        spacing_mm : float
            Knot spacing.
        smoothness_mm : float
            Gaussian sigma of the smoothing.
        rms : float
            Root mean square of each component's values at the knots.
        """
        field = cls.zeros(n_components=n_components, bounds_mm=bounds_mm, spacing_mm=spacing_mm)
        noise = rng.standard_normal(field.coefficients.shape)
        sigma = smoothness_mm / spacing_mm
        coef = np.stack([gaussian_filter(c, sigma, mode="wrap", truncate=3.0) for c in noise])
        window = _border_window(coef.shape[1:])
        field.coefficients = coef * window
        values = field.on_grid(field.knot_axes())[:, window == 1]
        scale = rms / max(float(values.std(axis=1).mean()), 1e-12)
        field.coefficients *= scale
        return field

    def __add__(self, other: BSplineField) -> BSplineField:
        if (other.coefficients.shape != self.coefficients.shape
                or not np.allclose(other.origin_mm, self.origin_mm)
                or other.spacing_mm != self.spacing_mm):
            raise ValueError("fields on different knot grids cannot be added")
        return BSplineField(self.coefficients + other.coefficients, self.origin_mm,
                            self.spacing_mm)

    def __mul__(self, factor: float) -> BSplineField:
        return BSplineField(self.coefficients * factor, self.origin_mm, self.spacing_mm)

    __rmul__ = __mul__
