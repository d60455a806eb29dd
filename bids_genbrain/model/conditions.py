"""Conditions of the model and their encodings (participants.tsv columns -> tensors).

A condition is categorical (``sex``, ``diagnosis``, the ``modality`` index: one learned vector per
level plus a null vector) or continuous (``age``, any numeric phenotype: standardised with the
training cohort's mean and standard deviation, embedded by a small MLP, plus a null vector).
Missing values use the null vector, which is also what classifier-free guidance drops to.
Conditions with ``dropout > 0`` are *guided*: dropped at random in training and in the
unconditional half of CFG. ``modality`` has ``dropout = 0``: it selects what to generate and is
never guided away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

KINDS = ("categorical", "continuous")


@dataclass
class ConditionSpec:
    """One conditioning variable.

    Parameters
    ----------
    name : str
        Column name (``age``, ``sex``, ``modality`` ...).
    kind : {"categorical", "continuous"}
    levels : list of str
        Categorical levels, in embedding-row order (empty for continuous).
    mean, std : float
        Standardisation of a continuous condition.
    dropout : float
        Probability of replacing it by the null embedding in training (CFG); 0 for modality.
    """

    name: str
    kind: str
    levels: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"condition {self.name!r}: kind must be one of {KINDS}")
        if self.kind == "categorical" and not self.levels:
            raise ValueError(f"categorical condition {self.name!r} needs at least one level")
        if self.kind == "continuous" and not (np.isfinite(self.std) and self.std > 0):
            raise ValueError(f"continuous condition {self.name!r} needs a positive std")
        self.levels = [str(v) for v in self.levels]

    @property
    def null_index(self) -> int:
        """Row of the null embedding of a categorical condition."""
        return len(self.levels)

    def encode(self, values: Iterable[Any]) -> torch.Tensor:
        """Encode raw values.

        Parameters
        ----------
        values : iterable
            Raw values; None/NaN/"n/a" are missing.

        Returns
        -------
        torch.Tensor
            int64 level indices (missing -> :attr:`null_index`) for categorical, float32
            standardised values (missing -> NaN) for continuous; shape (n,).

        Raises
        ------
        ValueError
            A categorical value that is not one of the levels.
        """
        values = list(values)
        if self.kind == "continuous":
            arr = pd.to_numeric(pd.Series(values, dtype=object).map(_none_if_missing),
                                errors="raise").to_numpy(dtype=np.float64)
            return torch.as_tensor((arr - self.mean) / self.std, dtype=torch.float32)
        index = {lvl: i for i, lvl in enumerate(self.levels)}
        out = []
        for v in values:
            if _none_if_missing(v) is None:
                out.append(self.null_index)
                continue
            key = _level_str(v)
            if key not in index:
                raise ValueError(
                    f"condition {self.name!r}: value {v!r} is not a known level {self.levels}"
                )
            out.append(index[key])
        return torch.as_tensor(out, dtype=torch.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConditionSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


def _none_if_missing(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str) and value.strip().lower() in ("", "n/a", "nan", "na"):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _level_str(value: Any) -> str:
    """Levels compare as strings; 1.0 and 1 are the same level."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def infer_spec(name: str, values: pd.Series, *, dropout: float = 0.1) -> ConditionSpec:
    """Build a condition from a typed table column.

    Parameters
    ----------
    name : str
        Column name.
    values : pandas.Series
        Float columns are continuous; categorical/object/bool columns are categorical.
    dropout : float
        CFG dropout probability.

    Returns
    -------
    ConditionSpec

    Raises
    ------
    ValueError
        A column with no non-missing value, or a constant continuous column.
    """
    present = values.map(_none_if_missing).dropna()
    if present.empty:
        raise ValueError(f"condition {name!r} has no non-missing value in the cohort")
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        arr = present.to_numpy(dtype=np.float64)
        std = float(arr.std())
        return ConditionSpec(name, "continuous", mean=float(arr.mean()),
                             std=std if std > 0 else 1.0, dropout=dropout)
    if isinstance(values.dtype, pd.CategoricalDtype):
        levels = [_level_str(c) for c in values.cat.categories]
    else:
        levels = sorted({_level_str(v) for v in present})
    return ConditionSpec(name, "categorical", levels=levels, dropout=dropout)


def encode_table(specs: Sequence[ConditionSpec], table: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Encode the conditions of every row of ``table``.

    Parameters
    ----------
    specs : sequence of ConditionSpec
    table : pandas.DataFrame
        One row per image; a missing column means "missing" (null) for every row.

    Returns
    -------
    dict of str to torch.Tensor
        Shape (len(table),) each.
    """
    n = len(table)
    return {
        s.name: s.encode(table[s.name] if s.name in table.columns else [None] * n) for s in specs
    }
