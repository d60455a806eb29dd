"""Participant level: every selected participant's anatomical images, one at a time.

Each participant is checked and processed on its own: a failure (a corrupt file, a failed
registration) is written to a crash log and to the summary, and the others go on (unless
``--stop-on-first-crash``). The run's exit code is 1 when any participant failed.

Parallel jobs may share the OUTPUT_DIR (one participant per job): each participant's records
go to ``sub-<label>/log/<run id>/`` (:func:`bids_genbrain.runlog.participant_log`), and the
shared files are created once or rebuilt from those records under a lock
(:mod:`bids_genbrain.summaries`).

Participants with no T1w, T2w or FLAIR image at all (an MEG empty-room recording
``sub-emptyroom``, a participant with only ``func/``, a participants.tsv row without a
folder) are skipped with a warning and a ``skipped`` summary row (recorded like any
participant's, in ``sub-<label>/log/<run id>/summary.tsv``); they do not make the run fail.
Requesting one with ``--participant-label`` is an input error. participants.tsv is read only
to list participants and to show their covariates in the reports: nothing in it is typed
here, so no covariate stops this level (see :mod:`bids_genbrain.covariates`).
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .bids import (
    ParticipantsTable,
    SessionImages,
    all_participants,
    collect_anat,
    load_layout,
    missing_anatomy,
    read_filter_file,
    read_participants_table,
    select_participants,
)
from .config import Config
from .errors import InputError
from .reports.base import Section, render_report
from .runlog import RunLog, participant_log, participant_log_dir
from .summaries import (ensure_bidsignore, ensure_dataset_description, read_summaries,
                        rebuild_shared_files, write_participant_summary)
from .utils import atomic_write_text

LOGGER = logging.getLogger(__name__)

BIDSIGNORE = ("work/", "logs/", "sub-*/log/", "*.html", "*_summary.tsv", "group/model/",
              ".bids_genbrain.lock")
"""Paths in the derivatives root that are not BIDS files (for the BIDS validator)."""


class ImageError(ValueError):
    """An input image that cannot be used (message says why)."""


@dataclass
class ImageInfo:
    """Header facts of one checked image."""

    path: str
    modality: str
    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    orientation: str
    oblique: bool

    def row(self) -> dict[str, object]:
        """One row of the report's image table."""
        return {
            "modality": self.modality,
            "file": Path(self.path).name,
            "shape": "x".join(map(str, self.shape)),
            "voxel size (mm)": "x".join(f"{z:.2f}" for z in self.zooms),
            "orientation": self.orientation,
            "oblique": "yes" if self.oblique else "no",
        }


def check_image(path: str | Path, modality: str) -> ImageInfo:
    """Check that an anatomical image loads as a 3D volume with a sane affine.

    Parameters
    ----------
    path : path-like
    modality : str
        ``T1w``, ``T2w`` or ``FLAIR`` (recorded only).

    Returns
    -------
    ImageInfo

    Raises
    ------
    ImageError
        Unreadable file, not 3D (4D with one volume is accepted), non-finite or singular
        affine, voxel sizes outside 0.1-10 mm, fewer than 16 voxels along an axis, or no
        finite non-zero data.
    """
    name = Path(path).name
    try:
        img = nb.load(path)
        shape = img.shape
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise ImageError(f"{name}: cannot be read as NIfTI ({exc})") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageError(f"{name}: expected a 3D image, got shape {img.shape}")
    if min(shape) < 16:
        raise ImageError(f"{name}: too small to be a brain image (shape {shape})")
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise ImageError(f"{name}: affine is not finite and invertible; fix the NIfTI header")
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    if not all(0.1 <= z <= 10.0 for z in zooms):
        raise ImageError(f"{name}: implausible voxel size {zooms} mm; fix the NIfTI header")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - truncated gzip, short file ...
        raise ImageError(f"{name}: image data cannot be read ({exc})") from None
    finite = np.isfinite(data)
    if not finite.any() or not np.any(data[finite] != 0):
        raise ImageError(f"{name}: image holds no finite non-zero voxels")
    axes = nb.aff2axcodes(affine)
    cosines = affine[:3, :3] / np.array(zooms)
    oblique = bool(np.abs(cosines).max(axis=0).min() < 1 - 1e-3)
    return ImageInfo(str(path), modality, tuple(int(s) for s in shape), zooms, "".join(axes),
                     oblique)


@dataclass
class ParticipantResult:
    """Outcome of one participant: ``status`` is ``ok``, ``failed`` or ``skipped``."""

    subject: str
    status: str = "ok"
    reason: str = ""
    images: list[ImageInfo] = field(default_factory=list)
    sessions: list[str | None] = field(default_factory=list)
    log_dir: Path | None = None
    input_error: bool = False
    """The failure is bad input of this participant (e.g. a source the model needs)."""

    def row(self, config: Config) -> dict[str, object]:
        """This participant's row of the summary table."""
        mode = ("reports-only" if config.reports_only else "check-only" if config.check_only
                else "derivatives" if config.derivatives else "preprocessing")
        return {"participant_id": f"sub-{self.subject}", "status": self.status,
                "n_images": len(self.images),
                "sessions": ",".join(s for s in self.sessions if s) or "n/a",
                "reason": self.reason or "n/a", "mode": mode, "run_id": config.run_id}


def _write_crash_log(log_dir: Path, subject: str, text: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return atomic_write_text(log_dir / f"crash-{stamp}-sub-{subject}.txt", text)


def _participant_report(config: Config, result: ParticipantResult,
                        sessions: list[SessionImages], covariates: pd.Series | None,
                        failures: list[str], tasks: list[Section] = ()) -> Path:
    sections = []
    summary = (
        f"Participant sub-{result.subject}: {len(result.images)} anatomical image(s) in "
        f"{len(sessions) or 0} session(s). Status: {result.status}"
        + (f" ({result.reason})" if result.reason else "")
    )
    table = []
    if covariates is not None:
        table = [pd.DataFrame([{k: v for k, v in covariates.items() if k != "participant_id"}])]
    sections.append(Section("Summary", text=summary, tables=table,
                            status="ok" if result.status == "ok" else "error"))
    for ses in sessions:
        rows = [info.row() for info in result.images
                if any(info.path in paths for paths in ses.images.values())]
        title = f"Session {ses.session}" if ses.session else "Anatomical images"
        sections.append(Section(title, tables=[pd.DataFrame(rows)] if rows else []))
    if not config.check_only:
        from .reports.participant import preprocessing_sections

        sections.extend(preprocessing_sections(config.output_dir, result.subject, failures))
    sections.extend(tasks)
    if result.log_dir is not None:
        sections.append(Section("Logs", text=f"Log, settings and crash files of this run: "
                                f"{result.log_dir.relative_to(config.output_dir)}/"))
    methods = (
        "Anatomical images were found with PyBIDS and checked for a readable 3D volume with a"
        " finite, invertible affine and plausible voxel sizes (0.1-10 mm) with NiBabel."
    )
    if not config.check_only:
        methods += (
            " Each image was conformed to RAS, bias-corrected (N4), brain-extracted with a"
            " template mask, registered to MNI152NLin6Asym (rigid, affine, SyN; ANTs through"
            f" antspyx, {'--sloppy' if config.sloppy else config.registration} preset) and"
            " segmented into GM, WM and CSF with template priors (Atropos); outputs were"
            f" resampled once onto the {config.resolution:g} mm grid, and modulated GM maps"
            " (GM x Jacobian determinant) computed, in a Nipype workflow."
        )
    if tasks and config.model is not None and (config.enhance or config.impute):
        from .tasks.run import methods_text

        methods += " " + methods_text(config)
    return render_report(f"sub-{result.subject}", sections,
                         config.output_dir / f"sub-{result.subject}.html", methods=methods)


def process_participant(config: Config, layout, subject: str, queries: dict,
                        covariates: pd.DataFrame | None,
                        log_dir: Path | None = None, task_model=None) -> ParticipantResult:
    """Check one participant's images, preprocess them, and write its report.

    With ``--reports-only`` nothing is processed: the report is rebuilt from existing outputs
    and the participant's latest recorded outcome.

    Parameters
    ----------
    config : Config
    layout : bids.BIDSLayout
    subject : str
        Bare label.
    queries : dict
        Per-kind pybids queries (:func:`bids_genbrain.bids.read_filter_file`).
    covariates : pandas.DataFrame or None
        participants.tsv values as text (:func:`bids_genbrain.covariates.display_table`),
        shown in the report.
    log_dir : pathlib.Path, optional
        The participant's log folder of this run (crash files, nipype log, methods).
    task_model : bids_genbrain.tasks.run.TaskModel, optional
        Image-task model to apply after preprocessing (``--enhance``/``--impute``).

    Returns
    -------
    ParticipantResult
        ``status`` is ``"failed"`` with a one-line ``reason`` when an image cannot be used
        (``input_error`` when the task model lacks a source image of the participant).
    """
    result = ParticipantResult(subject, log_dir=log_dir)
    sessions = collect_anat(layout, subject, sessions=config.session_label, queries=queries)
    result.sessions = [s.session for s in sessions]
    problems = []
    if not sessions:
        problems.append("no T1w, T2w or FLAIR image found"
                        + (f" in session(s) {config.session_label}" if config.session_label else ""))
    for ses in sessions:
        for modality, paths in ses.images.items():
            for path in paths:
                try:
                    result.images.append(check_image(path, modality))
                except ImageError as exc:
                    problems.append(str(exc))
    failures: list[str] = []
    if problems:
        result.status, result.reason = "failed", "; ".join(problems)
    elif config.reports_only:
        _recorded_outcome(config.output_dir, result)
    elif not config.check_only:
        from .workflows.base import run_participant_preprocessing

        failures = run_participant_preprocessing(
            config, subject, {ses.session: ses.images for ses in sessions}, log_dir=log_dir)
        if failures:
            result.status, result.reason = "failed", "; ".join(failures)
    tasks: list[Section] = []
    if config.reports_only:  # the task panels are re-drawn from the outputs' sidecars
        from .tasks.run import sections_from_outputs

        tasks = sections_from_outputs(config.output_dir, subject, result.sessions)
    elif task_model is not None and result.status == "ok":
        from .tasks.run import apply_to_participant

        tasks, problem = apply_to_participant(config, task_model, subject,
                                              [s.session for s in sessions])
        if problem:
            result.status, result.reason, result.input_error = "failed", problem, True
    row = covariates.loc[subject] if covariates is not None and subject in covariates.index else None
    _participant_report(config, result, sessions, row, failures, tasks)
    return result


def _recorded_outcome(output_dir: Path, result: ParticipantResult) -> None:
    """Status and reason of the participant's latest run (for ``--reports-only``)."""
    table = read_summaries(output_dir)
    rows = table[table["participant_id"] == f"sub-{result.subject}"]
    if len(rows):
        result.status = rows["status"].iloc[0]
        reason = rows["reason"].iloc[0]
        result.reason = "" if reason == "n/a" else reason


def _run_one(config: Config, layout, subject: str, queries: dict,
             covariates: pd.DataFrame | None, log_dir: Path,
             task_model=None) -> ParticipantResult:
    """One participant, never raising: a crash is a failed result with a crash file."""
    try:
        result = process_participant(config, layout, subject, queries, covariates, log_dir,
                                     task_model)
    except Exception as exc:  # noqa: BLE001 - one participant never sinks the others
        crash = _write_crash_log(log_dir, subject, traceback.format_exc())
        result = ParticipantResult(subject, "failed", f"{type(exc).__name__}: {exc} "
                                   f"(see {crash.relative_to(config.output_dir)})",
                                   log_dir=log_dir)
    if result.status != "ok":
        LOGGER.error("sub-%s failed: %s", subject, result.reason)
    write_participant_summary(log_dir, result.row(config))
    return result


def clean_work_dir(work_dir: Path, subject: str) -> None:
    """Remove one participant's workflow folders (``sub_<label>[_ses_<s>]``) from the work dir."""
    import shutil

    for folder in [work_dir / f"sub_{subject}", *work_dir.glob(f"sub_{subject}_ses_*")]:
        if folder.is_dir():
            LOGGER.info("--clean-workdir: removing %s", folder)
            shutil.rmtree(folder)


def _participants_table(bids_dir: Path) -> ParticipantsTable | None:
    """participants.tsv for listing and reports; a missing or malformed one is a warning."""
    try:
        return read_participants_table(bids_dir)
    except InputError as exc:
        LOGGER.warning("%s (the participant level goes on without it: participants are "
                       "listed from the sub-*/ folders; the group level needs it)", exc)
        return None


def _plan(layout, table: ParticipantsTable | None,
          requested: list[str]) -> tuple[list[str], list[ParticipantResult]]:
    """Participants to process, and the skipped ones (no T1w, T2w or FLAIR image at all)."""
    subjects = (select_participants(layout, requested) if requested
                else all_participants(layout, table))
    reasons = missing_anatomy(layout, subjects)
    if requested and reasons:
        named = ", ".join(f"sub-{s} ({why})" for s, why in reasons.items())
        raise InputError(f"{layout.root}: requested participant(s) without anatomical images: "
                         f"{named}; drop them from --participant-label")
    if len(reasons) == len(subjects):
        raise InputError(f"{layout.root}: no participant has a T1w, T2w or FLAIR image "
                         "(expected sub-<label>/[ses-<label>/]anat/sub-<label>_T1w.nii.gz)")
    if reasons:
        shown = [f"sub-{s} ({why})" for s, why in reasons.items()]
        LOGGER.warning("skipping %d participant(s) with nothing to preprocess: %s",
                       len(shown), "; ".join(shown[:10]) + (" ..." if len(shown) > 10 else ""))
    skipped = [ParticipantResult(s, "skipped", why) for s, why in reasons.items()]
    return [s for s in subjects if s not in reasons], skipped


def run_participant_level(config: Config, log: RunLog) -> list[ParticipantResult]:
    """Run the participant level for every selected participant.

    Parameters
    ----------
    config : Config
        Validated configuration.
    log : RunLog
        Receives each participant's outcome.

    Returns
    -------
    list of ParticipantResult
        One per participant, sorted by label, skipped ones included; the CLI exits 1 when
        any has ``status="failed"``.

    Raises
    ------
    InputError
        A requested participant that the dataset lacks or that has no anatomical image, or
        a dataset where no participant has one.
    """
    task_model = None
    if (config.enhance or config.impute is not None) and not config.reports_only:
        from .tasks.run import load_task_model

        task_model = load_task_model(config)  # a wrong model fails here, before any work
    layout = load_layout(config.bids_dir, validate=not config.skip_bids_validation)
    table = _participants_table(config.bids_dir)
    queries = read_filter_file(config.bids_filter_file)
    subjects, skipped = _plan(layout, table, config.participant_label)
    covariates = None
    if table is not None:
        from .covariates import display_table

        covariates = display_table(table)
        unknown = [s for s in subjects if s not in covariates.index]
        if unknown:
            LOGGER.warning("participants.tsv has no row for %s",
                           ", ".join(f"sub-{s}" for s in unknown))
    if config.derivatives and not config.check_only:
        from .workflows.precomputed import check_derivative_spaces

        # every template space is resolved (a registration computed and cached) up front;
        # one that cannot be transformed stops the run here (exit 2), before any participant
        check_derivative_spaces(config.derivatives, subjects, config.resolution)

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    ensure_dataset_description(
        out, name="bids_genbrain participant-level derivatives",
        source_datasets=[{"URL": config.bids_dir.as_uri()}],
    )
    ensure_bidsignore(out, BIDSIGNORE)
    toml = config.to_toml()

    for result in skipped:  # recorded like any participant, so merged summaries keep them
        log.outcome(f"sub-{result.subject}", result.status, result.reason)
        if not config.reports_only:
            folder = participant_log_dir(out, result.subject, config.run_id)
            folder.mkdir(parents=True, exist_ok=True)
            write_participant_summary(folder, result.row(config))
    results: list[ParticipantResult] = []
    with Progress(TextColumn("[bold]participant level"), BarColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(),
                  transient=False) as progress:
        task = progress.add_task("", total=len(subjects))
        for subject in subjects:
            progress.update(task, description=f"sub-{subject}")
            if config.clean_workdir:
                clean_work_dir(config.work_dir, subject)
            if config.reports_only:  # nothing is run, so nothing is logged per participant
                result = process_participant(config, layout, subject, queries, covariates)
            else:
                with participant_log(out, subject, config.run_id, toml) as log_dir:
                    result = _run_one(config, layout, subject, queries, covariates, log_dir,
                                      task_model)
            log.outcome(f"sub-{subject}", result.status, result.reason)
            results.append(result)
            progress.advance(task)
            if result.status == "failed" and config.stop_on_first_crash:
                LOGGER.error("--stop-on-first-crash: stopping after sub-%s", subject)
                break
    rebuild_shared_files(out)
    return sorted([*results, *skipped], key=lambda r: r.subject)


def write_boilerplate(config: Config) -> Path:
    """``logs/CITATION.md``: the methods of the selected participants' workflows, run nothing.

    Each session's preprocessing workflow is built (not run) as the participant level would
    build it, and its methods text kept once.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        No anatomical image among the selected participants.
    """
    from .errors import InputError
    from .runlog import output_lock
    from .summaries import write_citation
    from .workflows.base import init_participant_wf

    layout = load_layout(config.bids_dir, validate=not config.skip_bids_validation)
    queries = read_filter_file(config.bids_filter_file)
    methods: list[str] = []
    for subject in select_participants(layout, config.participant_label):
        for ses in collect_anat(layout, subject, sessions=config.session_label, queries=queries):
            workflow = init_participant_wf(
                subject_id=subject, session_id=ses.session, anat_files=ses.images,
                output_dir=config.output_dir, sloppy=config.sloppy,
                registration=config.registration, omp_nthreads=config.omp_nthreads, resolution=config.resolution,
                seed=config.seed, bids_dir=config.bids_dir)
            text = workflow.visit_desc().strip()
            if text not in methods:
                methods.append(text)
    if not methods:
        raise InputError("no T1w, T2w or FLAIR image in the selected participants: no methods "
                         "to write")
    with output_lock(config.output_dir):
        return write_citation(config.output_dir, methods)


__all__ = ["ParticipantResult", "check_image", "run_participant_level", "write_boilerplate"]
