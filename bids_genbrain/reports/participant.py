"""Preprocessing sections of the participant report (``OUTPUT_DIR/sub-<label>.html``).

The participant level renders its report with :func:`bids_genbrain.reports.base.render_report`;
this module turns what the preprocessing workflow wrote (QC tables, reportlet SVGs, the methods
boilerplate, failures) into :class:`~bids_genbrain.reports.base.Section` objects, one row of
figures per image, and collects every participant's QC into one summary table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..utils import atomic_write_text
from .base import Section

QC_SUMMARY = "participants_qc_summary.tsv"
"""Name of the all-participants QC table in the derivatives root."""

_FIGURES = (
    ("desc-brain_mask", "Brain mask (native space)",
     "Template brain mask warped back to the participant's reference image."),
    ("dseg", "Tissue segmentation (native space)",
     "Contours: grey/white matter (blue) and white matter/CSF (magenta) boundaries."),
    ("desc-registration", "Registration to MNI152NLin6Asym",
     "Hover/flicker: the participant's image resampled to the template vs the template; "
     "contour: template brain mask."),
    ("desc-coreg", "Coregistration to the reference image",
     "The contrast resampled on the reference grid vs the reference; contour: brain mask."),
)


def _session_of(path: Path) -> str | None:
    for part in path.name.split("_"):
        if part.startswith("ses-"):
            return part[4:]
    return None


def read_qc(output_dir: Path | str, subject_id: str) -> pd.DataFrame:
    """All QC rows of one participant (every session), or an empty table.

    Parameters
    ----------
    output_dir : path-like
        Derivatives root.
    subject_id : str
        Bare label.

    Returns
    -------
    pandas.DataFrame
    """
    files = sorted(Path(output_dir, f"sub-{subject_id}").rglob("*_desc-qc_metrics.tsv"))
    tables = [pd.read_csv(f, sep="\t", na_values="n/a") for f in files]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def preprocessing_sections(output_dir: Path | str, subject_id: str,
                           failures: Sequence[str] = ()) -> list[Section]:
    """Report sections describing one participant's preprocessing.

    Parameters
    ----------
    output_dir : path-like
        Derivatives root.
    subject_id : str
        Bare label.
    failures : sequence of str
        One line per failed session (shown first, as errors).

    Returns
    -------
    list of Section
        Failures, the QC table, then per session one section per figure kind with one
        figure per image.
    """
    out = Path(output_dir)
    sections = []
    if failures:
        sections.append(Section("Preprocessing failures", text="\n".join(failures),
                                status="error"))
    qc = read_qc(out, subject_id)
    if not qc.empty:
        flagged = qc[(qc["coverage"] < 0.95) | (qc["mask_dice"] < 0.8)]
        note = ("template_r: correlation with the template inside its brain mask (negative for "
                "T2-like contrasts); mask_dice: brain mask vs template mask; coverage: fraction "
                "of the template brain inside the field of view; volumes in ml (native space); "
                "gm_modulated_ml should match gm_ml.")
        if not flagged.empty:
            note += f"\nCheck: {len(flagged)} image(s) with coverage < 0.95 or Dice < 0.8."
        sections.append(Section("Quality control", text=note, tables=[qc],
                                status="warning" if not flagged.empty else "ok"))
    figures = sorted((out / f"sub-{subject_id}" / "figures").glob("*.svg"))
    sessions = sorted({_session_of(f) for f in figures}, key=lambda s: s or "")
    for session in sessions:
        for key, title, caption in _FIGURES:
            found = [f for f in figures if _session_of(f) == session
                     and (f"_{key}_" in f.name or f.name.endswith(f"_{key}.svg"))]
            if found:
                label = f"{title}, session {session}" if session else title
                sections.append(Section(label, text=caption, figures=found))
    return sections


def write_qc_summary(output_dir: Path | str) -> Path | None:
    """Concatenate every participant's QC rows into ``OUTPUT_DIR/participants_qc_summary.tsv``.

    Parameters
    ----------
    output_dir : path-like
        Derivatives root.

    Returns
    -------
    pathlib.Path or None
        The table, or None when no participant has QC yet.
    """
    out = Path(output_dir)
    subjects = sorted(p.name[4:] for p in out.glob("sub-*") if p.is_dir())
    tables = [t for t in (read_qc(out, s) for s in subjects) if not t.empty]
    if not tables:
        return None
    table = pd.concat(tables, ignore_index=True)
    return atomic_write_text(out / QC_SUMMARY, table.to_csv(sep="\t", index=False, na_rep="n/a",
                                                            float_format="%.6g"))
