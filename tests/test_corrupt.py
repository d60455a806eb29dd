"""Corruption model (bids_genbrain.corrupt): known answers for motion, noise and the draws."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, center_of_mass

from bids_genbrain.corrupt import (
    Corruption,
    CorruptionConfig,
    Motion,
    MotionEvent,
    add_noise,
    apply_corruption,
    corrupt,
    draw_corruption,
    draw_motion,
    kspace_motion,
    move,
)
from bids_genbrain.templates import brain_mask, load_template

RES = 4.0
VOX = (RES, RES, RES)


@pytest.fixture(scope="module")
def brain():
    """The template T1w inside its brain mask on the 4 mm grid (raw-like units, max 1000)."""
    mask = brain_mask(RES)
    t1 = np.asanyarray(load_template(RES, suffix="T1w").dataobj, dtype=np.float32)
    vol = np.where(mask, t1, 0).astype(np.float32)
    return vol * (1000.0 / vol.max()), mask


def test_static_pose_leaves_the_image_unchanged(brain):
    vol, _ = brain
    still = MotionEvent(0.3, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    for axis in range(3):
        out = kspace_motion(vol, Motion(axis, (still, MotionEvent(0.7, (0, 0, 0), (0, 0, 0)))),
                            VOX)
        assert np.max(np.abs(out - vol)) < 1e-3 * vol.max()
    assert np.array_equal(kspace_motion(vol, Motion(0, ()), VOX), vol)
    # a corruption with neither motion nor noise is the identity
    same = apply_corruption(vol, Corruption(), np.random.default_rng(0), VOX)
    assert np.array_equal(same, vol)


def test_move_translates_by_whole_voxels(brain):
    vol, _ = brain
    out = move(vol, (0, 0, 0), (RES, 0, -2 * RES), VOX)
    expected = np.zeros_like(vol)
    expected[1:, :, :-2] = vol[:-1, :, 2:]
    assert np.allclose(out, expected, atol=1e-3)
    # a rotation by 90 degrees about z of a cube grid swaps x and y about the centre
    cube = np.zeros((9, 9, 9), dtype=np.float32)
    cube[6, 4, 4] = 1.0  # +2 voxels along x from the centre (4, 4, 4)
    turned = move(cube, (0, 0, 90), (0, 0, 0))
    assert np.unravel_index(np.argmax(turned), cube.shape) == (4, 6, 4)


def test_motion_moves_energy_into_ghosts(brain):
    vol, mask = brain
    outside = ~binary_dilation(mask, iterations=2)
    energy = float((vol.astype(np.float64) ** 2).sum())
    assert float((vol[outside] ** 2).sum()) == 0.0

    def ghost_energy(out):
        return np.where(outside, out.astype(np.float64) ** 2, 0.0)

    fractions = []
    for time in (0.75, 0.6, 0.55):  # the later the move, the less of k-space it affects
        out = kspace_motion(vol, Motion(1, (MotionEvent(time, (0, 0, 0), (8.0, 8.0, 8.0)),)),
                            VOX)
        fractions.append(ghost_energy(out).sum() / energy)
    assert fractions[0] > 1e-4 and fractions[0] < fractions[1] < fractions[2]
    assert fractions[2] > 2e-3
    # ghosts are copies along the phase-encoding axis: outside the head, most of their energy
    # lies where a line along that axis crosses the head
    for axis in range(3):
        ghosts = ghost_energy(kspace_motion(
            vol, Motion(axis, (MotionEvent(0.55, (0, 0, 0), (8.0, 8.0, 8.0)),)), VOX))
        share = [ghosts[np.broadcast_to(mask.any(axis=a, keepdims=True), mask.shape)].sum()
                 / ghosts.sum() for a in range(3)]
        assert int(np.argmax(share)) == axis and share[axis] > 0.7, share
    # the centre of k-space comes from the reference pose: the head does not move, whether
    # the event comes after or before the centre line
    for time in (0.75, 0.2):
        out = kspace_motion(vol, Motion(1, (MotionEvent(time, (10.0, 0, 0), (0, 8.0, 0)),)),
                            VOX)
        shift = np.subtract(center_of_mass(out * mask), center_of_mass(vol))
        assert np.all(np.abs(shift) < 0.5), shift


@pytest.mark.parametrize("sigma", [5.0, 25.0, 50.0])
def test_measured_noise_sigma_matches(sigma):
    rng = np.random.default_rng(1)
    flat = np.full((64, 64, 64), 2000.0, dtype=np.float32)
    gauss = add_noise(flat, sigma, "gaussian", rng)
    assert abs(gauss.std() - sigma) < 0.02 * sigma
    assert abs(gauss.mean() - 2000.0) < 0.05 * sigma
    rician = add_noise(flat, sigma, "rician", rng)
    assert abs(rician.std() - sigma) < 0.03 * sigma  # bright signal: Rician ~ Gaussian
    background = add_noise(np.zeros_like(flat), sigma, "rician", rng)
    assert abs(background.mean() - sigma * np.sqrt(np.pi / 2)) < 0.02 * sigma  # Rayleigh
    assert background.min() >= 0
    assert np.array_equal(add_noise(flat, 0.0, "rician", rng), flat)


def test_draws_follow_the_papers_distributions():
    config = CorruptionConfig()
    rng = np.random.default_rng(2)
    motions = [draw_motion(rng, config) for _ in range(3000)]
    rot = np.array([e.rotation_deg for m in motions for e in m.events])
    trans = np.array([e.translation_mm for m in motions for e in m.events])
    assert np.abs(rot).max() <= 30 and np.abs(trans).max() <= 10
    assert np.all(rot == np.round(rot)) and np.all(trans == np.round(trans))  # Poisson counts
    assert abs(np.abs(rot).mean() - 10.0) < 0.3  # Poisson(10), truncation at 30 negligible
    expected = np.minimum(np.random.default_rng(3).poisson(5.0, 10**6), 10).mean()
    assert abs(np.abs(trans).mean() - expected) < 0.15  # Poisson(5) truncated at 10
    assert abs(np.mean(np.sign(rot[rot != 0]))) < 0.05  # random signs
    counts = np.bincount([len(m.events) for m in motions], minlength=config.max_events + 1)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] / len(motions) - 0.25) < 0.04)
    times = [e.time for m in motions for e in m.events]
    assert 0 <= min(times) and max(times) <= 1 and abs(np.mean(times) - 0.5) < 0.02
    assert all(list(e.time for e in m.events) == sorted(e.time for e in m.events)
               for m in motions)
    assert {m.axis for m in motions} == {0, 1, 2}
    draws = [draw_corruption(rng, config) for _ in range(2000)]
    assert {d.noise_sigma for d in draws} == set(np.arange(0.0, 55.0, 5.0))
    assert {d.noise_kind for d in draws} == {"gaussian", "rician"}
    assert abs(np.mean([d.motion is not None for d in draws]) - 0.5) < 0.05


def test_corrupt_is_seeded(brain):
    vol, _ = brain
    a, ca = corrupt(vol, np.random.default_rng(7), voxel_size=VOX)
    b, cb = corrupt(vol, np.random.default_rng(7), voxel_size=VOX)
    c, cc = corrupt(vol, np.random.default_rng(8), voxel_size=VOX)
    assert ca == cb and np.array_equal(a, b)
    assert ca != cc or not np.array_equal(a, c)
    assert ca.to_dict()["noise_sigma"] in CorruptionConfig().noise_sigmas


def test_config_is_checked_and_round_trips():
    with pytest.raises(ValueError, match="noise_kinds"):
        CorruptionConfig(noise_kinds=("salt",))
    with pytest.raises(ValueError, match="probability"):
        CorruptionConfig(motion_probability=1.5)
    config = CorruptionConfig(max_events=2, noise_sigmas=(0, 10))
    assert CorruptionConfig.from_dict(config.to_dict()) == config
