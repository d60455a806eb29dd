"""Memorization check: planted copies are flagged, chunked results equal dense ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_genbrain.evaluate.privacy import max_correlation, memorization_table


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
                                     memory_mb=0.01, progress=False)
    np.testing.assert_allclose(max_r, r.max(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(nearest, r.argmax(axis=1))
    # within a voxel subset
    keep = np.zeros(synthetic.shape[1], dtype=bool)
    keep[100:400:3] = True
    sub_r, sub_nearest = max_correlation(synthetic, training, voxels=keep, memory_mb=0.02,
                                         progress=False)
    r_keep = _dense(synthetic[:, keep], training[:, keep])
    np.testing.assert_allclose(sub_r, r_keep.max(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(sub_nearest, r_keep.argmax(axis=1))


def test_correlation_is_stable_for_large_offsets():
    """Centring on the training mean first: intensities far from 0 lose no precision."""
    rng = np.random.default_rng(1)
    pattern = rng.normal(size=1001)
    x = 1e6 + pattern + 0.5 * rng.normal(size=(6, 1001))
    max_r, nearest = max_correlation(x[:2], x[2:], memory_mb=0.01, progress=False)
    dense = _dense(x[:2], x[2:])
    np.testing.assert_allclose(max_r, dense.max(axis=1), rtol=1e-9)
    np.testing.assert_array_equal(nearest, dense.argmax(axis=1))


def test_constant_images_and_bad_input(sets):
    synthetic, training = sets
    synthetic = synthetic.copy()
    synthetic[0] = 5.0
    table = memorization_table(synthetic, training, progress=False)
    assert np.isnan(table.loc[0, "max_r"]) and pd.isna(table.loc[0, "nearest_training_id"])
    assert not table.loc[0, "flagged"]
    with pytest.raises(ValueError, match="700 voxels, training images 699"):
        max_correlation(synthetic, training[:, :699], progress=False)
    with pytest.raises(ValueError, match="1 synthetic ids for 10 images"):
        memorization_table(synthetic, training, synthetic_ids=["a"], progress=False)
    bad = training.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        max_correlation(synthetic, bad, progress=False)


# --- the discriminating gate: mean-removed correlation and distance to the closest record ---

from scipy.ndimage import gaussian_filter  # noqa: E402

from bids_genbrain.evaluate.privacy import check_memorization, nearest_records  # noqa: E402

SHAPE = (16, 18, 16)


def _gm_people(rng: np.random.Generator, template: np.ndarray, n: int) -> np.ndarray:
    """GM-like maps in [0, 1]: a shared template, smooth individual variation, scanner noise."""
    rows = []
    for _ in range(n):
        field = gaussian_filter(rng.normal(size=SHAPE), 1.5)
        rows.append(np.clip(template + 0.04 * field / field.std()
                            + 0.01 * rng.normal(size=SHAPE), 0, 1).ravel())
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def gm_sets():
    """Training, held-out and new images of one population, and the candidate copies."""
    rng = np.random.default_rng(5)
    template = gaussian_filter(rng.random(SHAPE), 2.0)
    template = (template - template.min()) / np.ptp(template)
    training = _gm_people(rng, template, 30)
    heldout = _gm_people(rng, template, 12)
    new = _gm_people(rng, template, 40)
    mean = training.mean(axis=0)
    candidates = {
        "copy": training[3],
        "noised copy": np.clip(training[17] + rng.normal(0, 0.02, mean.size), 0, 1),
        "training mean": mean,
        "template": template.ravel(),
        "mean + noise": np.clip(mean + rng.normal(0, 0.01, mean.size), 0, 1),
    }
    synthetic = np.vstack([new, np.asarray(list(candidates.values()))]).astype(np.float32)
    names = [f"new{i}" for i in range(len(new))] + list(candidates)
    return training, heldout, synthetic, names


def test_gate_flags_copies_not_the_mean(gm_sets):
    """A copy and a noised copy are flagged; the training mean, the template and new people not.

    The paper's raw-r check calls the mean a copy (r > 0.95), which is why it does not gate.
    """
    training, heldout, synthetic, names = gm_sets
    ids = [f"sub-{i:02d}" for i in range(len(training))]
    check = check_memorization(synthetic, training, training_ids=ids, synthetic_ids=names,
                               heldout=heldout, heldout_ids=[f"sub-h{i}" for i in range(12)],
                               progress=False)
    table = check.table.set_index("synthetic_id")
    assert list(table.index[table["flagged"]]) == ["copy", "noised copy"]
    assert table.loc["copy", "dcr_training_id"] == "sub-03"
    assert table.loc["noised copy", "dcr_training_id"] == "sub-17"
    assert table.loc["copy", "dcr"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["copy", "residual_r"] == pytest.approx(1.0)
    # the mean passes the paper's raw-r check for a copy but has no individual residual
    assert table.loc["training mean", "max_r"] > 0.95 and table.loc["training mean", "raw_r_copy"]
    assert np.isnan(table.loc["training mean", "residual_r"])
    assert abs(table.loc["template", "residual_r"]) < check.residual_r_cut
    # the held-out images alone are the baseline (there are enough of them)
    assert set(check.baseline["source"]) == {"held-out"} and len(check.baseline) == 12
    assert 0 < check.dcr_cut < table.loc[~table["flagged"], "dcr"].min()
    assert check.residual_r_cut > table.loc[[n for n in names if n.startswith("new")],
                                            "residual_r"].max()


def test_gate_without_heldout_uses_other_participants(gm_sets):
    """No held-out images: each training image against the other participants' images.

    A second session that nearly repeats a participant's first must not collapse the
    baseline (records of the same participant are excluded).
    """
    training, _, synthetic, names = gm_sets
    rng = np.random.default_rng(1)
    repeat = np.clip(training[0] + rng.normal(0, 0.005, training.shape[1]), 0, 1)
    sessions = np.vstack([training, repeat[None]]).astype(np.float32)
    ids = [f"sub-{i:02d}" for i in range(len(training))] + ["sub-00"]
    check = check_memorization(synthetic, sessions, training_ids=ids, synthetic_ids=names,
                               progress=False)
    assert set(check.baseline["source"]) == {"training (other participants)"}
    assert len(check.baseline) == len(sessions)
    assert check.baseline["dcr"].min() > 0.03  # not the distance between the two sessions
    flagged = check.table.loc[check.table["flagged"], "synthetic_id"].tolist()
    assert flagged == ["copy", "noised copy"]


def test_nearest_records_on_store_rows_equal_dense(gm_sets, tmp_path):
    """Held-out and training rows of one on-disk store, read by small blocks."""
    training, heldout, _, _ = gm_sets
    np.save(tmp_path / "store.npy", np.vstack([heldout, training]))
    data = np.load(tmp_path / "store.npy", mmap_mode="r")
    found = nearest_records(data, data, query_rows=np.arange(12),
                            training_rows=np.arange(12, 12 + len(training)), memory_mb=0.1,
                            progress=False)
    mean = training.astype(np.float64).mean(axis=0)
    q, t = heldout - mean, training - mean
    dist = np.sqrt(((heldout[:, None, :].astype(np.float64) - training[None]) ** 2).mean(axis=2))
    corr = (q @ t.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(t, axis=1))
    np.testing.assert_array_equal(found.nearest, dist.argmin(axis=1))
    np.testing.assert_allclose(found.dcr, dist.min(axis=1), rtol=1e-6)
    np.testing.assert_allclose(found.residual_r, corr[np.arange(12), dist.argmin(axis=1)],
                               rtol=1e-6)
    np.testing.assert_allclose(found.max_residual_r, corr.max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(found.max_residual_nearest, corr.argmax(axis=1))
    raw = _dense(heldout, training)
    np.testing.assert_allclose(found.max_r, raw.max(axis=1), rtol=1e-9)
    with pytest.raises(ValueError, match="rows must index"):
        nearest_records(data, data, training_rows=[len(data)], progress=False)
    with pytest.raises(ValueError, match="at least two training participants"):
        check_memorization(heldout, training, training_ids=["sub-01"] * len(training),
                           progress=False)


def test_gate_compares_stores_in_one_unit(tmp_path):
    """A synthetic store of a non-probability map (T1w) has its own percentile range; the copy
    of a training image is at distance ~0 only after rescaling into the site store's units."""
    import shutil

    import nibabel as nb
    from _model_factory import RES, write_cohort, write_maps

    from bids_genbrain.cohort import build_cohort, rescaled_rows

    site_table = write_cohort(tmp_path / "site", [40.0 + 3 * i for i in range(12)],
                              modality="T1w")
    site = build_cohort([tmp_path / "site"], tmp_path / "site_store", modalities=["T1w"],
                        participants=site_table, resolution=RES, progress=False)
    # synthetic images: five brighter new people and a byte copy of sub-04's raw image
    brighter = [1.4 * np.asanyarray(nb.load(p).dataobj) for p in site.table["path"][6:11]]
    write_maps(tmp_path / "synthetic", brighter, modality="T1w")
    copy = [p for p in (tmp_path / "synthetic").rglob("sub-05_*T1w.nii*")][0]
    shutil.copy(site.table["path"][3], copy.parent / copy.name)
    synthetic = build_cohort([tmp_path / "synthetic"], tmp_path / "synthetic_store",
                             modalities=["T1w"], resolution=RES, progress=False)
    assert synthetic.normalisation["T1w"]["hi"] > 1.2 * site.normalisation["T1w"]["hi"]
    rescaled = rescaled_rows(synthetic, site, tmp_path / "rescaled.f32")
    assert isinstance(rescaled, np.memmap) and rescaled.dtype == np.float32
    assert rescaled.shape == synthetic.data.shape and 0 <= rescaled.min() <= rescaled.max() <= 1
    row = int(np.flatnonzero(synthetic.table["participant_id"] == "sub-05")[0])
    inside = (synthetic.data[row] > 0) & (synthetic.data[row] < 1)  # not clipped by its range
    np.testing.assert_allclose(rescaled[row][inside], site.data[3][inside], atol=1e-5)
    ids = list(site.table["participant_id"])
    check = check_memorization(rescaled, site.data, training_ids=ids, progress=False)
    assert check.table["flagged"].tolist() == [i == row for i in range(len(rescaled))]
    assert check.table.loc[row, "dcr"] < 0.01  # only where the synthetic range clipped
    # in each store's own units the copy looks like another person (the gate would miss it)
    mixed = check_memorization(synthetic.data, site.data, training_ids=ids, progress=False)
    assert mixed.table.loc[row, "dcr"] > 0.02 and not mixed.table.loc[row, "flagged"]
    # same units: the store's own data, nothing written
    assert rescaled_rows(site, site, tmp_path / "same.f32") is site.data
    assert not (tmp_path / "same.f32").exists()
