"""Balanced synthetic cohorts: counts per level, covariate distributions, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_genbrain.errors import InputError
from bids_genbrain.synthetic import balance_table, balanced_conditions, read_conditions_tsv


@pytest.fixture()
def site():
    rng = np.random.default_rng(1)
    n = 60
    # an unbalanced, confounded site: patients are older and mostly male
    diagnosis = np.array(["CN"] * 45 + ["AD"] * 15)
    age = np.where(diagnosis == "AD", rng.normal(75, 4, n), rng.normal(65, 6, n))
    sex = np.where(rng.random(n) < np.where(diagnosis == "AD", 0.8, 0.4), "M", "F")
    return pd.DataFrame({
        "age": age,
        "sex": pd.Categorical(sex, categories=["F", "M"]),
        "diagnosis": pd.Categorical(diagnosis, categories=["AD", "CN"]),
        "score": rng.normal(28, 2, n),
    })


def test_balanced_over_categorical_contrast(site):
    out = balanced_conditions(site, ["age", "sex", "diagnosis"], 401, contrast="diagnosis", seed=3)
    counts = out["diagnosis"].value_counts()
    assert abs(counts["AD"] - counts["CN"]) <= 1
    assert list(out.columns) == ["age", "sex", "diagnosis"]
    # age/sex follow the whole site's distribution, the same in both levels
    assert stats.ks_2samp(out["age"], site["age"]).pvalue > 0.01
    by_level = out.groupby("diagnosis", observed=True)["age"].mean()
    assert abs(by_level["AD"] - by_level["CN"]) < 2.0, "contrast confounded with age"
    site_female = (site["sex"] == "F").mean()
    assert abs((out["sex"] == "F").mean() - site_female) < 0.08
    assert out["age"].between(site["age"].min(), site["age"].max()).all()
    assert isinstance(out["sex"].dtype, pd.CategoricalDtype)
    table = balance_table(out, "diagnosis")
    assert set(table["level"]) == {"AD", "CN"} and table["N"].sum() == 401


def test_continuous_contrast_and_reproducible(site):
    a = balanced_conditions(site, ["age", "sex", "score"], 50, contrast="score", seed=9)
    b = balanced_conditions(site, ["age", "sex", "score"], 50, contrast="score", seed=9)
    c = balanced_conditions(site, ["age", "sex", "score"], 50, contrast="score", seed=10)
    pd.testing.assert_frame_equal(a, b)
    assert not a["age"].equals(c["age"])
    np.testing.assert_allclose(np.sort(a["score"]),
                               np.linspace(site["score"].min(), site["score"].max(), 50))


def test_errors(site, tmp_path):
    with pytest.raises(InputError, match="not in participants.tsv"):
        balanced_conditions(site, ["age", "handedness"], 10)
    with pytest.raises(InputError, match="must also be a --condition"):
        balanced_conditions(site, ["age"], 10, contrast="diagnosis")
    one_level = site[site["diagnosis"] == "CN"]
    with pytest.raises(InputError, match="fewer than two levels"):
        balanced_conditions(one_level, ["age", "diagnosis"], 10, contrast="diagnosis")
    tsv = tmp_path / "c.tsv"
    tsv.write_text("age\tsex\tdiagnosis\n70\tF\tAD\n60\tM\tMCI\n")
    with pytest.raises(InputError, match="MCI"):
        read_conditions_tsv(tsv, ["age", "sex", "diagnosis"], site)
    tsv.write_text("age\tsex\tdiagnosis\n70\tF\tAD\n60\tM\tCN\n")
    given = read_conditions_tsv(tsv, ["age", "sex", "diagnosis"], site)
    assert list(given["diagnosis"]) == ["AD", "CN"] and list(given["age"]) == [70.0, 60.0]


def test_balance_table_counts_string_levels():
    """The group level passes the contrast as a string column: still one row per level."""
    table = pd.DataFrame({"diagnosis": pd.array(["CN", "AD", "AD"], dtype="string"),
                          "age": [60.0, 70.0, 80.0], "sex": ["F", "M", "F"]})
    balance = balance_table(table, "diagnosis").set_index("level")
    assert balance["N"].to_dict() == {"AD": 2, "CN": 1}
