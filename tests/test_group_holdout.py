"""Held-out participants of the group level (--holdout): the rule, its sizes, its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_genbrain.errors import InputError
from bids_genbrain.group.plan import MIN_HELDOUT_PER_LEVEL, choose_holdout
from bids_genbrain.stats.glm import make_design


def _site(n_cn: int, n_ad: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_cn + n_ad
    return pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)],
                         "diagnosis": ["CN"] * n_cn + ["AD"] * n_ad,
                         "age": rng.uniform(40, 80, n), "sex": np.resize(["F", "M"], n)})


def test_auto_holds_out_only_large_sites():
    small = _site(12, 12)
    split = choose_holdout(small, make_design(small, "diagnosis", ["age", "sex"]), "auto", 0)
    assert split.heldout == [] and split.fraction == 0
    assert "none held out" in split.rule and "12 AD, 12 CN" in split.rule
    # 50 per group is the smallest site auto holds out from (10 per group)
    large = _site(50, 60)
    split = choose_holdout(large, make_design(large, "diagnosis", ["age", "sex"]), "auto", 0)
    levels = large.set_index("participant_id").loc[split.heldout, "diagnosis"]
    assert levels.value_counts().to_dict() == {"AD": 12, "CN": MIN_HELDOUT_PER_LEVEL}
    assert split.rule == ("20% held out (--holdout auto), stratified by diagnosis: 12 of 60 AD, "
                          "10 of 50 CN")
    # seeded: the same seed gives the same people, another seed others
    again = choose_holdout(large, make_design(large, "diagnosis", ["age", "sex"]), "auto", 0)
    other = choose_holdout(large, make_design(large, "diagnosis", ["age", "sex"]), "auto", 1)
    assert again.heldout == split.heldout != other.heldout
    assert split.heldout == sorted(split.heldout)


def test_fraction_continuous_and_none():
    site = _site(20, 20)
    age = choose_holdout(site, make_design(site, "age", ["sex"]), "0.25", 3)
    assert len(age.heldout) == 10 and "stratified" not in age.rule
    assert choose_holdout(site, make_design(site, "age", ["sex"]), "auto", 3).heldout == []
    none = choose_holdout(site, make_design(site, "diagnosis", ["age"]), "none", 3)
    assert none.heldout == [] and "--holdout none" in none.rule
    tiny = _site(3, 9)
    with pytest.raises(InputError, match="fewer than 2 training participants of \\['CN'\\]"):
        choose_holdout(tiny, make_design(tiny, "diagnosis", ["age"]), "0.5", 0)
