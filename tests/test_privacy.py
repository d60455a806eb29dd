"""Memorization check: planted copies are flagged, chunked results equal dense ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_genbrain.evaluate.privacy import image_moments, max_correlation, memorization_table


@pytest.fixture
def sets() -> tuple[np.ndarray, np.ndarray]:
    """Brain-like sets: a shared pattern plus individual variation (r ~ 0.8 between people).

    Synthetic rows 3 and 8 copy training images 7 and 21 (with small noise, and with an
    intensity rescaling); the other synthetic rows are new draws of the same distribution.
    """
    rng = np.random.default_rng(11)
    n_vox = 700
    pattern = rng.gamma(2.0, 1.0, n_vox)

    def people(n: int) -> np.ndarray:
        return 1000.0 + 100.0 * (pattern + 0.5 * rng.normal(size=(n, n_vox)))

    training = people(30)
    synthetic = people(10)
    synthetic[3] = training[7] + rng.normal(0, 5.0, n_vox)
    synthetic[8] = 0.7 * training[21] + 40.0
    return synthetic.astype(np.float32), training.astype(np.float32)


def _dense(synthetic: np.ndarray, training: np.ndarray) -> np.ndarray:
    full = np.corrcoef(np.vstack([synthetic, training]).astype(np.float64))
    return full[: len(synthetic), len(synthetic):]


def test_planted_copies_flagged(sets):
    synthetic, training = sets
    ids = [f"sub-{i:02d}" for i in range(30)]
    table = memorization_table(synthetic, training, training_ids=ids, progress=False)
    assert table.columns.tolist() == ["synthetic_id", "nearest_training_id", "max_r", "flagged"]
    assert table.index[table["flagged"]].tolist() == [3, 8]
    assert table.loc[3, "nearest_training_id"] == "sub-07"
    assert table.loc[8, "nearest_training_id"] == "sub-21"
    assert table.loc[8, "max_r"] == pytest.approx(1.0)
    # the other images look alike (shared anatomy) but are no copies
    others = table.loc[~table["flagged"], "max_r"]
    assert 0.6 < others.min() and others.max() < 0.95
    # a stricter threshold flags only the exact rescaled copy
    strict = memorization_table(synthetic, training, threshold=0.9999, progress=False)
    assert strict.index[strict["flagged"]].tolist() == [8]


def test_chunked_equals_dense(sets, tmp_path):
    synthetic, training = sets
    r = _dense(synthetic, training)
    np.save(tmp_path / "syn.npy", synthetic)
    np.save(tmp_path / "train.npy", training)
    max_r, nearest = max_correlation(np.load(tmp_path / "syn.npy", mmap_mode="r"),
                                     np.load(tmp_path / "train.npy", mmap_mode="r"),
                                     row_block=4, chunk_size=97, progress=False)
    np.testing.assert_allclose(max_r, r.max(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(nearest, r.argmax(axis=1))
    # within a voxel subset
    keep = np.zeros(synthetic.shape[1], dtype=bool)
    keep[100:400:3] = True
    sub_r, sub_nearest = max_correlation(synthetic, training, voxels=keep, row_block=7,
                                         chunk_size=13, progress=False)
    r_keep = _dense(synthetic[:, keep], training[:, keep])
    np.testing.assert_allclose(sub_r, r_keep.max(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(sub_nearest, r_keep.argmax(axis=1))


def test_moments_are_stable_for_large_offsets():
    rng = np.random.default_rng(1)
    x = 1e6 + rng.normal(size=(3, 1001))
    mean, norm = image_moments(x, row_block=2, chunk_size=10)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(norm, np.sqrt(((x - x.mean(1, keepdims=True)) ** 2).sum(1)),
                               rtol=1e-9)


def test_constant_images_and_bad_input(sets):
    synthetic, training = sets
    synthetic = synthetic.copy()
    synthetic[0] = 5.0
    table = memorization_table(synthetic, training, progress=False)
    assert np.isnan(table.loc[0, "max_r"]) and pd.isna(table.loc[0, "nearest_training_id"])
    assert not table.loc[0, "flagged"]
    with pytest.raises(ValueError, match="700 voxels, training images 699"):
        max_correlation(synthetic, training[:, :699], progress=False)
    with pytest.raises(ValueError, match="ids for 10 and 30 images"):
        memorization_table(synthetic, training, synthetic_ids=["a"], progress=False)
    bad = training.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        max_correlation(synthetic, bad, progress=False)
