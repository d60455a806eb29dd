"""Who enters the group level's cohort: ``--participant-label`` and ``--exclude-participants``.

A group level often runs on a subset: one site of a shared OUTPUT_DIR, or everyone but the
participants who failed QC. ``--participant-label`` keeps only the given participants;
``--exclude-participants FILE`` then leaves out those listed in a TSV (a ``participant_id``
column, optionally a ``reason`` column; a file of bare labels, one per line, works too). The
selection is applied to the images before the cohort store is built, and recorded in the
group report and its run log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import InputError


def _label(text: str) -> str:
    return "sub-" + str(text).strip().removeprefix("sub-")


@dataclass(frozen=True)
class CohortSelection:
    """The participants a group level may use.

    Attributes
    ----------
    included : tuple of str or None
        ``sub-<label>`` given with ``--participant-label``; None keeps everyone.
    excluded : pandas.DataFrame
        ``participant_id``, ``reason`` of ``--exclude-participants`` (empty without it).
    source : pathlib.Path or None
        The exclusion file.
    """

    included: tuple[str, ...] | None = None
    excluded: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["participant_id", "reason"]))
    source: Path | None = None

    @property
    def active(self) -> bool:
        """Whether anyone can be left out."""
        return self.included is not None or len(self.excluded) > 0

    def keeps(self, participant_ids: Iterable[str]) -> list[bool]:
        """Whether each ``sub-<label>`` enters the cohort."""
        out = set(self.excluded["participant_id"])
        return [(self.included is None or p in self.included) and p not in out
                for p in participant_ids]

    def summary(self, available: Iterable[str]) -> pd.DataFrame:
        """One row per participant with images who was left out, and why."""
        reasons = dict(zip(self.excluded["participant_id"], self.excluded["reason"],
                           strict=True))
        rows = []
        for pid in sorted(set(available)):
            if self.included is not None and pid not in self.included:
                rows.append({"participant_id": pid, "reason": "not in --participant-label"})
            elif pid in reasons:
                rows.append({"participant_id": pid,
                             "reason": f"--exclude-participants: {reasons[pid]}"})
        return pd.DataFrame(rows, columns=["participant_id", "reason"])


def read_exclusions(path: Path | str) -> pd.DataFrame:
    """``participant_id`` and ``reason`` of an exclusion file.

    Raises
    ------
    InputError
        No ``participant_id`` column in a file with a header, or no participant at all.
    """
    path = Path(path)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{path}: --exclude-participants lists no participant")
    first = lines[0].split("\t")
    if "participant_id" in first:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    elif len(first) == 1 and all("\t" not in ln for ln in lines):
        table = pd.DataFrame({"participant_id": [ln.strip() for ln in lines]})
    else:
        raise InputError(f"{path}: --exclude-participants needs a participant_id column "
                         "(TSV with a header) or one label per line")
    reason = table["reason"] if "reason" in table else pd.Series(["listed"] * len(table))
    return pd.DataFrame({"participant_id": [_label(p) for p in table["participant_id"]],
                         "reason": [r or "listed" for r in reason.astype(str)]})


def cohort_selection(participant_label: Iterable[str],
                     exclude_file: Path | None) -> CohortSelection:
    """The selection of a group-level configuration (``config.participant_label``,
    ``config.exclude_participants``)."""
    labels = [_label(p) for p in participant_label]
    excluded = (read_exclusions(exclude_file) if exclude_file is not None
                else CohortSelection().excluded)
    return CohortSelection(included=tuple(labels) if labels else None, excluded=excluded,
                           source=exclude_file)
