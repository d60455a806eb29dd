"""The synthetic cohort: which conditions to generate, and its own BIDS-Derivatives dataset.

A synthetic cohort is *balanced* over the contrast of interest: each level of a categorical
contrast gets the same number of images (a continuous contrast is spread evenly over the site's
range), while age, sex and every other condition are drawn jointly from the site's own rows, so
that the contrast is not confounded with them. A user may instead give the conditions as a TSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

def balanced_conditions(
    site: pd.DataFrame,
    conditions: Sequence[str],
    n: int,
    *,
    contrast: str | None = None,
    seed: int = 0,
    age_jitter: float = 1.0,
) -> pd.DataFrame:
    """Conditions of ``n`` synthetic images, balanced over ``contrast``.

    Parameters
    ----------
    site : pandas.DataFrame
        The real cohort's typed covariates (one row per training image).
    conditions : sequence of str
        Columns the model is conditioned on (must include ``contrast`` when given).
    n : int
        Number of synthetic images.
    contrast : str, optional
        Column to balance. Categorical: equal counts per observed level (remainder to the
        first levels). Continuous: values evenly spaced over the observed range.
    seed : int
        Seed of the draws.
    age_jitter : float
        Standard deviation (years) of Gaussian noise added to ``age`` drawn from the site,
        clipped to the site's range, so the synthetic ages are not a few repeated values.

    Returns
    -------
    pandas.DataFrame, shape (n, len(conditions))
        The conditions, with the dtypes of ``site``; row ``i`` becomes synthetic image ``i``
        (its sampling seed derives from the run seed and ``i``).

    Raises
    ------
    InputError
        A condition missing from the table, a contrast that is not a condition, or a contrast
        with fewer than two levels.
    """
    missing = [c for c in conditions if c not in site.columns]
    if missing:
        raise InputError(f"condition column(s) {missing} not in participants.tsv "
                         f"(columns: {[c for c in site.columns if c != 'participant_id']})")
    if contrast is not None and contrast not in conditions:
        raise InputError(f"--contrast {contrast!r} must also be a --condition")
    if n < 1:
        raise InputError("--n-synthetic must be at least 1")
    rng = np.random.default_rng(seed)
    complete = site.dropna(subset=list(conditions))
    if complete.empty:
        raise InputError(f"no participant has all of {list(conditions)} filled in")
    others = [c for c in conditions if c != contrast]
    rows = complete.iloc[rng.integers(0, len(complete), size=n)][others].reset_index(drop=True)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    for column in others:
        out[column] = rows[column].to_numpy()
        if isinstance(site[column].dtype, pd.CategoricalDtype):
            out[column] = pd.Categorical(out[column], categories=site[column].cat.categories)
    if "age" in others and age_jitter > 0:
        lo, hi = complete["age"].min(), complete["age"].max()
        out["age"] = np.clip(out["age"] + rng.normal(0, age_jitter, n), lo, hi)
    if contrast is not None:
        values = complete[contrast]
        if isinstance(values.dtype, pd.CategoricalDtype):
            levels = [lvl for lvl in values.cat.categories if (values == lvl).any()]
            if len(levels) < 2:
                raise InputError(f"--contrast {contrast!r} has fewer than two levels in the data")
            assigned = np.resize(np.array(levels, dtype=object), n)
            rng.shuffle(assigned)
            out[contrast] = pd.Categorical(assigned, categories=values.cat.categories)
        else:
            if values.nunique() < 2:
                raise InputError(f"--contrast {contrast!r} is constant in the data")
            spread = np.linspace(values.min(), values.max(), n)
            out[contrast] = rng.permutation(spread)
    return out[list(conditions)]


def read_conditions_tsv(path: Path | str, conditions: Sequence[str],
                        site: pd.DataFrame) -> pd.DataFrame:
    """Conditions of the synthetic cohort given by the user as a TSV (one row per image).

    Parameters
    ----------
    path : path-like
        TSV with one column per condition (other columns are ignored).
    conditions : sequence of str
    site : pandas.DataFrame
        The real cohort, whose categories the TSV's values must belong to.

    Returns
    -------
    pandas.DataFrame
        As :func:`balanced_conditions`.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read the conditions TSV ({exc})") from None
    missing = [c for c in conditions if c not in table.columns]
    if missing:
        raise InputError(f"{path}: lacks condition column(s) {missing}; add them")
    out = pd.DataFrame(index=pd.RangeIndex(len(table)))
    for column in conditions:
        if isinstance(site[column].dtype, pd.CategoricalDtype):
            cats = site[column].cat.categories
            values = table[column].astype(str)
            unknown = sorted(set(values) - set(map(str, cats)))
            if unknown:
                raise InputError(f"{path}: {column} value(s) {unknown} unknown; use {list(cats)}")
            out[column] = pd.Categorical(values, categories=cats)
        else:
            out[column] = pd.to_numeric(table[column], errors="raise").astype(float)
    return out


def balance_table(table: pd.DataFrame, contrast: str | None,
                  covariates: Sequence[str] = ("age", "sex")) -> pd.DataFrame:
    """Summary of a cohort per contrast level: N, mean/SD age, share female.

    Parameters
    ----------
    table : pandas.DataFrame
        Real or synthetic conditions.
    contrast : str or None
        Grouping column (categorical, string or object); the whole cohort when None or
        numeric.
    covariates : sequence of str

    Returns
    -------
    pandas.DataFrame
        One row per level.
    """
    grouping = (table[contrast].astype(str) if contrast is not None
                and not pd.api.types.is_numeric_dtype(table[contrast]) else
                pd.Series("all", index=table.index))
    rows = []
    for level, part in table.groupby(grouping, observed=True):
        row: dict[str, object] = {"level": level, "N": len(part)}
        if "age" in covariates and "age" in part:
            row["age mean"] = float(part["age"].mean())
            row["age SD"] = float(part["age"].std(ddof=1)) if len(part) > 1 else float("nan")
        if "sex" in covariates and "sex" in part:
            row["female %"] = float((part["sex"].astype(str) == "F").mean() * 100)
        rows.append(row)
    return pd.DataFrame(rows)
