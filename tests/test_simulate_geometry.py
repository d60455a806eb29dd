"""Simulator building blocks: B-spline fields, the deformation and its inverse, native grids."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from bids_genbrain.simulation.anatomy import resample_to_grid
from bids_genbrain.simulation.config import Acquisition
from bids_genbrain.simulation.fields import BSplineField
from bids_genbrain.simulation.geometry import Deformation, draw_geometry, draw_pose, min_det
from bids_genbrain.templates import mni_grid

BOUNDS = np.array([[-60.0, 60.0], [-70.0, 50.0], [-40.0, 60.0]])


@pytest.fixture(scope="module")
def field():
    return BSplineField.random(np.random.default_rng(3), n_components=3, bounds_mm=BOUNDS,
                               spacing_mm=4.0, smoothness_mm=12.0, rms=2.0)


def test_grid_and_point_evaluation_agree(field):
    axes = tuple(np.linspace(lo, hi, 9) for lo, hi in BOUNDS)
    grid = field.on_grid(axes).reshape(3, -1)
    points = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    np.testing.assert_allclose(field.at_points(points), grid, atol=1e-4)
    inside = field.on_grid(tuple(np.arange(lo, hi, 4.0) for lo, hi in BOUNDS))
    assert inside.std(axis=(1, 2, 3)).mean() == pytest.approx(2.0, rel=0.1)


def test_analytic_derivatives_match_finite_differences(field):
    axes = tuple(np.linspace(lo + 10, hi - 10, 7) for lo, hi in BOUNDS)
    points = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).astype(np.float64)
    jac = field.jacobian_on_grid(axes).reshape(3, 3, -1)
    h = 0.01
    for d in range(3):
        step = np.zeros((3, 1))
        step[d] = h
        numeric = (field.at_points(points + step).astype(np.float64)
                   - field.at_points(points - step)) / (2 * h)
        np.testing.assert_allclose(jac[:, d], numeric, atol=2e-3)


def test_random_field_vanishes_outside_its_knots(field):
    far = np.array([[500.0, -500.0], [0.0, 0.0], [0.0, 0.0]])
    assert np.abs(field.at_points(far)).max() == 0.0


def test_inverse_deformation_roundtrip(field):
    region = np.ones(field.coefficients.shape[1:], dtype=bool)
    deformation = Deformation(np.array([1.05, 0.97, 1.0]), field, region)
    rng = np.random.default_rng(0)
    points = rng.uniform(BOUNDS[:, :1] + 5, BOUNDS[:, 1:] - 5, size=(3, 2000))
    back = deformation.pullback(deformation.forward(points))
    error = np.sqrt(((back - points) ** 2).sum(0))
    assert error.mean() < 0.03 and error.max() < 0.15
    # the mapping really moves points (the round trip is not trivially the identity)
    moved = np.sqrt(((deformation.forward(points) - points) ** 2).sum(0))
    assert moved.mean() > 1.0


def test_log_jacobian_matches_volume_change(field):
    """exp(mean log J) over a box ~ volume of the mapped box / volume of the box."""
    deformation = Deformation(np.array([1.1, 1.0, 0.9]), field * 0.5,
                              np.ones(field.coefficients.shape[1:], dtype=bool))
    axes = tuple(np.arange(lo + 12, hi - 12, 1.0) for lo, hi in BOUNDS)
    jac = np.exp(deformation.log_jacobian_grid(axes))
    assert jac.mean() == pytest.approx(1.1 * 0.9, rel=0.02)
    assert min_det(field.jacobian_on_grid(field.knot_axes()) * 0.5) > 0


def test_native_geometry_holds_the_brain():
    rng = np.random.default_rng(7)
    acq = Acquisition(voxel_size_range=(0.8, 1.5), oblique_fraction=1.0, anisotropic_fraction=1.0)
    brain = rng.uniform(-60, 60, size=(3, 500))
    head = brain * 1.3
    codes, tilts = set(), []
    for _ in range(12):
        pose = draw_pose(rng, acq)
        geometry = draw_geometry(rng, acq, pose.apply(head), pose.apply(brain))
        assert 0.8 <= min(geometry.voxel_size) <= max(geometry.voxel_size) <= 1.5
        assert geometry.voxel_size[2] >= geometry.voxel_size[0]
        ijk = np.linalg.inv(geometry.affine)[:3] @ np.vstack([pose.apply(brain), np.ones(500)])
        assert (ijk > -0.5).all() and (ijk < np.array(geometry.shape)[:, None] - 0.5).all()
        codes.add("".join(nb.aff2axcodes(geometry.affine)))
        tilts.append(geometry.oblique_deg)
    assert len(codes) >= 4
    assert min(tilts) > 0


def test_resample_aligned_grids_is_exact_subsampling():
    shape2, affine2 = mni_grid(2.0)
    shape4, affine4 = mni_grid(4.0)
    data = np.zeros(shape2, dtype=np.float32)
    data[40:50, 50:60, 40:50] = 1.0
    out = resample_to_grid(data, affine2, shape4, affine4)
    shifted = affine4.copy()
    shifted[0, 3] += 1e-3  # forces the interpolating path
    np.testing.assert_allclose(resample_to_grid(data, affine2, shape4, shifted), out, atol=1e-3)
    assert out[22, 27, 22] > 0.9 and out.sum() == pytest.approx(data.sum() / 8, rel=0.05)
