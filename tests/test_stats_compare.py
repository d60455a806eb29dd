"""Map comparison metrics on maps with known answers, and the bootstrap over participants."""

from __future__ import annotations

import math

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_genbrain.stats.compare import (
    METRICS,
    bootstrap_comparison,
    compare_maps,
    dice,
    reference_vector,
    top_fraction_mask,
)
from bids_genbrain.stats.glm import fit_glm, make_design
from bids_genbrain.templates import mni_grid


def test_sign_dice_known_overlaps():
    a = np.zeros(1000)
    a[0:100], a[100:200], a[200:300] = 0.5, 2.0, -1.0
    b = np.zeros(1000)
    b[100:300], b[300:350] = 2.0, -3.0
    out = compare_maps(a, b)
    assert out["dice_pos"] == pytest.approx(2 * 100 / (200 + 200))
    assert out["dice_neg"] == 0.0
    assert out["dice_micro"] == pytest.approx(2 * 100 / (200 + 200 + 100 + 50))
    # a threshold of 1 keeps a's voxels 100..199 (and not a's -1.0 voxels: strict)
    cut = compare_maps(a, b, threshold=1.0)
    assert cut["dice_pos"] == pytest.approx(2 * 100 / (100 + 200))
    assert cut["dice_neg"] == 0.0
    assert cut["dice_micro"] == pytest.approx(2 * 100 / (100 + 200 + 0 + 50))


def test_top_fraction_dice_uses_absolute_values():
    a = np.arange(1000.0)  # top 20 %: voxels 800..999
    b = a.copy()
    b[700:800] = -5000.0  # largest |b|: 700..799, then 900..999
    b[800:900] = 1.0
    assert top_fraction_mask(a).sum() == 200
    assert np.flatnonzero(top_fraction_mask(b)).tolist() == [*range(700, 800),
                                                             *range(900, 1000)]
    assert compare_maps(a, b)["dice_top"] == pytest.approx(100 / 200)
    # top 10 %: a keeps 900..999, b keeps its -5000 block 700..799: no overlap
    assert compare_maps(a, b, top_fraction=0.1)["dice_top"] == 0.0


def test_pearson_r_known_values_and_nan_voxels():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    assert compare_maps(a, 3 * a + 2)["r"] == pytest.approx(1.0)
    assert compare_maps(a, -a)["r"] == pytest.approx(-1.0)
    x = np.array([1.0, -1.0, 1.0, -1.0] * 25)
    y = np.array([1.0, 1.0, -1.0, -1.0] * 25)
    assert compare_maps(x, y)["r"] == pytest.approx(0.0, abs=1e-12)
    noisy = 3 * a + 2
    noisy[:10] = np.nan  # ignored, not propagated
    assert compare_maps(a, noisy)["r"] == pytest.approx(1.0)
    # identical maps: every metric is perfect
    assert all(v == pytest.approx(1.0) for v in compare_maps(a, a).values())


def test_dice_edge_cases():
    assert math.isnan(dice(np.zeros(5, bool), np.zeros(5, bool)))
    assert dice([1, 1, 0, 0], [0, 0, 1, 1]) == 0.0
    assert dice([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape"):
        dice([1, 0], [1, 0, 0])
    with pytest.raises(ValueError, match=r"top fraction must be in \(0, 1\]"):
        top_fraction_mask(np.ones(4), 0.0)


def test_reference_vector_resamples_to_grid():
    shape, affine = mni_grid(4.0)
    mask = np.zeros(shape, dtype=bool)
    mask[18:28, 20:30, 18:28] = True
    grid = np.indices(shape).sum(0).astype(np.float32)  # linear in voxel indices
    same = reference_vector(nb.Nifti1Image(grid, affine), resolution=4.0, mask=mask)
    np.testing.assert_array_equal(same, grid[mask])
    # the same linear field sampled on the 2 mm grid comes back (trilinear is exact on it)
    fine_shape, fine_affine = mni_grid(2.0)
    fine = (np.indices(fine_shape).sum(0) / 2.0).astype(np.float32)
    back = reference_vector(nb.Nifti1Image(fine, fine_affine), resolution=4.0, mask=mask)
    np.testing.assert_allclose(back, grid[mask], atol=1e-4)


@pytest.fixture
def sample() -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """24 images of 300 voxels, effect d = 1.5 on the first 100 voxels; the true map."""
    rng = np.random.default_rng(3)
    n = 24
    table = pd.DataFrame({
        "diagnosis": np.repeat(["control", "patient"], [10, 14]),
        "age": rng.uniform(20, 70, n),
        "site": np.tile(["a", "b"], n // 2),
    })
    truth = np.zeros(300)
    truth[:100] = 1.5
    truth[100:120] = -1.0
    truth += np.linspace(0, 0.01, 300)  # no ties in the top 20 %
    images = rng.normal(size=(n, 300)) + np.outer(table["diagnosis"] == "patient", truth)
    return images.astype(np.float32), table, truth


def test_bootstrap_reproducible_and_refits(sample, tmp_path):
    images, table, truth = sample
    kwargs = dict(contrast="diagnosis", confounds=["age", "site"], n_boot=12, seed=5,
                  progress=False)
    result = bootstrap_comparison(images, table, truth, **kwargs)
    again = bootstrap_comparison(images, table, truth, **kwargs)
    pd.testing.assert_frame_equal(result.replicates, again.replicates)
    other = bootstrap_comparison(images, table, truth, **{**kwargs, "seed": 6})
    assert not np.array_equal(other.indices, result.indices)
    # chunked over voxels from an on-disk memmap: same draws, same numbers
    np.save(tmp_path / "x.npy", images)
    chunked = bootstrap_comparison(np.load(tmp_path / "x.npy", mmap_mode="r"), table, truth,
                                   chunk_size=33, **kwargs)
    pd.testing.assert_frame_equal(chunked.replicates, result.replicates, rtol=1e-9)
    # every replicate is a real refit on its resampled participants, stratified by group
    for k in (0, 7):
        rows = result.indices[k]
        assert (table["diagnosis"].iloc[rows] == "patient").sum() == 14
        design = make_design(table.iloc[rows], "diagnosis", ["age", "site"])
        direct = compare_maps(fit_glm(images[rows], design).d, truth)
        assert result.replicates.iloc[k].to_dict() == pytest.approx(direct)
    summary = result.summary
    assert list(summary.index) == list(METRICS)
    full = compare_maps(fit_glm(images, make_design(table, "diagnosis", ["age", "site"])).d,
                        truth)
    assert summary["estimate"].to_dict() == pytest.approx(full)
    finite = summary.dropna(subset=["ci_low"])
    assert (finite["ci_low"] <= finite["estimate"]).all()
    assert (finite["estimate"] <= finite["ci_high"]).all()
    assert (summary["n_boot"] == 12).all()
    # the planted effect is recovered: the whole r interval is well above 0
    assert summary.loc["r", "ci_low"] > 0.5


def test_bootstrap_rows_select_images_of_a_larger_store(sample):
    images, table, truth = sample
    rng = np.random.default_rng(0)
    store = np.vstack([rng.normal(size=(5, 300)), images[::-1]]).astype(np.float32)
    rows = 5 + np.arange(24)[::-1]  # table row i is store row rows[i]
    kwargs = dict(contrast="diagnosis", confounds=["age"], n_boot=4, seed=1, progress=False)
    direct = bootstrap_comparison(images, table, truth, **kwargs)
    mapped = bootstrap_comparison(store, table, truth, rows=rows, **kwargs)
    np.testing.assert_array_equal(mapped.indices, direct.indices)
    pd.testing.assert_frame_equal(mapped.replicates, direct.replicates, rtol=1e-9)
    with pytest.raises(ValueError, match="one image row per table row"):
        bootstrap_comparison(store, table, truth, rows=rows[:-1], **kwargs)


def test_bootstrap_continuous_contrast_and_bad_input(sample):
    images, table, truth = sample
    out = bootstrap_comparison(images, table, truth, contrast="age", stat="t", n_boot=3,
                               progress=False)
    assert out.indices.shape == (3, 24) and out.n_redrawn == 0
    with pytest.raises(ValueError, match="stat must be 'd' or 't'"):
        bootstrap_comparison(images, table, truth, contrast="age", stat="z")
    with pytest.raises(ValueError, match="map has 300 voxels, reference has 299"):
        bootstrap_comparison(images, table, truth[:-1], contrast="age", n_boot=2)


def test_bootstrap_interval_covers_what_new_samples_give():
    """Against independent samples of a known population: the interval is centred on the
    estimate, its standard error matches the spread of r over new samples, and it covers
    the mean r of new samples at about its nominal rate. (Percentile intervals fail here:
    replicates repeat participants, so their maps agree less with the truth.)"""
    rng = np.random.default_rng(11)
    n_vox, n_samples = 400, 30
    truth = np.where(np.arange(n_vox) < 60, 0.8, 0.0)
    table = pd.DataFrame({"diagnosis": np.repeat(["control", "patient"], 15)})
    estimates, ses, intervals, below = [], [], [], 0
    for k in range(n_samples):
        images = rng.normal(size=(30, n_vox)) + np.outer(table["diagnosis"] == "patient", truth)
        out = bootstrap_comparison(images, table, truth, contrast="diagnosis", n_boot=60,
                                   seed=k, progress=False)
        row = out.summary.loc["r"]
        assert row["ci_low"] < row["estimate"] < row["ci_high"]
        estimates.append(row["estimate"])
        ses.append(row["se"])
        intervals.append((row["ci_low"], row["ci_high"]))
        below += out.replicates["r"].mean() < row["estimate"]
    spread = np.std(np.arctanh(estimates), ddof=1)
    assert 0.6 < np.mean(ses) / spread < 1.7
    centre = np.tanh(np.mean(np.arctanh(estimates)))
    coverage = np.mean([lo <= centre <= hi for lo, hi in intervals])
    assert coverage >= 0.8
    assert below >= 0.8 * n_samples  # the downward bias of the replicates that motivates this
