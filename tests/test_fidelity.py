"""Conditional fidelity measures on arrays with planted effects (evaluate/fidelity.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from bids_genbrain.evaluate.fidelity import (
    LEARNED_R,
    EffectCohort,
    condition_contrasts,
    condition_fidelity,
    cosine_similarity,
    design_stability,
    effect_map,
    map_correlation,
    real_map_ceiling,
)
from bids_genbrain.stats.glm import make_design

SHAPE = (14, 16, 14)


def _cohort(rng: np.random.Generator, n: int, *, diagnosis_effect: bool,
            age_effect: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Images with an age slope in one region and a diagnosis effect in another."""
    grid = np.indices(SHAPE)
    age_region = (np.abs(grid[0] - 4) < 3) & (np.abs(grid[1] - 8) < 4)
    dx_region = (np.abs(grid[0] - 10) < 3) & (np.abs(grid[2] - 7) < 3)
    table = pd.DataFrame({
        "age": rng.uniform(40, 80, n),
        "sex": rng.permutation(np.resize(["F", "M"], n)),
        "diagnosis": rng.permutation(np.resize(["CN", "AD", "MCI"], n)),
    })
    rows = []
    for _, row in table.iterrows():
        noise = gaussian_filter(rng.normal(size=SHAPE), 1.0)
        img = 0.5 + noise / noise.std()
        if age_effect:
            img -= 0.06 * (row["age"] - 60) * age_region
        if diagnosis_effect:
            img -= {"CN": 0.0, "MCI": 0.6, "AD": 1.2}[row["diagnosis"]] * dx_region
        rows.append(img.ravel())
    return np.asarray(rows, dtype=np.float32), table


@pytest.fixture(scope="module")
def cohorts():
    rng = np.random.default_rng(3)
    real = _cohort(rng, 60, diagnosis_effect=True)
    learned = _cohort(rng, 90, diagnosis_effect=True)
    ignored = _cohort(rng, 90, diagnosis_effect=False)
    return real, learned, ignored


def test_map_measures():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    assert map_correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert map_correlation(a, -a) == pytest.approx(-1.0)
    assert math.isnan(map_correlation(a, np.ones(4)))
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    # cosine sees a common offset that Pearson r ignores
    assert cosine_similarity([1, 2, 3], [11, 12, 13]) > 0.9
    assert map_correlation([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    assert math.isnan(cosine_similarity([0, 0], [1, 2]))
    with pytest.raises(ValueError, match="differ in size"):
        map_correlation([1, 2], [1, 2, 3])


def test_condition_contrasts():
    table = pd.DataFrame({"age": [50.0, 61.5, 70.0], "sex": ["M", "F", "M"],
                          "dx": ["CN", "AD", "MCI"], "site": [1, 2, 2], "k": ["a"] * 3})
    assert [c.label for c in condition_contrasts(table, "age")] == ["age (continuous)"]
    assert [c.levels for c in condition_contrasts(table, "sex")] == [("F", "M")]
    assert [c.levels for c in condition_contrasts(table, "dx")] == [("AD", "CN"), ("AD", "MCI")]
    assert [c.levels for c in condition_contrasts(table, "site")] == [("1", "2")]
    assert condition_contrasts(table, "k") == []


def test_learned_and_not_learned(cohorts):
    """A cohort generated with every effect learns them all; one without diagnosis does not."""
    (real_x, real_t), (good_x, good_t), (bad_x, bad_t) = cohorts
    real = EffectCohort(real_x, real_t, name="held-out real participants")
    conditions = ["age", "sex", "diagnosis"]
    good = condition_fidelity(real, EffectCohort(good_x, good_t, name="synthetic"), conditions)
    assert good["contrast"].tolist() == ["age (continuous)", "sex: M - F",
                                         "diagnosis: CN - AD", "diagnosis: MCI - AD"]
    status = good.set_index("contrast")["status"]
    assert status["age (continuous)"] == "learned"
    assert status["diagnosis: CN - AD"] == "learned"
    assert good.set_index("contrast").loc["diagnosis: CN - AD", "r_d"] > 0.5
    # sex has no effect in either cohort: the real map is noise, nothing to check against
    assert status["sex: M - F"] == "not measured"
    assert good.set_index("contrast").loc["sex: M - F", "r_d_ceiling"] < LEARNED_R
    assert "mostly noise" in good.set_index("contrast").loc["sex: M - F", "reason"]
    bad = condition_fidelity(real, EffectCohort(bad_x, bad_t, name="synthetic"), conditions)
    rows = bad.set_index("contrast")
    assert rows.loc["age (continuous)", "status"] == "learned"
    for label in ("diagnosis: CN - AD", "diagnosis: MCI - AD"):
        assert rows.loc[label, "status"] == "not learned"
        assert abs(rows.loc[label, "r_d"]) < LEARNED_R
        assert "not to be trusted" in rows.loc[label, "reason"]
    assert (rows["n_real"] > 0).all() and (rows["df_synthetic"] > 0).all()
    # the planted effects leave room for a learned map; the ceiling bounds what a map can reach
    assert (rows.loc[["age (continuous)", "diagnosis: CN - AD"], "r_d_ceiling"] > 0.7).all()
    assert (good["r_d"] <= good["r_d_ceiling"] + 0.1).all()


def test_ceiling_of_a_noisy_real_map():
    """A noise-free map of the truth correlates with a noisy real map about as the ceiling says;
    a map of pure noise has a ceiling near 0."""
    rng = np.random.default_rng(8)
    n, n_vox = 40, 4000
    truth = np.zeros(n_vox)
    truth[:800] = 1.0
    group = np.repeat(["A", "B"], n // 2)
    for effect, low, high in ((0.6, 0.5, 0.9), (0.0, 0.0, 0.15)):
        x = rng.normal(size=(n, n_vox)) + effect * (group == "B")[:, None] * truth
        fit = effect_map(EffectCohort(x, pd.DataFrame({"g": group})),
                         condition_contrasts(pd.DataFrame({"g": group}), "g")[0], [])
        ceiling = real_map_ceiling(fit)
        assert low <= ceiling <= high, (effect, ceiling)
        if effect:
            assert map_correlation(truth, fit.d) == pytest.approx(ceiling, abs=0.05)


def test_heldout_not_estimable_falls_back_to_training(cohorts):
    """Held-out people all of one sex: sex is measured against the training participants."""
    (real_x, real_t), (good_x, good_t), _ = cohorts
    females = np.flatnonzero(real_t["sex"] == "F")[:8]
    rest = np.setdiff1d(np.arange(len(real_t)), females)
    heldout = EffectCohort(real_x, real_t.iloc[females].reset_index(drop=True), rows=females,
                           name="held-out")
    training = EffectCohort(real_x, real_t.iloc[rest].reset_index(drop=True), rows=rest,
                            name="training")
    table = condition_fidelity(heldout, EffectCohort(good_x, good_t, name="synthetic"),
                               ["age", "sex"], second_real=training).set_index("contrast")
    sex = table.loc["sex: M - F"]
    assert sex["real_cohort"].startswith("training (in-sample: not estimable in the held-out")
    assert sex["n_real"] == len(rest) and sex["status"] in ("not measured", "not learned")
    assert "measured in-sample" in sex["reason"]
    assert table.loc["age (continuous)", "real_cohort"] == "held-out"


def test_second_real_cohort_and_not_measured(cohorts):
    (real_x, real_t), (good_x, good_t), _ = cohorts
    heldout = EffectCohort(real_x, real_t.iloc[:30].reset_index(drop=True),
                           rows=np.arange(30), name="held-out")
    training = EffectCohort(real_x, real_t.iloc[30:].reset_index(drop=True),
                            rows=np.arange(30, 60), name="training")
    synth_table = good_t.copy()
    synth_table["diagnosis"] = "CN"  # a synthetic cohort without the other levels
    table = condition_fidelity(heldout, EffectCohort(good_x, synth_table, name="synthetic"),
                               ["age", "diagnosis"], second_real=training)
    assert {"r_d_second", "cosine_t_second", "r_d_real_split"} <= set(table.columns)
    rows = table.set_index("contrast")
    assert rows.loc["age (continuous)", "r_d_real_split"] > 0.5
    assert rows.loc["diagnosis: CN - AD", "status"] == "not measured"
    assert "synthetic" in rows.loc["diagnosis: CN - AD", "reason"]


def test_continuous_d_does_not_depend_on_units(cohorts):
    (x, t), _, _ = cohorts
    years = effect_map(EffectCohort(x, t), condition_contrasts(t, "age")[0], ["sex"])
    decades = t.assign(age=t["age"] / 10)
    per_decade = effect_map(EffectCohort(x, decades), condition_contrasts(decades, "age")[0],
                            ["sex"])
    np.testing.assert_allclose(years.d, per_decade.d, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(years.d, 2 * years.t / np.sqrt(years.design.df))


def test_design_stability():
    """The first demo's design (10 participants, 5 residual df) warns; 40 per group does not."""
    rng = np.random.default_rng(0)

    def table(n_cn: int, n_ad: int) -> pd.DataFrame:
        n = n_cn + n_ad
        return pd.DataFrame({"dx": ["CN"] * n_cn + ["AD"] * n_ad, "age": rng.uniform(40, 80, n),
                             "sex": np.resize(["F", "M"], n),
                             "site": np.resize(list("ABBAABABBA"), n)})

    demo = design_stability(make_design(table(5, 5), "dx", ["age", "sex", "site"]))
    assert demo.df == 5 and not demo.stable
    assert "residual degrees of freedom" in demo.message and "5 AD" in demo.message
    fine = design_stability(make_design(table(40, 40), "dx", ["age", "sex"]))
    assert fine.stable and fine.message == "" and fine.null_sd_d < 0.5
    lopsided = design_stability(make_design(table(100, 3), "dx", ["age", "sex"]))
    assert lopsided.df >= 20 and not lopsided.stable and "null standard deviation" in \
        lopsided.message
    continuous = design_stability(make_design(table(8, 8), "age", ["sex"]))
    assert continuous.df == 13 and not continuous.stable
