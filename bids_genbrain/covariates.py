"""participants.tsv values -> typed covariates, read the way public datasets write them.

Typing belongs to the level that uses a column: the group level types the columns it models
(:func:`type_covariates`: conditions, contrast, confounds, ``site``) and says per column what
it did (:class:`ColumnTyping`); the participant level types nothing and only shows the values
(:func:`display_table`). The rules, also in ``docs/usage.md``:

missing
    ``n/a`` (the BIDS spelling), a blank, ``NA``, ``NaN``, ``N/A``, ``n.a.``, ``none``,
    ``null``, ``-``, ``?``, ``unknown``, ``missing``, and the codes a column lists in
    participants.json ``Annotations.MissingValues`` (Neurobagel's annotation).
numbers
    ``25``, ``25.5``, ``-3``, ``1e3``. A decimal comma (``26,9``) is read when it is
    unambiguous: one comma, no point, and not exactly three digits after it. ``1,234``
    (thousands separator or decimal comma?) is read as 1.234 only when another value of the
    column has an unambiguous decimal comma or the column's ``Annotations.Format`` is
    ``nb:FromEuro``; otherwise it is an error. Thousands separators are read beside a decimal
    mark of the other kind (``1,234.5``, ``1.234,5``) or in several groups (``1,234,567``).
units
    A unit after the number (``25 years``, ``70 kg``, ``45 %``) is removed; one column holds
    one unit, which must equal participants.json ``Units`` when given. Time units (years,
    months, weeks, days; ``y``, ``yrs``, ``mo``, ``wk``, ``d`` ...) and durations (``20y 6m``,
    ISO 8601 ``P20Y6M``) are converted: ``age`` always to years (the BIDS unit, so an ``age``
    with ``"Units": "months"`` is divided by 12), other columns to their time ``Units`` (or
    years) when their values mix time units.
censored
    ``89+``, ``>89``, ``>= 90``, ``90 or older``, ``over 89`` -> the bound as written (89, 89,
    90 ...), flagged ``censored``: the true value is at least the bound (BIDS recommends
    writing ages of 89 and over as ``89+``). ``<18``, ``<= 18``, ``under 18`` likewise (at
    most the bound).
ranges
    ``26-30``, ``26 - 30``, ``26–30``, ``26 to 30``, ``[20-30)`` (a unit on either end) -> the
    midpoint, flagged ``range``.
kind of a column
    ``sex`` is categorical ``F``/``M`` (M/F, male/female, man/woman, boy/girl in any case, or
    codes declared in ``Levels`` such as ``{"1": "male"}``); BIDS' ``other`` (``o``) is kept
    out of the sex condition as missing, and the column note says so. ``site`` and any column
    with ``Levels`` are categorical. ``age``, and a column with ``Units`` or a Neurobagel
    ``Format``, are numeric. Any other column is numeric when every value reads as a number
    by the rules above and categorical when most values do not; a column of mostly numbers
    with a value that does not read is an error (a typo, or a categorical column that needs
    ``Levels``).

A value a numeric column cannot read is an :class:`~bids_genbrain.errors.InputError` naming
the file, the column, the line, the participant and the value, at the level that needs the
column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import InputError

if TYPE_CHECKING:
    from .bids import ParticipantsTable

MISSING = frozenset({"n/a", "na", "nan", "", "none", "null", "n.a.", "-", "--", "?",
                     "unknown", "missing"})
"""Missing-value spellings (compared lower-case, stripped) in every column."""

SEX_CODES = {
    "m": "M", "male": "M", "man": "M", "boy": "M",
    "f": "F", "female": "F", "woman": "F", "girl": "F",
}
"""Spellings of the two levels of the ``sex`` condition."""

SEX_OTHER = frozenset({"o", "other"})
"""BIDS' third sex value: valid, kept out of the sex condition (missing)."""

CENSORED, RANGE = "censored", "range"
"""Flags of values that were not kept exactly (the ``<column>_flag`` column)."""

_DAYS = {"years": 365.25, "months": 365.25 / 12, "weeks": 7.0, "days": 1.0}
_TIME_UNITS = {
    **dict.fromkeys(("y", "yr", "yrs", "year", "years", "yo", "y.o", "years old", "year old",
                     "a"), "years"),
    **dict.fromkeys(("mo", "mos", "mon", "month", "months", "months old", "month old"),
                    "months"),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks", "weeks old", "week old"), "weeks"),
    **dict.fromkeys(("d", "day", "days", "days old", "day old"), "days"),
}
"""Time-unit spellings (lower-case, without a final point) -> canonical unit."""

UNITS = frozenset({
    "%", "kg", "g", "mg", "lb", "lbs", "cm", "mm", "m", "km", "in", "inch", "inches", "ft",
    "kg/m2", "kg/m²", "kg/m^2", "mmhg", "bpm", "hz", "khz", "s", "sec", "ms", "min", "h",
    "hr", "hrs", "hours", "ml", "l", "dl", "mg/dl", "mmol/l", "µmol/l", "t", "°c", "points",
    "pts", "cm3", "cm³", "mm3", "mm³", "iu",
})
"""Other units read after a number (lower-case), besides the time units and a column's
participants.json ``Units``; an unknown word after a number does not read (``2O``)."""

_N = r"(?:\d+(?:[.,]\d+)*|[.,]\d+)"
_UNIT = r"(?:%|°?[^\W\d_](?:[^\W\d_]|[ ./°²³^])*)"
_PLAIN = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SIMPLE = re.compile(rf"(?P<num>[+-]?{_N})\s*(?P<unit>{_UNIT})?")
_RANGE = re.compile(rf"[\[(]?\s*(?P<a>{_N}\s*(?:{_UNIT})?)\s*(?:-|to|\.\.)\s*"
                    rf"(?P<b>{_N}\s*(?:{_UNIT})?)\s*[\])]?", re.IGNORECASE)
_ABOVE_PREFIX = re.compile(r"(?:>=|=>|≥|>|over|above|older than|more than)\s*(?P<v>.+)",
                           re.IGNORECASE)
_BELOW_PREFIX = re.compile(r"(?:<=|=<|≤|<|under|below|younger than|less than)\s*(?P<v>.+)",
                           re.IGNORECASE)
_ABOVE_SUFFIX = re.compile(r"(?P<v>.+?)\s*(?:\+|(?:or|and)\s+(?:older|over|above|more))",
                           re.IGNORECASE)
_BELOW_SUFFIX = re.compile(r"(?P<v>.+?)\s*(?:or|and)\s+(?:younger|under|below|less)",
                           re.IGNORECASE)
_PLUS_UNIT = re.compile(rf"(?P<num>{_N})\s*\+\s*(?P<unit>{_UNIT})")
_DURATION_PART = re.compile(rf"({_N})\s*([a-z.]+)", re.IGNORECASE)
_EURO_FORMAT = "nb:FromEuro"


class _Ambiguous(ValueError):
    """A ``1,234``: decimal comma or thousands separator."""


@dataclass(frozen=True)
class Reading:
    """How one value was read.

    Attributes
    ----------
    value : float
        In ``unit`` (before any conversion of the column).
    unit : str or None
        Canonical time unit (``years`` ...) or the written unit (lower-case); None if none.
    notes : frozenset of str
        What was not a plain number: ``decimal comma``, ``thousands separator``, ``unit``,
        ``duration``, ``top-coded``, ``bottom-coded``, ``range``.
    """

    value: float
    unit: str | None = None
    notes: frozenset[str] = frozenset()

    @property
    def flag(self) -> str | None:
        """``censored``, ``range`` or None (the value is exact)."""
        if self.notes & {"top-coded", "bottom-coded"}:
            return CENSORED
        return RANGE if "range" in self.notes else None


def is_missing(value: Any, extra: frozenset[str] = frozenset()) -> bool:
    """True for None, NaN and the spellings of :data:`MISSING` (and ``extra``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    text = str(value).strip().lower()
    return text in MISSING or text in extra


def _decimal(text: str, comma_decimal: bool) -> tuple[float, frozenset[str]]:
    """Read digits with separators (see the module docstring); raise ValueError."""
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-")
    commas, points = text.count(","), text.count(".")
    if not commas:
        if points <= 1:
            return sign * float(text), frozenset()
        return sign * _thousands(text, "."), frozenset({"thousands separator"})
    if not points:
        if commas == 1:
            if len(text.split(",")[1]) != 3 or comma_decimal:
                return sign * float(text.replace(",", ".")), frozenset({"decimal comma"})
            raise _Ambiguous(text)
        return sign * _thousands(text, ","), frozenset({"thousands separator"})
    decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
    whole, _, frac = text.rpartition(decimal_mark)
    if not frac.isdigit() or decimal_mark in whole:
        raise ValueError(text)
    notes = {"thousands separator"} | ({"decimal comma"} if decimal_mark == "," else set())
    return sign * (_thousands(whole, "," if decimal_mark == "." else ".")
                   + float("0." + frac)), frozenset(notes)


def _thousands(text: str, sep: str) -> float:
    groups = text.split(sep)
    if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])
            and all(g.isdigit() for g in groups)):
        raise ValueError(text)
    return float("".join(groups))


def _unit(text: str | None) -> str | None:
    if not text:
        return None
    norm = " ".join(text.lower().rstrip(".").split())
    return _TIME_UNITS.get(norm, norm)


def _simple(text: str, comma_decimal: bool, declared: str | None) -> Reading:
    match = _SIMPLE.fullmatch(text)
    if not match:
        raise ValueError(text)
    value, notes = _decimal(match["num"], comma_decimal)
    unit = _unit(match["unit"])
    if unit and unit not in _DAYS and unit not in UNITS and unit != declared:
        raise ValueError(text)
    return Reading(value, unit, notes | ({"unit"} if unit else set()))


def _duration(text: str) -> Reading | None:
    """``P20Y6M``, ``20Y6M``, ``20y 6m``, ``2 years 3 months`` -> years; None if not one."""
    iso = text[:1] in "pP" and text[1:2].isdigit()
    body = text[1:] if iso else text
    parts = _DURATION_PART.findall(body)
    if not parts or re.sub(r"[\s,;]", "", body) != "".join(n + u for n, u in parts):
        return None
    days, seen = 0.0, []
    for number, unit in parts:
        name = _unit(unit)
        if name == "m" and (iso or "years" in seen):  # ISO 8601 month after a year
            name = "months"
        if name not in _DAYS or name in seen:
            return None
        seen.append(name)
        days += _decimal(number, True)[0] * _DAYS[name]
    if not iso and len(parts) < 2:
        return None
    return Reading(days / _DAYS["years"], "years", frozenset({"duration"}))


def read_number(text: str, *, comma_decimal: bool = False,
                units: str | None = None) -> Reading:
    """Read one participants.tsv value as a number, by the rules of the module docstring.

    Parameters
    ----------
    text : str
        The value as written (not missing).
    comma_decimal : bool
        Read ``1,234`` as 1.234 (the column uses decimal commas).
    units : str, optional
        The column's participants.json ``Units``, read after a number besides the time
        units and :data:`UNITS`.

    Returns
    -------
    Reading

    Raises
    ------
    ValueError
        The value does not read as a number (``_Ambiguous`` for ``1,234``).
    """
    declared = _unit(units)
    text = " ".join(str(text).replace("\u2212", "-").replace("\u2013", "-")
                    .replace("\u2014", "-").split())
    unit_after_plus = _PLUS_UNIT.fullmatch(text)  # 89+ years -> 89 years+
    if unit_after_plus:
        text = f"{unit_after_plus['num']} {unit_after_plus['unit']}+"
    if _PLAIN.fullmatch(text):
        return Reading(float(text))
    duration = _duration(text)
    if duration is not None:
        return duration
    for pattern, note in ((_ABOVE_PREFIX, "top-coded"), (_BELOW_PREFIX, "bottom-coded"),
                          (_ABOVE_SUFFIX, "top-coded"), (_BELOW_SUFFIX, "bottom-coded")):
        match = pattern.fullmatch(text)
        if match:
            bound = _simple(match["v"], comma_decimal, declared)
            return Reading(bound.value, bound.unit, bound.notes | {note})
    match = _RANGE.fullmatch(text)
    if match:
        lo = _simple(match["a"], comma_decimal, declared)
        hi = _simple(match["b"], comma_decimal, declared)
        if lo.unit and hi.unit and lo.unit != hi.unit:
            raise ValueError(text)
        if lo.value > hi.value:
            raise ValueError(text)
        return Reading((lo.value + hi.value) / 2, lo.unit or hi.unit,
                       lo.notes | hi.notes | {"range"})
    return _simple(text, comma_decimal, declared)


@dataclass
class ColumnTyping:
    """What typing did to one column.

    Attributes
    ----------
    column : str
    kind : {"continuous", "categorical"}
    n_values, n_missing : int
    unit : str or None
        Unit of the typed values (``years`` for ``age``).
    notes : dict of str to list of str
        Per note of :class:`Reading` (and ``converted``, ``other``, ``unknown level``) the
        values as written.
    source : str
        Why the column has its kind (``age``, ``sex``, ``site``, ``Levels``, ``Units``,
        ``Format``, ``values``).
    converted_from : str or None
        participants.json ``Units`` that plain values were converted from (``age`` in months).
    header : str
        The column's name in participants.tsv (``column`` is ``age``/``sex``/``site`` for
        those in any case).
    """

    column: str
    kind: str
    n_values: int = 0
    n_missing: int = 0
    unit: str | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)
    source: str = "values"
    converted_from: str | None = None
    header: str = ""

    def describe(self) -> str:
        """One line: what was done to values that were not plain (empty when none)."""
        text = {
            "top-coded": "top-coded ({ex}): kept as the bound, flagged censored",
            "bottom-coded": "bottom-coded ({ex}): kept as the bound, flagged censored",
            "range": "range(s) ({ex}): midpoint, flagged range",
            "duration": "duration(s) ({ex}): read in years",
            "converted": "in another time unit ({ex}): converted to {unit}",
            "unit": "with a unit ({ex}): unit removed",
            "decimal comma": "decimal comma(s) ({ex}): read as a decimal point",
            "thousands separator": "thousands separator(s) ({ex}): removed",
            "other": "'other' ({ex}): not a level of the sex condition, treated as missing",
            "unknown level": "not among participants.json Levels ({ex}): kept as written",
        }
        parts = []
        for note, values in self.notes.items():
            examples = ", ".join(repr(v) for v in dict.fromkeys(values[:3]))
            parts.append(f"{len(values)} {text[note].format(ex=examples, unit=self.unit)}")
        if self.converted_from:
            parts.append(f"participants.json Units {self.converted_from}: converted to "
                         f"{self.unit}")
        return "; ".join(parts)


@dataclass
class TypedCovariates:
    """Typed columns of participants.tsv and what typing did.

    Attributes
    ----------
    table : pandas.DataFrame
        Indexed by bare participant label; ``participant_id``, each typed column (float, or
        categorical; ``sex`` has categories ``F``/``M``), and ``<column>_flag``
        (``censored``/``range``/None) for each numeric column with a flagged value.
    columns : dict of str to ColumnTyping
    source : str
        The participants.tsv path.
    """

    table: pd.DataFrame
    columns: dict[str, ColumnTyping]
    source: str

    def summary(self) -> pd.DataFrame:
        """One row per typed column: kind, counts, unit, what was done (for the report)."""
        return pd.DataFrame([{
            "column": c.column, "type": c.kind, "values": c.n_values, "missing": c.n_missing,
            "unit": c.unit or "", "typed from": c.source,
            "what was done": c.describe() or "nothing: every value was plain",
        } for c in self.columns.values()])

    def flagged(self) -> pd.DataFrame:
        """Participants whose value was not kept exactly: id, column, written, used, flag."""
        rows = []
        for column in self.columns:
            flags = self.table.get(f"{column}_flag")
            if flags is None:
                continue
            for label in flags.index[flags.notna()]:
                rows.append({"participant_id": self.table.at[label, "participant_id"],
                             "column": column, "written": self.table.attrs["raw"][column][label],
                             "used": self.table.at[label, column], "flag": flags[label]})
        return pd.DataFrame(rows, columns=["participant_id", "column", "written", "used", "flag"])


FLAG_LEVELS = {
    CENSORED: "top- or bottom-coded as written (e.g. 89+, <18): the value is the bound",
    RANGE: "a range as written (e.g. 26-30): the value is the midpoint",
}
"""Meaning of each ``<column>_flag`` value (sidecars, docs)."""


def write_covariates_table(typed: TypedCovariates, path: Path | str,
                           participant_ids: Iterable[str] | None = None) -> Path:
    """Write the typed covariates as a BIDS-style TSV with a JSON sidecar, atomically.

    Parameters
    ----------
    typed : TypedCovariates
    path : path-like
        The ``.tsv``; the sidecar is the same name with ``.json``.
    participant_ids : iterable of str, optional
        ``sub-<label>`` ids to keep (e.g. the cohort's), in file order; all when None.

    Returns
    -------
    pathlib.Path
        The TSV: ``participant_id``, each typed column (``n/a`` when missing), and for a
        column with values that were not plain numbers ``<column>_flag`` (when any value is
        censored or a range) and ``<column>_written`` (the value as in participants.tsv).
        The sidecar describes every column: participants.json's entry, the unit, what was
        typed from what and how, and the flag levels (:data:`FLAG_LEVELS`).
    """
    from .utils import atomic_write_text

    table = typed.table
    if participant_ids is not None:
        table = table[table["participant_id"].isin(set(participant_ids))]
    out = pd.DataFrame({"participant_id": table["participant_id"]})
    sidecar: dict[str, Any] = {}
    meta = typed.table.attrs.get("columns", {})
    for name, typing in typed.columns.items():
        out[name] = table[name].astype(object).where(table[name].notna(), "n/a")
        entry = {k: v for k, v in (meta.get(name) or {}).items() if k != "Annotations"}
        if typing.kind == "continuous" and typing.unit:
            entry["Units"] = typing.unit
        entry["Typing"] = {"Kind": typing.kind, "TypedFrom": typing.source,
                           "WhatWasDone": typing.describe() or "nothing: every value was plain",
                           "Rules": "bids_genbrain.covariates (docs/usage.md)"}
        sidecar[name] = entry
        if f"{name}_flag" in table.columns:
            out[f"{name}_flag"] = table[f"{name}_flag"].where(table[f"{name}_flag"].notna(),
                                                               "n/a")
            sidecar[f"{name}_flag"] = {
                "Description": f"why {name} is not exactly as written (n/a: it is)",
                "Levels": dict(FLAG_LEVELS)}
        if typing.notes:
            raw = typed.table.attrs["raw"][name]
            out[f"{name}_written"] = [raw[label] for label in table.index]
            sidecar[f"{name}_written"] = {"Description": f"{name} as written in "
                                                         f"{Path(typed.source).name}"}
    path = Path(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    atomic_write_text(path, out.to_csv(sep="\t", index=False, lineterminator="\n"))
    return path


def _meta(table: ParticipantsTable, column: str) -> dict[str, Any]:
    meta = table.sidecar.get(column)
    return meta if isinstance(meta, dict) else {}


def _annotation(meta: Mapping[str, Any], key: str) -> Any:
    annotations = meta.get("Annotations")
    return annotations.get(key) if isinstance(annotations, dict) else None


def _format_term(meta: Mapping[str, Any]) -> str | None:
    for key in ("Format", "Transformation"):  # Neurobagel: Format (new), Transformation (old)
        value = _annotation(meta, key)
        if isinstance(value, dict) and value.get("TermURL"):
            return str(value["TermURL"])
    return None


def _extra_missing(meta: Mapping[str, Any]) -> frozenset[str]:
    values = _annotation(meta, "MissingValues") or meta.get("MissingValues") or []
    if not isinstance(values, list):
        return frozenset()
    return frozenset(str(v).strip().lower() for v in values)


def _where(table: ParticipantsTable, column: str, label: str) -> str:
    return (f"{table.path}: column {column!r}, line {table.lines[label]} "
            f"(sub-{label})")


def _kind(table: ParticipantsTable, column: str, meta: Mapping[str, Any]) -> tuple[str, str]:
    name = column.lower()
    if name == "sex":
        return "sex", "sex"
    if meta.get("Levels"):
        return "categorical", "Levels"
    if name == "site":
        return "categorical", "site"
    if name == "age":
        return "continuous", "age"
    if meta.get("Units"):
        return "continuous", "Units"
    if _format_term(meta):
        return "continuous", "Format"
    return "infer", "values"


def _type_sex(table: ParticipantsTable, column: str, meta: Mapping[str, Any],
              values: pd.Series, missing: frozenset[str]) -> tuple[pd.Series, ColumnTyping]:
    coding = dict(SEX_CODES)
    other = set(SEX_OTHER)
    for code, meaning in (meta.get("Levels") or {}).items():
        meaning = str(meaning).strip().lower()
        key = str(code).strip().lower()
        if meaning in SEX_CODES:
            coding[key] = SEX_CODES[meaning]
        elif meaning in SEX_OTHER:
            other.add(key)
    typing = ColumnTyping(column, "categorical", source="sex")
    out = []
    for label, raw in values.items():
        if is_missing(raw, missing):
            out.append(None)
            typing.n_missing += 1
            continue
        key = str(raw).strip().lower()
        key = key[:-2] if key.endswith(".0") else key  # 1.0 -> 1 from a spreadsheet export
        if key in other:
            out.append(None)
            typing.n_missing += 1
            typing.notes.setdefault("other", []).append(str(raw))
            continue
        if key not in coding:
            raise InputError(
                f"{_where(table, column, label)}: sex value {raw!r} not understood; use M/F"
                " (male/female, other), or describe numeric codes in participants.json, e.g."
                " \"sex\": {\"Levels\": {\"1\": \"male\", \"2\": \"female\"}}")
        out.append(coding[key])
        typing.n_values += 1
    return pd.Series(pd.Categorical(out, categories=["F", "M"]), index=values.index), typing


def _read_column(values: pd.Series, missing: frozenset[str], comma_decimal: bool,
                 units: str | None) -> tuple[dict[str, Reading], dict[str, str]]:
    """Readings of the non-missing values, and the values that did not read (label -> why)."""
    readings: dict[str, Reading] = {}
    failed: dict[str, str] = {}
    for label, raw in values.items():
        if is_missing(raw, missing):
            continue
        try:
            readings[label] = read_number(raw, comma_decimal=comma_decimal, units=units)
        except _Ambiguous:
            failed[label] = "ambiguous"
        except ValueError:
            failed[label] = "unreadable"
    return readings, failed


def _type_numeric(table: ParticipantsTable, column: str, meta: Mapping[str, Any],
                  values: pd.Series, missing: frozenset[str], source: str,
                  strict: bool) -> tuple[pd.Series, pd.Series, ColumnTyping] | None:
    euro = _format_term(meta) == _EURO_FORMAT
    units = str(meta["Units"]) if meta.get("Units") else None
    readings, failed = _read_column(values, missing, euro, units)
    if any(why == "ambiguous" for why in failed.values()) and not euro and any(
            "decimal comma" in r.notes for r in readings.values()):
        readings, failed = _read_column(values, missing, True, units)  # the column's way
    if failed and not strict:
        if len(readings) < len(failed):
            return None  # mostly words: a categorical column
        strict = True
    if failed:
        label = next(iter(failed))
        raw = values[label]
        if failed[label] == "ambiguous":
            fix = (f"is ambiguous (decimal comma or thousands separator); write "
                   f"{str(raw).strip().replace(',', '.')} or {str(raw).strip().replace(',', '')}")
        else:
            fix = ("is not a number; write a number (n/a if unknown), a top-coded value such"
                   " as 89+, or a range such as 26-30"
                   + ("" if source != "values" else
                      ", or declare Levels in participants.json for a categorical column"))
        raise InputError(f"{_where(table, column, label)}: value {str(raw)!r} {fix}")
    declared = _unit(str(meta["Units"])) if meta.get("Units") else None
    is_age = column.lower() == "age"
    if is_age and declared is not None and declared not in _DAYS:
        raise InputError(f"{table.path.with_suffix('.json')}: age has Units {meta['Units']!r};"
                         " give a time unit (years, months, weeks or days)")
    units_seen = {r.unit for r in readings.values() if r.unit}
    if is_age:
        target, want = "years", "a time unit (years, months, weeks or days)"
    elif declared:
        target, want = declared, f"{meta['Units']!r} (participants.json Units)"
    else:
        target = (next(iter(units_seen)) if len(units_seen) == 1 else
                  "years" if units_seen and units_seen <= set(_DAYS) else None)
        want = f"one unit (found {sorted(units_seen)})"
    for label, reading in readings.items():
        if reading.unit and reading.unit != target and not (
                reading.unit in _DAYS and target in _DAYS):
            raise InputError(f"{_where(table, column, label)}: value {str(values[label])!r}"
                             f" has the unit {reading.unit!r}; the column needs {want}")
    typing = ColumnTyping(column, "continuous", n_values=len(readings),
                          n_missing=len(values) - len(readings), source=source)
    out = pd.Series(np.nan, index=values.index, dtype=float)
    flags = pd.Series(None, index=values.index, dtype=object)
    plain_unit = declared or ("years" if is_age else None)
    for label, reading in readings.items():
        unit = reading.unit or plain_unit
        value = reading.value
        if unit in _DAYS and target in _DAYS and unit != target:
            value = value * _DAYS[unit] / _DAYS[target]
        out[label] = value
        flags[label] = reading.flag
        notes = set(reading.notes)
        if reading.unit and reading.unit != target:
            notes = (notes - {"unit"}) | {"converted"}
        for note in sorted(notes):
            typing.notes.setdefault(note, []).append(str(values[label]).strip())
    if is_age and (out < 0).any():
        label = out.index[out < 0][0]
        raise InputError(f"{_where(table, column, label)}: age {str(values[label])!r} is "
                         "negative; write n/a for an unknown age (or list the code in "
                         "participants.json Annotations.MissingValues)")
    typing.unit = target
    if declared in _DAYS and target != declared:
        typing.converted_from = declared
    return out, flags, typing


def type_column(table: ParticipantsTable,
                column: str) -> tuple[pd.Series, pd.Series | None, ColumnTyping]:
    """Type one column of participants.tsv.

    Parameters
    ----------
    table : ParticipantsTable
        From :func:`bids_genbrain.bids.read_participants_table`.
    column : str
        Its name in participants.tsv (any case for ``age``, ``sex``, ``site`` ...).

    Returns
    -------
    values : pandas.Series
        float (continuous) or categorical, indexed by participant label.
    flags : pandas.Series or None
        ``censored``/``range``/None per participant for a numeric column with flags.
    typing : ColumnTyping

    Raises
    ------
    InputError
        Unknown column, or a value that the column's rules cannot read (names file, column,
        line, participant and value).
    """
    if column not in table.raw.columns:  # "Age", "Sex": any case
        column = next((c for c in table.raw.columns if c.lower() == column.lower()), column)
    if column not in table.raw.columns or column == "participant_id":
        raise InputError(f"{table.path}: no column {column!r}; columns are "
                         f"{[c for c in table.raw.columns if c != 'participant_id']}")
    values, flags, typing = _type_column(table, column)
    typing.header = column
    typing.column = column.lower() if column.lower() in ("age", "sex", "site") else column
    return values, flags, typing


def _type_column(table: ParticipantsTable,
                 column: str) -> tuple[pd.Series, pd.Series | None, ColumnTyping]:
    meta = _meta(table, column)
    missing = _extra_missing(meta)
    values = table.raw[column]
    kind, source = _kind(table, column, meta)
    if kind == "sex":
        typed, typing = _type_sex(table, column, meta, values, missing)
        return typed, None, typing
    if kind in ("continuous", "infer"):
        result = _type_numeric(table, column, meta, values, missing, source,
                               strict=kind == "continuous")
        if result is not None:
            typed, flags, typing = result
            return typed, (flags if flags.notna().any() else None), typing
    cleaned = values.map(lambda v: None if is_missing(v, missing) else str(v).strip())
    typing = ColumnTyping(column, "categorical", n_values=int(cleaned.notna().sum()),
                          n_missing=int(cleaned.isna().sum()), source=source)
    levels = meta.get("Levels")
    if isinstance(levels, dict):
        unknown = [v for v in cleaned.dropna() if v not in {str(k) for k in levels}]
        if unknown:
            typing.notes["unknown level"] = unknown
    return pd.Series(pd.Categorical(cleaned), index=values.index), None, typing


def type_covariates(table: ParticipantsTable, columns: Sequence[str] | None = None,
                    ) -> TypedCovariates:
    """Type the columns a level needs (all columns when None), leaving the others alone.

    Parameters
    ----------
    table : ParticipantsTable
    columns : sequence of str, optional
        Column names; unknown ones are an error.

    Returns
    -------
    TypedCovariates
        ``table.attrs`` holds ``columns`` (participants.json entries of the typed columns),
        ``source`` (the TSV path) and ``raw`` (the values as written, per column).
    """
    wanted = [c for c in table.raw.columns if c != "participant_id"] if columns is None \
        else list(dict.fromkeys(columns))
    out = pd.DataFrame({"participant_id": table.raw["participant_id"]}, index=table.raw.index)
    typings: dict[str, ColumnTyping] = {}
    raw: dict[str, dict[str, str]] = {}
    for column in wanted:
        values, flags, typing = type_column(table, column)
        name = typing.column
        out[name] = values
        if flags is not None:
            out[f"{name}_flag"] = flags
        typings[name] = typing
        raw[name] = table.raw[typing.header].to_dict()
    out.attrs["columns"] = {t.column: table.sidecar[t.header] for t in typings.values()
                            if isinstance(table.sidecar.get(t.header), dict)}
    out.attrs["source"] = str(table.path)
    out.attrs["raw"] = raw
    return TypedCovariates(out, typings, str(table.path))


def display_table(table: ParticipantsTable) -> pd.DataFrame:
    """Every column's values as text for a participant report, never failing.

    A value that types is shown as typed, with what was written when that differs
    (``89+ (read as 89, censored)``); a value or column that cannot be typed is shown as
    written.

    Parameters
    ----------
    table : ParticipantsTable

    Returns
    -------
    pandas.DataFrame of str
        Same index and columns as ``table.raw`` without ``participant_id``.
    """
    out = pd.DataFrame(index=table.raw.index)
    for column in table.raw.columns:
        if column == "participant_id":
            continue
        raw = table.raw[column]
        missing = _extra_missing(_meta(table, column))
        try:
            values, flags, typing = type_column(table, column)
        except InputError:
            out[column] = [("n/a" if is_missing(v, missing) else str(v)) for v in raw]
            continue
        shown = []
        for label, written in raw.items():
            value = values[label]
            if is_missing(written, missing) and pd.isna(value):
                shown.append("n/a")
            elif typing.kind == "categorical" or pd.isna(value):
                typed = "n/a" if pd.isna(value) else str(value)
                shown.append(written if typed == written.strip() else f"{written} ({typed})")
            else:
                flag = flags[label] if flags is not None else None
                if f"{value:g}" == written.strip() and not flag:
                    shown.append(written)
                    continue
                detail = f"read as {value:g}" + (f" {typing.unit}" if typing.unit else "")
                shown.append(f"{written} ({detail}{', ' + flag if flag else ''})")
        out[column] = shown
    return out


__all__ = ["CENSORED", "FLAG_LEVELS", "MISSING", "RANGE", "ColumnTyping", "Reading",
           "TypedCovariates", "display_table", "is_missing", "read_number", "type_column",
           "type_covariates", "write_covariates_table"]
