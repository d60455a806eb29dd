"""Data augmentation with synthetic images: does it make a classifier generalise across sites?

The protocol of the GenBrain paper, on feature arrays (:mod:`.regional` gives regional volumes):

1. :func:`split_participants`: the training site's participants are split 3:1:1 into
   training, validation and test sets, stratified by the label and seeded; every other site
   is a cross-site test set as a whole.
2. For each synthetic:real ratio ``r`` (0 to 3 in steps of 0.1, :func:`ratio_grid`), the
   training set is the real training participants plus the first ``round(r * n_train)``
   synthetic images (so a larger ratio adds images to a smaller one's set).
3. :func:`draw_hyperparameters`: :data:`N_DRAWS` (20) random LightGBM configurations per
   ratio from :data:`HYPERPARAMETER_RANGES`; the one with the highest validation AUROC
   (ties: the first drawn) is kept (:func:`select_classifier`).
4. :func:`bootstrap_metrics`: its accuracy and AUROC on the within-site test set and on every
   other site, each with a percentile bootstrap 95 % CI over the test participants
   (:data:`N_BOOTSTRAP` = 1000 resamples).

Everything random (splits, draws, LightGBM's bagging, bootstrap) derives from one seed, so a
run is reproducible on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

N_DRAWS = 20
"""Random hyper-parameter draws per ratio (the paper's)."""
N_BOOTSTRAP = 1000
"""Bootstrap resamples of each test set."""
MAX_RATIO = 3.0
RATIO_STEP = 0.1
SPLIT = (3, 1, 1)
"""Training : validation : test proportions within the training site."""

HYPERPARAMETER_RANGES: dict[str, dict[str, Any]] = {
    "n_estimators": {"low": 50, "high": 500, "scale": "integer"},
    "max_depth": {"low": 2, "high": 8, "scale": "integer"},
    "num_leaves": {"low": 4, "high": 64, "scale": "integer",
                   "note": "capped at 2^max_depth"},
    "learning_rate": {"low": 0.01, "high": 0.3, "scale": "log"},
    "subsample": {"low": 0.5, "high": 1.0, "scale": "linear",
                  "note": "row bagging fraction, re-drawn every iteration"},
    "colsample_bytree": {"low": 0.5, "high": 1.0, "scale": "linear"},
    "min_child_samples": {"low": 2, "high": 20, "scale": "integer"},
}
"""Where each LightGBM hyper-parameter is drawn from (uniform on the given scale, bounds
included); the same ranges at every ratio."""

SPLITS = ("train", "validation", "test")


def ratio_grid(max_ratio: float = MAX_RATIO, step: float = RATIO_STEP) -> list[float]:
    """Ratios ``0, step, 2 step, ..., max_ratio`` (rounded to 0.001).

    Raises
    ------
    ValueError
        ``step`` not positive or ``max_ratio`` negative.
    """
    if not step > 0 or max_ratio < 0:
        raise ValueError(f"need a positive ratio step and a non-negative maximum, got "
                         f"{step} and {max_ratio}")
    n = int(math.floor(max_ratio / step + 1e-9))
    return [round(k * step, 3) for k in range(n + 1)]


def split_participants(labels: pd.Series, seed: int,
                       proportions: Sequence[int] = SPLIT) -> pd.Series:
    """Stratified, seeded split of participants into training, validation and test sets.

    Parameters
    ----------
    labels : pandas.Series
        The class of each participant, indexed by participant id.
    seed : int
    proportions : sequence of 3 int
        Training : validation : test (3:1:1).

    Returns
    -------
    pandas.Series
        ``train``, ``validation`` or ``test`` per participant (the index of ``labels``).

    Raises
    ------
    ValueError
        A class with fewer participants than the three sets need (one in each).
    """
    from sklearn.model_selection import train_test_split

    counts = labels.value_counts()
    if len(counts) < 2:
        raise ValueError(f"the training site has a single class {list(counts.index)}")
    if counts.min() < 3:
        raise ValueError(f"class {counts.idxmin()!r} has {counts.min()} participant(s) at the "
                         "training site; a stratified 3:1:1 split needs at least 3 per class")
    total = float(sum(proportions))
    ids = labels.index.to_numpy()
    rest, test = train_test_split(ids, test_size=proportions[2] / total,
                                  stratify=labels.to_numpy(), random_state=seed)
    train, validation = train_test_split(
        rest, test_size=proportions[1] / (proportions[0] + proportions[1]),
        stratify=labels.loc[rest].to_numpy(), random_state=seed + 1)
    split = pd.Series("train", index=labels.index, name="split")
    split.loc[validation] = "validation"
    split.loc[test] = "test"
    return split


def draw_hyperparameters(n: int, seed: int, *, max_trees: int | None = None) -> list[dict]:
    """``n`` random LightGBM configurations from :data:`HYPERPARAMETER_RANGES`.

    Parameters
    ----------
    n : int
    seed : int
    max_trees : int, optional
        Upper bound on ``n_estimators`` (tests); the lower bound follows when needed.

    Returns
    -------
    list of dict
        LightGBM keyword arguments (``subsample_freq`` 1 so that ``subsample`` acts).
    """
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n):
        params: dict[str, Any] = {}
        for name, spec in HYPERPARAMETER_RANGES.items():
            low, high = spec["low"], spec["high"]
            if name == "n_estimators" and max_trees is not None:
                high = min(high, max_trees)
                low = min(low, high)
            if spec["scale"] == "integer":
                params[name] = int(rng.integers(low, high + 1))
            elif spec["scale"] == "log":
                params[name] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            else:
                params[name] = float(rng.uniform(low, high))
        params["num_leaves"] = int(min(params["num_leaves"], 2 ** params["max_depth"]))
        params["subsample_freq"] = 1
        draws.append(params)
    return draws


def auroc(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of each row (Mann-Whitney U with mid-ranks for ties).

    Parameters
    ----------
    y : ndarray of bool, shape (..., n)
    score : ndarray, shape (..., n)

    Returns
    -------
    ndarray, shape (...)
        NaN where a row has a single class.
    """
    y = np.asarray(y, dtype=bool)
    ranks = stats.rankdata(score, axis=-1)
    n_pos = y.sum(axis=-1)
    n_neg = y.shape[-1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        value = ((ranks * y).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), value, np.nan)


def bootstrap_metrics(y: np.ndarray, probability: np.ndarray, *, n_boot: int = N_BOOTSTRAP,
                      seed: int = 0, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy and AUROC of predictions, with percentile bootstrap 95 % CIs.

    Parameters
    ----------
    y : ndarray of bool, shape (n,)
        True class (positive = True).
    probability : ndarray, shape (n,)
        Predicted probability of the positive class.
    n_boot : int
        Resamples of the ``n`` test participants, with replacement.
    seed : int
    threshold : float
        Probability at or above which the positive class is predicted.

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``accuracy_ci_low``, ``accuracy_ci_high``, ``auroc``,
        ``auroc_ci_low``, ``auroc_ci_high`` (resamples with one class are left out of the
        AUROC interval).
    """
    y = np.asarray(y, dtype=bool)
    p = np.asarray(probability, dtype=float)
    correct = (p >= threshold) == y
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(n_boot, y.size))
    acc = correct[idx].mean(axis=1)
    auc = auroc(y[idx], p[idx])
    auc = auc[np.isfinite(auc)]
    point = float(auroc(y, p))

    def interval(values: np.ndarray) -> tuple[float, float]:
        if values.size == 0:
            return math.nan, math.nan
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)

    a_low, a_high = interval(acc)
    u_low, u_high = interval(auc)
    return {"n": int(y.size), "accuracy": float(correct.mean()), "accuracy_ci_low": a_low,
            "accuracy_ci_high": a_high, "auroc": point, "auroc_ci_low": u_low,
            "auroc_ci_high": u_high}


def _classifier(params: dict, seed: int):
    from lightgbm import LGBMClassifier

    return LGBMClassifier(**params, random_state=seed, n_jobs=1, verbose=-1)


@dataclass(frozen=True)
class Selection:
    """The classifier chosen at one ratio.

    Attributes
    ----------
    model : lightgbm.LGBMClassifier
    draw : int
        Index of the chosen hyper-parameter draw.
    draws : pandas.DataFrame
        Every draw: its parameters, ``validation_auroc``, ``validation_accuracy``, ``chosen``.
    """

    model: Any
    draw: int
    draws: pd.DataFrame


def select_classifier(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                      y_val: np.ndarray, draws: Sequence[dict], seed: int) -> Selection:
    """Fit one LightGBM classifier per hyper-parameter draw; keep the best on validation.

    Parameters
    ----------
    x_train, y_train : ndarray
        Features ``(n, p)`` and bool classes of the training set (real + synthetic).
    x_val, y_val : ndarray
        The validation set (real participants only).
    draws : sequence of dict
        From :func:`draw_hyperparameters`.
    seed : int
        LightGBM's seed (bagging, feature sampling).

    Returns
    -------
    Selection
        Highest validation AUROC; ties go to the higher accuracy, then the first draw.
    """
    rows, best, best_key = [], None, None
    for k, params in enumerate(draws):
        model = _classifier(params, seed).fit(x_train, y_train)
        prob = model.predict_proba(x_val)[:, 1]
        val_auc = float(auroc(y_val, prob))
        val_acc = float(((prob >= 0.5) == y_val).mean())
        rows.append({"draw": k, **params, "validation_auroc": val_auc,
                     "validation_accuracy": val_acc})
        key = (np.nan_to_num(val_auc, nan=-1.0), val_acc)
        if best_key is None or key > best_key:
            best, best_key = (k, model), key
    table = pd.DataFrame(rows)
    table["chosen"] = table["draw"] == best[0]
    return Selection(model=best[1], draw=best[0], draws=table)


@dataclass(frozen=True)
class LabelledSet:
    """Features and classes of one set of images.

    Attributes
    ----------
    x : ndarray, shape (n, n_features)
    y : ndarray of bool, shape (n,)
    name : str
        ``within-site test (site1)``, ``cross-site test (site2)`` ...
    """

    x: np.ndarray
    y: np.ndarray
    name: str = ""


def augmentation_curve(
    train: LabelledSet,
    validation: LabelledSet,
    tests: Sequence[LabelledSet],
    synthetic: LabelledSet,
    ratios: Sequence[float],
    *,
    n_draws: int = N_DRAWS,
    n_boot: int = N_BOOTSTRAP,
    max_trees: int | None = None,
    seed: int = 0,
    on_ratio: Callable[[float, pd.DataFrame, pd.DataFrame], None] | None = None,
) -> Iterator[tuple[float, pd.DataFrame, pd.DataFrame]]:
    """Train, select and test a classifier at every synthetic:real ratio.

    Parameters
    ----------
    train, validation : LabelledSet
        The training site's real training and validation participants.
    tests : sequence of LabelledSet
        The within-site test set, then every other site.
    synthetic : LabelledSet
        Synthetic images, in the order they are added (ratio ``r`` uses the first
        ``round(r * len(train.y))``).
    ratios : sequence of float
    n_draws, n_boot, max_trees, seed
        See :func:`draw_hyperparameters`, :func:`bootstrap_metrics`.
    on_ratio : callable, optional
        Called with each ratio's results as they come (progress, writing).

    Yields
    ------
    ratio : float
    metrics : pandas.DataFrame
        One row per test set: ``ratio``, ``n_real_train``, ``n_synthetic``, ``test_set``
        and :func:`bootstrap_metrics`' columns.
    draws : pandas.DataFrame
        Every hyper-parameter draw of the ratio (:class:`Selection`), with ``ratio``.

    Raises
    ------
    ValueError
        A ratio needs more synthetic images than given.
    """
    n_train = len(train.y)
    for k, ratio in enumerate(ratios):
        n_syn = int(round(ratio * n_train))
        if n_syn > len(synthetic.y):
            raise ValueError(f"ratio {ratio:g} needs {n_syn} synthetic images, "
                             f"{len(synthetic.y)} given")
        x = np.vstack([train.x, synthetic.x[:n_syn]])
        y = np.concatenate([train.y, synthetic.y[:n_syn]])
        draw_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        draws = draw_hyperparameters(n_draws, draw_seed, max_trees=max_trees)
        chosen = select_classifier(x, y, validation.x, validation.y, draws, seed)
        rows = []
        for j, test in enumerate(tests):
            prob = chosen.model.predict_proba(test.x)[:, 1]
            rows.append({"ratio": ratio, "n_real_train": n_train, "n_synthetic": n_syn,
                         "test_set": test.name,
                         **bootstrap_metrics(test.y, prob, n_boot=n_boot, seed=seed + j)})
        metrics = pd.DataFrame(rows)
        table = chosen.draws.assign(ratio=ratio)
        if on_ratio is not None:
            on_ratio(ratio, metrics, table)
        yield ratio, metrics, table
