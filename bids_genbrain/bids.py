"""BIDS input: the dataset through pybids, participant selection, filters, typed covariates.

Everything the app reads from the input dataset passes through here. The input dataset is only
ever read: pybids is pointed at it without a database path inside it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError

LOGGER = logging.getLogger(__name__)

ANAT_MODALITIES = ("T1w", "T2w", "FLAIR")
"""Anatomical suffixes preprocessed at the participant level."""

DEFAULT_QUERIES: dict[str, dict[str, Any]] = {
    "t1w": {"datatype": "anat", "suffix": "T1w", "part": [None, "mag"]},
    "t2w": {"datatype": "anat", "suffix": "T2w", "part": [None, "mag"]},
    "flair": {"datatype": "anat", "suffix": "FLAIR", "part": [None, "mag"]},
}
"""pybids queries per image kind; ``--bids-filter-file`` entries update these (fMRIPrep style)."""

_MISSING = {"n/a", "na", "nan", "", "none", "null"}
_SEX_CODES = {
    "m": "M", "male": "M", "man": "M", "boy": "M",
    "f": "F", "female": "F", "woman": "F", "girl": "F",
}


def read_json_object(path: Path, expected: str) -> dict[str, Any]:
    """Read a JSON object from ``path``; any problem is an :class:`InputError` naming the file.

    Parameters
    ----------
    path : pathlib.Path
    expected : str
        What the object should hold, for the error message.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: must hold a JSON object {expected}")
    return data


def strip_prefix(label: str, prefix: str) -> str:
    """Remove a BIDS entity prefix (``sub-01`` -> ``01``), leaving bare labels untouched."""
    label = str(label).strip()
    return label[len(prefix) + 1:] if label.startswith(f"{prefix}-") else label


def load_layout(bids_dir: Path | str, *, validate: bool = True):
    """Index a raw BIDS dataset with pybids.

    Parameters
    ----------
    bids_dir : path-like
        Dataset root (holds ``dataset_description.json``).
    validate : bool
        Apply pybids' BIDS validation (files not valid BIDS are left out of the index and the
        dataset description is checked). ``--skip-bids-validation`` turns it off.

    Returns
    -------
    bids.BIDSLayout

    Raises
    ------
    InputError
        Not a folder, no or malformed ``dataset_description.json``, or no subjects.
    """
    from bids import BIDSLayout

    root = Path(bids_dir)
    if not root.is_dir():
        raise InputError(f"{root}: BIDS_DIR is not a folder; give the path of a BIDS dataset root")
    desc = root / "dataset_description.json"
    if not desc.is_file():
        raise InputError(
            f"{desc}: missing; BIDS_DIR must be a BIDS dataset root with a dataset_description.json"
        )
    description = read_json_object(desc, "with Name and BIDSVersion")
    if validate and not {"Name", "BIDSVersion"} <= set(description):
        raise InputError(
            f"{desc}: lacks Name or BIDSVersion; add them, or pass --skip-bids-validation"
        )
    try:
        layout = BIDSLayout(root, validate=validate, derivatives=False)
    except Exception as exc:  # noqa: BLE001 - pybids raises many types for bad datasets
        raise InputError(f"{root}: pybids cannot index the dataset ({exc})") from None
    if not layout.get_subjects():
        hint = "" if validate else " (validation was skipped)"
        raise InputError(
            f"{root}: no subjects found{hint}; expected folders sub-<label>/anat/ with NIfTI images"
        )
    return layout


def select_participants(layout, labels: Iterable[str] | None) -> list[str]:
    """Participant labels to process, validated against the dataset.

    Parameters
    ----------
    layout : bids.BIDSLayout
    labels : iterable of str or None
        Labels with or without ``sub-``; None or empty selects every participant.

    Returns
    -------
    list of str
        Sorted bare labels.

    Raises
    ------
    InputError
        A requested label that the dataset lacks (all missing ones are named).
    """
    available = sorted(layout.get_subjects())
    if not labels:
        return available
    wanted = sorted({strip_prefix(lbl, "sub") for lbl in labels})
    missing = [lbl for lbl in wanted if lbl not in available]
    if missing:
        shown = ", ".join(f"sub-{x}" for x in available[:10]) + (" ..." if len(available) > 10 else "")
        raise InputError(
            f"{layout.root}: no participant(s) {', '.join('sub-' + m for m in missing)}; "
            f"available: {shown}"
        )
    return wanted


def read_filter_file(path: Path | str | None) -> dict[str, dict[str, Any]]:
    """Read a ``--bids-filter-file`` (fMRIPrep format) and merge it into the default queries.

    The file is a JSON object keyed by image kind (``t1w``, ``t2w``, ``flair``); each value is
    a dict of pybids entities, e.g. ``{"t1w": {"session": "01", "acquisition": "mprage"}}``.

    Parameters
    ----------
    path : path-like or None

    Returns
    -------
    dict
        Queries per image kind.
    """
    queries = {k: dict(v) for k, v in DEFAULT_QUERIES.items()}
    if path is None:
        return queries
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: --bids-filter-file not found; give an existing JSON file")
    filters = read_json_object(path, 'like {"t1w": {"session": "01"}}')
    unknown = sorted(set(filters) - set(queries))
    if unknown:
        raise InputError(
            f"{path}: unknown image kind(s) {unknown}; use {sorted(queries)}"
        )
    for kind, entities in filters.items():
        if not isinstance(entities, dict):
            raise InputError(f"{path}: the value of {kind!r} must be an object of BIDS entities")
        queries[kind].update(entities)
    return queries


@dataclass
class SessionImages:
    """The anatomical images of one participant's session.

    Attributes
    ----------
    subject : str
        Bare label.
    session : str or None
        Bare label, None when the dataset has no sessions.
    images : dict
        Modality (``T1w``, ``T2w``, ``FLAIR``) -> sorted list of absolute paths.
    """

    subject: str
    session: str | None
    images: dict[str, list[str]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``sub-<l>[_ses-<s>]``, the prefix of every output name."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")


def collect_anat(
    layout,
    subject: str,
    *,
    sessions: Iterable[str] | None = None,
    queries: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[SessionImages]:
    """Find each session's T1w, T2w and FLAIR images of one participant.

    Parameters
    ----------
    layout : bids.BIDSLayout
    subject : str
        Bare label.
    sessions : iterable of str, optional
        Restrict to these session labels (with or without ``ses-``).
    queries : mapping, optional
        Per-kind pybids queries (see :func:`read_filter_file`).

    Returns
    -------
    list of SessionImages
        One entry per session holding at least one image (one entry with ``session=None`` for
        datasets without sessions).
    """
    queries = queries or DEFAULT_QUERIES
    wanted = {strip_prefix(s, "ses") for s in sessions} if sessions else None
    available = layout.get_sessions(subject=subject) or [None]
    found = []
    for ses in sorted(available, key=lambda s: s or ""):
        if wanted is not None and ses not in wanted:
            continue
        images: dict[str, list[str]] = {}
        for kind, query in queries.items():
            q = dict(query)
            if ses is not None:
                q.setdefault("session", ses)
            files = layout.get(subject=subject, extension=[".nii", ".nii.gz"],
                               return_type="file", invalid_filters="allow", **q)
            if files:
                images[q["suffix"]] = sorted(files)
        if images:
            found.append(SessionImages(subject, ses, images))
    return found


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or (
        isinstance(value, str) and value.strip().lower() in _MISSING
    )


def _sex_coding(meta: Mapping[str, Any] | None) -> dict[str, str]:
    """Raw code -> M/F, from common spellings and the sidecar's Levels (e.g. 1: male)."""
    coding = dict(_SEX_CODES)
    levels = (meta or {}).get("Levels") or {}
    for code, meaning in levels.items():
        norm = _SEX_CODES.get(str(meaning).strip().lower())
        if norm:
            coding[str(code).strip().lower()] = norm
    return coding


def _type_sex(values: pd.Series, meta: Mapping[str, Any] | None, path: Path) -> pd.Series:
    coding = _sex_coding(meta)
    out = []
    for raw in values:
        if _is_missing(raw):
            out.append(None)
            continue
        key = str(raw).strip().lower()
        if key.endswith(".0"):  # 1.0 -> 1 when pandas read codes as floats
            key = key[:-2]
        if key not in coding:
            raise InputError(
                f"{path}: sex value {raw!r} not understood; use M/F (or male/female), or describe"
                " numeric codes in participants.json, e.g. \"sex\": {\"Levels\": {\"1\": \"male\","
                " \"2\": \"female\"}}"
            )
        out.append(coding[key])
    return pd.Series(pd.Categorical(out, categories=["F", "M"]), index=values.index, name="sex")


def _type_numeric(values: pd.Series, column: str, path: Path, *, required: bool) -> pd.Series | None:
    cleaned = values.map(lambda v: np.nan if _is_missing(v) else v)
    numeric = pd.to_numeric(cleaned, errors="coerce")
    bad = cleaned.notna() & numeric.isna()
    if bad.any():
        if required:
            example = cleaned[bad].iloc[0]
            raise InputError(
                f"{path}: column {column!r} must be numeric (or n/a), found {example!r}; fix the"
                " value"
            )
        return None
    return numeric.astype(float)


def read_participants(bids_dir: Path | str) -> pd.DataFrame:
    """Read ``participants.tsv`` into typed covariates.

    Parameters
    ----------
    bids_dir : path-like
        Dataset root.

    Returns
    -------
    pandas.DataFrame
        Indexed by bare ``participant`` label (``participant_id`` kept as a column). ``age`` is
        float; ``sex`` is a categorical of ``F``/``M`` whatever the coding (M/F, male/female,
        numeric codes declared in ``participants.json`` Levels); ``n/a`` and blanks are missing;
        other columns are float when every value parses as a number, else categorical. The
        sidecar's description of each column is in ``df.attrs["columns"]``.

    Raises
    ------
    InputError
        Missing or malformed file (no ``participant_id`` column, duplicated or badly prefixed
        ids, ragged rows, a non-numeric age, an unknown sex code).
    """
    root = Path(bids_dir)
    path = root / "participants.tsv"
    if not path.is_file():
        raise InputError(
            f"{path}: missing; add a participants.tsv with participant_id, age and sex columns"
        )
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: malformed TSV (not UTF-8 text); save it as UTF-8") from None
    rows = [(n, line.split("\t")) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise InputError(f"{path}: malformed TSV (empty); add a header with participant_id")
    width = len(rows[0][1])
    for number, fields in rows[1:]:
        if len(fields) != width:
            raise InputError(
                f"{path}: malformed TSV (line {number} has {len(fields)} fields, the header"
                f" {width}); use one tab between columns and n/a for missing values"
            )
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[],
                        index_col=False, encoding="utf-8-sig", skip_blank_lines=True)
    table.columns = [str(c).strip() for c in table.columns]
    if "participant_id" not in table.columns:
        raise InputError(
            f"{path}: no participant_id column (found {list(table.columns)[:6]}); the first"
            " column must be participant_id and the file tab-separated"
        )
    ids = table["participant_id"].str.strip()
    bad = ids[~ids.str.fullmatch(r"sub-[A-Za-z0-9]+")]
    if len(bad):
        raise InputError(
            f"{path}: participant_id {bad.iloc[0]!r} is not of the form sub-<label>; fix the id"
        )
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(f"{path}: participant_id {dup.iloc[0]} appears twice; keep one row each")

    meta_path = root / "participants.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        meta = read_json_object(meta_path, "describing the columns")

    out = pd.DataFrame(index=pd.Index(ids.str.removeprefix("sub-").to_numpy(), name="participant"))
    out["participant_id"] = ids.to_numpy()
    for column in table.columns:
        if column == "participant_id":
            continue
        values = pd.Series(table[column].to_numpy(), index=out.index)
        col_meta = meta.get(column) if isinstance(meta.get(column), dict) else None
        if column.lower() == "sex":
            out["sex"] = _type_sex(values, col_meta, path)
        elif column.lower() == "age":
            out["age"] = _type_numeric(values, column, path, required=True)
        else:
            levels = (col_meta or {}).get("Levels")
            numeric = None if levels else _type_numeric(values, column, path, required=False)
            if numeric is not None:
                out[column] = numeric
            else:
                cleaned = values.map(lambda v: None if _is_missing(v) else str(v).strip())
                out[column] = pd.Categorical(cleaned)
    out.attrs["columns"] = {k: v for k, v in meta.items() if k in out.columns}
    out.attrs["source"] = str(path)
    return out
