"""Quality metrics against known answers (identical images, additive noise of known sigma)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics.mmd import compute_mmd
from sklearn.metrics.pairwise import rbf_kernel

from bids_genbrain.evaluate.quality import (
    gram_matrix,
    mmd,
    ms_ssim,
    ms_ssim_diversity,
    ms_ssim_weights,
    psnr,
    rmse,
    ssim,
)

SIGMA = 0.03
C2 = (0.03 * 1.0) ** 2  # SSIM's contrast constant for a data range of 1


def _window_sum_sq(size: int = 11, sigma: float = 1.5) -> float:
    """Sum of squared weights of the 3D Gaussian SSIM window."""
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return float(((g / g.sum()) ** 2).sum() ** 3)


@pytest.fixture
def brain() -> tuple[np.ndarray, np.ndarray]:
    """A smooth 48^3 volume in [0, 1] and a spherical mask."""
    idx = np.indices((48, 48, 48)) - 23.5
    radius = np.sqrt((idx**2).sum(0))
    mask = radius < 20
    volume = np.where(mask, 0.5 + 0.5 * np.cos(radius / 3.0), 0.0)
    return volume, mask


def test_identical_images(brain):
    volume, mask = brain
    assert rmse(volume, volume, mask=mask) == 0.0
    assert psnr(volume, volume, mask=mask) == math.inf
    assert ssim(volume, volume) == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(volume, volume) == pytest.approx(1.0, abs=1e-6)


def test_psnr_rmse_of_known_noise(brain):
    volume, mask = brain
    rng = np.random.default_rng(0)
    noise = rng.normal(0, SIGMA, volume.shape)
    noisy = volume + noise
    data_range = np.ptp(volume[mask])
    assert data_range == pytest.approx(1.0, abs=1e-3)
    mse = np.mean(noise[mask] ** 2)
    assert rmse(volume, noisy, mask=mask) == pytest.approx(math.sqrt(mse), rel=1e-6)
    assert psnr(volume, noisy, mask=mask) == pytest.approx(
        20 * math.log10(data_range) - 10 * math.log10(mse), rel=1e-6)
    # ~33k brain voxels: the empirical MSE is sigma^2 within 2 %, PSNR within 0.1 dB
    assert psnr(volume, noisy, mask=mask, data_range=1.0) == pytest.approx(
        20 * math.log10(1.0 / SIGMA), abs=0.1)
    # noise outside the brain does not count
    outside = volume + np.where(mask, 0.0, noise)
    assert rmse(volume, outside, mask=mask) == 0.0
    assert rmse(volume, outside) > 0.0


def test_ssim_and_ms_ssim_of_constant_plus_noise():
    """On a constant image SSIM is C2 / (s^2 + C2), s^2 the windowed noise variance."""
    rng = np.random.default_rng(1)
    flat = np.full((48, 48, 48), 0.5)
    noisy = flat + rng.normal(0, SIGMA, flat.shape)
    shrink = 1.0 - _window_sum_sq()  # bias of the Gaussian-weighted local variance
    expected = C2 / (SIGMA**2 * shrink + C2)
    assert expected == pytest.approx(0.5, abs=0.01)
    assert ssim(flat, noisy, data_range=1.0) == pytest.approx(expected, abs=0.01)
    # each scale halves the grid by 2x2x2 averaging: the noise variance drops 8-fold
    weights = ms_ssim_weights(flat.shape)
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)
    ms_expected = math.prod((C2 / (SIGMA**2 / 8**j * shrink + C2)) ** w
                            for j, w in enumerate(weights))
    assert ms_ssim(flat, noisy, data_range=1.0) == pytest.approx(ms_expected, abs=0.01)
    assert ms_ssim(flat, noisy, data_range=1.0) > ssim(flat, noisy, data_range=1.0)


def test_ms_ssim_weights_for_brain_grids():
    assert len(ms_ssim_weights((91, 109, 91))) == 3  # 2 mm grid, window 11
    assert len(ms_ssim_weights((46, 55, 46))) == 3  # 4 mm grid
    assert len(ms_ssim_weights((91, 109, 91), kernel_size=7)) == 4
    with pytest.raises(ValueError, match="5 scales with window 11 do not fit"):
        ms_ssim_weights((91, 109, 91), scales=5)
    with pytest.raises(ValueError, match="smaller than the window"):
        ms_ssim_weights((8, 8, 8))


@pytest.fixture
def sets() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    real = 1000.0 + rng.normal(size=(12, 400))
    synthetic = 1000.0 + rng.normal(size=(12, 400)) + 0.3
    return real, synthetic


def test_mmd_linear_known_answers(sets):
    real, synthetic = sets
    # biased linear MMD^2 is the squared distance of the mean images
    gap = np.sum((real.mean(0) - synthetic.mean(0)) ** 2)
    assert mmd(real, synthetic, kernel="linear", unbiased=False) == pytest.approx(gap, rel=1e-9)
    # unbiased linear MMD^2 is MONAI's
    monai = compute_mmd(torch.from_numpy(real)[:, None], torch.from_numpy(synthetic)[:, None],
                        None).item()
    assert mmd(real, synthetic, kernel="linear") == pytest.approx(monai, rel=1e-6)


def test_mmd_rbf_matches_dense_kernel(sets, tmp_path):
    real, synthetic = sets
    pooled = np.vstack([real, synthetic])
    dist = np.sqrt(((pooled[:, None] - pooled[None]) ** 2).sum(-1))
    bandwidth = np.median(dist[np.triu_indices(24, 1)])
    k = rbf_kernel(pooled, gamma=1.0 / (2 * bandwidth**2))
    kxx, kyy, kxy = k[:12, :12], k[12:, 12:], k[:12, 12:]
    unbiased = ((kxx.sum() - 12) / 132 + (kyy.sum() - 12) / 132 - 2 * kxy.mean())
    biased = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    np.save(tmp_path / "r.npy", real)
    value = mmd(np.load(tmp_path / "r.npy", mmap_mode="r"), synthetic, chunk_size=37)
    assert value == pytest.approx(unbiased, rel=1e-8)
    assert mmd(real, synthetic, unbiased=False) == pytest.approx(biased, rel=1e-8)
    assert mmd(real, real, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    # a shifted synthetic set is farther than a fresh draw of the real distribution
    fresh = 1000.0 + np.random.default_rng(9).normal(size=(12, 400))
    assert mmd(real, synthetic, bandwidth=bandwidth) > mmd(real, fresh, bandwidth=bandwidth)
    centred = pooled - pooled.mean(0)
    np.testing.assert_allclose(gram_matrix(real, synthetic, chunk_size=50), centred @ centred.T,
                               rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="kernel must be"):
        mmd(real, synthetic, kernel="poly")


def test_ms_ssim_diversity(brain):
    volume, mask = brain
    rng = np.random.default_rng(4)
    base = volume[mask]
    copies = np.stack([base] * 4)

    def people(sd: float) -> np.ndarray:
        return np.stack([base + rng.normal(0, sd, base.size) for _ in range(4)])

    assert ms_ssim_diversity(copies, mask, progress=False) == pytest.approx(1.0, abs=1e-6)
    similar = ms_ssim_diversity(people(0.05), mask, data_range=1.0, progress=False)
    varied = people(0.5)
    diverse = ms_ssim_diversity(varied, mask, n_pairs=3, seed=1, data_range=1.0,
                                progress=False)
    assert 0.0 < diverse < similar < 1.0
    assert diverse == ms_ssim_diversity(varied, mask, n_pairs=3, seed=1, data_range=1.0,
                                        progress=False)
    with pytest.raises(ValueError, match="mask must be 3D"):
        ms_ssim_diversity(varied[:, :-1], mask)
