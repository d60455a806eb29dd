"""Known answers of the augmentation protocol: AUROC, bootstrap CIs, splits, draws, the curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from bids_genbrain.evaluate import augment as aug


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random((5, 40)) < 0.4
    score = np.round(rng.normal(size=(5, 40)) + y, 1)  # ties
    ours = aug.auroc(y, score)
    assert np.allclose(ours, [roc_auc_score(a, b) for a, b in zip(y, score, strict=True)])
    assert np.isnan(aug.auroc(np.ones(4, bool), np.arange(4.0)))


def test_bootstrap_metrics_known_cases():
    y = np.array([False] * 20 + [True] * 20)
    perfect = aug.bootstrap_metrics(y, y.astype(float) * 0.8 + 0.1, n_boot=200, seed=1)
    assert perfect["auroc"] == 1.0 and perfect["auroc_ci_low"] == 1.0
    assert perfect["accuracy"] == 1.0 and perfect["n"] == 40
    rng = np.random.default_rng(2)
    noisy = aug.bootstrap_metrics(y, rng.random(40), n_boot=1000, seed=3)
    assert noisy["auroc_ci_low"] < noisy["auroc"] < noisy["auroc_ci_high"]
    assert noisy["accuracy_ci_low"] < noisy["accuracy"] < noisy["accuracy_ci_high"]
    assert noisy["auroc_ci_low"] < 0.5 < noisy["auroc_ci_high"]  # a random score
    again = aug.bootstrap_metrics(y, rng.random(40) * 0 + np.linspace(0, 1, 40), seed=3)
    assert again["auroc"] == 1.0  # sorted scores rank every positive above every negative


def test_split_is_stratified_seeded_and_disjoint():
    ids = [f"sub-{i:02d}" for i in range(50)]
    labels = pd.Series(["AD"] * 20 + ["CN"] * 30, index=ids)
    split = aug.split_participants(labels, seed=5)
    assert split.value_counts().to_dict() == {"train": 30, "validation": 10, "test": 10}
    for part in aug.SPLITS:  # 2:3 classes in each set
        counts = labels[split == part].value_counts()
        assert counts["CN"] / counts.sum() == pytest.approx(0.6)
    assert split.equals(aug.split_participants(labels, seed=5))
    assert not split.equals(aug.split_participants(labels, seed=6))
    with pytest.raises(ValueError, match="at least 3 per class"):
        aug.split_participants(pd.Series(["AD", "AD", "CN", "CN", "CN", "CN"]), seed=0)


def test_hyperparameter_draws_stay_in_their_ranges():
    draws = aug.draw_hyperparameters(200, seed=0)
    assert draws == aug.draw_hyperparameters(200, seed=0)
    for name, spec in aug.HYPERPARAMETER_RANGES.items():
        values = np.array([d[name] for d in draws])
        assert values.min() >= spec["low"] and values.max() <= spec["high"], name
        assert values.min() < spec["low"] + 0.3 * (spec["high"] - spec["low"])  # spread
    assert all(d["num_leaves"] <= 2 ** d["max_depth"] for d in draws)
    assert max(d["n_estimators"] for d in aug.draw_hyperparameters(50, 0, max_trees=20)) <= 20
    assert aug.ratio_grid() == [round(0.1 * k, 3) for k in range(31)]


def _gaussian(n, rng, flip=False):
    y = np.arange(n) % 2 == 1
    x = rng.normal(size=(n, 5)) + 1.5 * y[:, None]
    return aug.LabelledSet(x=x, y=~y if flip else y)


def test_curve_uses_the_synthetic_images():
    """Synthetic images with inverted classes, three times as many as the real ones, turn the
    classifier around: the test AUROC falls from high at ratio 0 to below 0.5 at ratio 3."""
    rng = np.random.default_rng(0)
    train, validation = _gaussian(30, rng), _gaussian(20, rng)
    test = _gaussian(60, rng)
    flipped = _gaussian(90, rng, flip=True)
    results = {ratio: metrics for ratio, metrics, _ in aug.augmentation_curve(
        train, validation, [test], flipped, [0.0, 3.0], n_draws=3, n_boot=50, max_trees=40,
        seed=1)}
    assert results[0.0]["auroc"].iloc[0] > 0.85
    assert results[3.0]["auroc"].iloc[0] < 0.5
    assert results[3.0]["n_synthetic"].iloc[0] == 90
    with pytest.raises(ValueError, match="needs 120 synthetic"):
        list(aug.augmentation_curve(train, validation, [test], flipped, [4.0], n_draws=1))


def test_selection_keeps_the_best_validation_draw():
    rng = np.random.default_rng(3)
    train, validation = _gaussian(40, rng), _gaussian(30, rng)
    draws = aug.draw_hyperparameters(4, seed=2, max_trees=30)
    chosen = aug.select_classifier(train.x, train.y, validation.x, validation.y, draws, seed=0)
    table = chosen.draws
    assert table["chosen"].sum() == 1
    assert table.loc[table["chosen"], "validation_auroc"].iloc[0] == \
        table["validation_auroc"].max()
