"""BIDS input: the dataset through pybids, participant selection, filters, participants.tsv.

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


def all_participants(layout, table: ParticipantsTable | None = None) -> list[str]:
    """Every participant of the dataset: pybids' subjects, ``sub-*/`` folders, table rows.

    Parameters
    ----------
    layout : bids.BIDSLayout
    table : ParticipantsTable, optional
        participants.tsv; its rows count even without a ``sub-<label>/`` folder.

    Returns
    -------
    list of str
        Sorted bare labels.
    """
    labels = set(layout.get_subjects())
    labels |= {p.name[4:] for p in Path(layout.root).glob("sub-*")
               if p.is_dir() and p.name[4:].isalnum()}
    if table is not None:
        labels |= set(table.labels)
    return sorted(labels)


def missing_anatomy(layout, subjects: Iterable[str]) -> dict[str, str]:
    """The participants that have nothing for the participant level, and why.

    A participant has something when the dataset holds at least one T1w, T2w or FLAIR
    NIfTI of it (any session, before ``--session-label`` and ``--bids-filter-file``).

    Parameters
    ----------
    layout : bids.BIDSLayout
    subjects : iterable of str
        Bare labels.

    Returns
    -------
    dict of str to str
        Label -> reason (e.g. ``no T1w, T2w or FLAIR image, meg data only``) for each
        participant without one; the others are left out.
    """
    with_anat = set(layout.get(datatype="anat", suffix=list(ANAT_MODALITIES),
                               extension=[".nii", ".nii.gz"], return_type="id",
                               target="subject"))
    reasons = {}
    for subject in subjects:
        if subject in with_anat:
            continue
        if not (Path(layout.root) / f"sub-{subject}").is_dir():
            reasons[subject] = f"listed in participants.tsv, no sub-{subject}/ folder"
            continue
        datatypes = layout.get_datatypes(subject=subject)
        if "anat" in datatypes:  # e.g. only a PDw, or a sidecar without its image
            suffixes = layout.get(subject=subject, datatype="anat", return_type="id",
                                  target="suffix")
            datatypes[datatypes.index("anat")] = f"anat ({', '.join(sorted(suffixes))})"
        has = f"{'/'.join(datatypes)} data only" if datatypes else "no BIDS imaging files"
        reasons[subject] = f"no T1w, T2w or FLAIR image, {has}"
    return reasons


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


@dataclass
class ParticipantsTable:
    """participants.tsv as written (strings), with its sidecar; nothing is typed yet.

    Attributes
    ----------
    path : pathlib.Path
        The TSV.
    raw : pandas.DataFrame
        Indexed by bare participant label; every column as stripped strings
        (``participant_id`` included, ``n/a`` kept as written).
    sidecar : dict
        participants.json (empty when there is none).
    lines : dict of str to int
        Line of each participant's row in the file (the header is line 1).
    """

    path: Path
    raw: pd.DataFrame
    sidecar: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """Bare participant labels, in file order."""
        return list(self.raw.index)


def _unquote(value: str) -> str:
    """Strip a field, and the double quotes a spreadsheet export puts around it ("26,9")."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('""', '"').strip()
    return value


def read_participants_table(bids_dir: Path | str) -> ParticipantsTable:
    """Read ``participants.tsv`` (and ``participants.json``) without typing any column.

    Parameters
    ----------
    bids_dir : path-like
        Dataset root.

    Returns
    -------
    ParticipantsTable

    Raises
    ------
    InputError
        Missing or malformed file: not UTF-8, empty, ragged rows, no ``participant_id``
        column, an id not of the form ``sub-<label>``, a duplicated id, or a
        participants.json that is not a JSON object.
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
    header = [_unquote(c) for c in rows[0][1]]
    if "participant_id" not in header:
        raise InputError(
            f"{path}: no participant_id column (found {header[:6]}); the first"
            " column must be participant_id and the file tab-separated"
        )
    table = pd.DataFrame([[_unquote(v) for v in fields] for _, fields in rows[1:]],
                         columns=header, dtype=object)
    ids = table["participant_id"]
    bad = ids[~ids.str.fullmatch(r"sub-[A-Za-z0-9]+")]
    if len(bad):
        raise InputError(
            f"{path}: participant_id {bad.iloc[0]!r} is not of the form sub-<label>; fix the id"
        )
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(f"{path}: participant_id {dup.iloc[0]} appears twice; keep one row each")
    table.index = pd.Index(ids.str.removeprefix("sub-").to_numpy(), name="participant")
    meta_path = root / "participants.json"
    sidecar = read_json_object(meta_path, "describing the columns") if meta_path.is_file() else {}
    return ParticipantsTable(path, table, sidecar,
                             dict(zip(table.index, (n for n, _ in rows[1:]), strict=True)))


def read_participants(bids_dir: Path | str, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read ``participants.tsv`` and type ``columns`` (every column when None).

    A shortcut for :func:`read_participants_table` then
    :func:`bids_genbrain.covariates.type_covariates`; the rules of each type are in
    :mod:`bids_genbrain.covariates`. Type only the columns you use: a value that the typing
    cannot read is an error.

    Parameters
    ----------
    bids_dir : path-like
        Dataset root.
    columns : iterable of str, optional

    Returns
    -------
    pandas.DataFrame
        Indexed by bare ``participant`` label (``participant_id`` kept as a column); ``age``
        float in years; ``sex`` categorical ``F``/``M``; other columns float or categorical;
        ``<column>_flag`` for censored or ranged values. ``df.attrs["columns"]`` holds the
        sidecar's description of each typed column.

    Raises
    ------
    InputError
        Missing or malformed file, or a value a typed column cannot read.
    """
    from .covariates import type_covariates

    table = read_participants_table(bids_dir)
    return type_covariates(table, None if columns is None else list(columns)).table
