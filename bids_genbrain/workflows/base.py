"""Participant-level workflow: one session's anatomical images to MNI152NLin6Asym.

:func:`init_participant_wf` builds the nipype workflow of one participant's session;
:func:`run_workflow` runs it (MultiProc by default, any nipype plugin otherwise) with a
work directory that makes reruns skip finished nodes and a crash folder per participant;
:func:`preprocess_participant` does both for every session of a participant and is what the
BIDS-App's participant level calls.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from .. import __version__
from ..derivatives import bids_uri
from ..interfaces.ants import preset_name
from ..interfaces.qc import QCMetrics
from ..templates import TEMPLATE, get_template
from . import logs
from .anat import init_anat_wf, init_coreg_wf
from .outputs import init_anat_reports_wf, init_ds_anat_wf, output_paths

LOGGER = logging.getLogger(__name__)

MODALITIES = ("T1w", "T2w", "FLAIR")
"""Contrasts preprocessed, in order of preference for the reference image."""


def _label(value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value)
    for prefix in ("sub-", "ses-"):
        value = value.removeprefix(prefix)
    if not value.isalnum():
        raise ValueError(f"BIDS labels must be alphanumeric, got {value!r}")
    return value


def _sources(paths: Sequence[str], bids_dir: Path | str | None) -> list[str]:
    if bids_dir is None:
        return [str(Path(p).resolve()) for p in paths]
    out = []
    for p in paths:
        try:
            out.append(bids_uri(p, bids_dir))
        except ValueError:  # outside the dataset
            out.append(str(Path(p).resolve()))
    return out


def init_participant_wf(
    *,
    subject_id: str,
    session_id: str | None = None,
    anat_files: Mapping[str, Sequence[str]],
    output_dir: Path | str,
    sloppy: bool = False,
    registration: str = "fast",
    omp_nthreads: int = 1,
    resolution: float = 2.0,
    seed: int = 0,
    bids_dir: Path | str | None = None,
    name: str | None = None,
) -> Workflow:
    """Build the preprocessing workflow of one participant's session.

    Parameters
    ----------
    subject_id : str
        Participant label (with or without ``sub-``).
    session_id : str, optional
        Session label; outputs then carry ``ses-<label>``.
    anat_files : mapping
        Contrast (``T1w``, ``T2w``, ``FLAIR``) -> list of runs. The T1w (else T2w, else FLAIR)
        is the reference registered to the template; the others are coregistered to it.
    output_dir : path-like
        Derivatives root.
    sloppy : bool
        Fast, low-resolution registration (tests and demos); overrides ``registration``.
    registration : {"fast", "accurate"}
        Registration preset (see :func:`bids_genbrain.workflows.anat.init_anat_wf`).
    omp_nthreads : int
        Threads per ANTs node.
    resolution : float
        Output MNI grid in mm (2 mm is GenBrain's 91x109x91).
    seed : int
        ANTs random seed.
    bids_dir : path-like, optional
        Raw dataset root, for ``bids:raw:`` URIs in ``Sources``.
    name : str, optional
        Workflow name (``sub_<label>[_ses_<label>]_wf``).

    Returns
    -------
    niworkflows.engine.workflows.LiterateWorkflow
        Its :meth:`visit_desc` gives the methods boilerplate.

    Raises
    ------
    ValueError
        No T1w, T2w or FLAIR run given, or a non-alphanumeric label.
    """
    subject_id = _label(subject_id)
    session_id = _label(session_id)
    modalities = [m for m in MODALITIES if anat_files.get(m)]
    if not modalities:
        raise ValueError(f"sub-{subject_id}: no T1w, T2w or FLAIR image to preprocess")
    unknown = set(anat_files) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unsupported anatomical contrasts {sorted(unknown)}; use {MODALITIES}")
    reference = modalities[0]
    entities = {"sub": subject_id, "ses": session_id}
    sources = {m: _sources(anat_files[m], bids_dir) for m in modalities}
    grid = str(get_template(resolution, suffix="T1w"))

    workflow = Workflow(name=name or f"sub_{subject_id}" + (f"_ses_{session_id}" if session_id
                                                            else "") + "_wf")
    workflow.__desc__ = f"""
Results included in this manuscript come from preprocessing performed using bids_genbrain
{__version__}, a BIDS-App built on Nipype and NiWorkflows. The reference image was the
{reference}{'; ' + ', '.join(modalities[1:]) + ' were coregistered to it' if len(modalities) > 1
            else ''}.
"""
    preset = preset_name(sloppy=sloppy, registration=registration)
    anat_wf = init_anat_wf(reference=reference, sloppy=sloppy, registration=registration,
                           omp_nthreads=omp_nthreads,
                           resolution=resolution, seed=seed)
    anat_wf.inputs.inputnode.in_files = sorted(str(p) for p in anat_files[reference])
    ds_wf = init_ds_anat_wf(output_dir=output_dir, entities=entities, reference=reference,
                            modalities=modalities, resolution=resolution, sources=sources,
                            preset=preset)
    reports_wf = init_anat_reports_wf(output_dir=output_dir, entities=entities,
                                      reference=reference, modalities=modalities,
                                      resolution=resolution)
    images = pe.Node(niu.Merge(len(modalities)), name="images", run_without_submitting=True)
    fovs = pe.Node(niu.Merge(len(modalities)), name="fovs", run_without_submitting=True)
    qc = pe.Node(QCMetrics(participant_id=f"sub-{subject_id}", session_id=session_id or "n/a",
                           modalities=modalities, template=grid,
                           template_mask=str(get_template(resolution, suffix="mask"))),
                 name="qc", mem_gb=1.0)
    connections = [
        (anat_wf, ds_wf, [("outputnode.preproc_mni", f"inputnode.preproc_{reference}"),
                          ("outputnode.mask_mni", "inputnode.mask_mni"),
                          ("outputnode.probseg_mni", "inputnode.probseg_mni"),
                          ("outputnode.gm_modulated", "inputnode.gm_modulated"),
                          ("outputnode.log_jacobian", "inputnode.log_jacobian"),
                          ("outputnode.forward_transform", "inputnode.forward_transform"),
                          ("outputnode.reverse_transform", "inputnode.reverse_transform"),
                          ("outputnode.preproc", "inputnode.preproc"),
                          ("outputnode.brain_mask", "inputnode.brain_mask"),
                          ("outputnode.dseg", "inputnode.dseg")]),
        (anat_wf, reports_wf, [("outputnode.preproc", "inputnode.preproc"),
                               ("outputnode.brain_mask", "inputnode.brain_mask"),
                               ("outputnode.dseg", "inputnode.dseg"),
                               ("outputnode.preproc_mni", f"inputnode.preproc_{reference}")]),
        (anat_wf, images, [("outputnode.preproc_mni", "in1")]),
        (anat_wf, fovs, [("outputnode.fov_mni", "in1")]),
        (images, qc, [("out", "images")]),
        (fovs, qc, [("out", "fovs")]),
        (anat_wf, qc, [("outputnode.mask_mni", "mask_mni"),
                       ("outputnode.probseg", "probseg"),
                       ("outputnode.brain_mask", "native_mask"),
                       ("outputnode.gm_modulated", "gm_modulated")]),
        (qc, ds_wf, [("out_tsv", "inputnode.qc_tsv")]),
    ]
    for k, modality in enumerate(modalities[1:], start=2):
        coreg_wf = init_coreg_wf(modality=modality, reference=reference,
                                 omp_nthreads=omp_nthreads, resolution=resolution, seed=seed)
        coreg_wf.inputs.inputnode.in_files = sorted(str(p) for p in anat_files[modality])
        connections += [
            (anat_wf, coreg_wf, [("outputnode.preproc", "inputnode.reference_image"),
                                 ("outputnode.brain_mask", "inputnode.reference_mask"),
                                 ("outputnode.forward_transform", "inputnode.forward_transform")]),
            (coreg_wf, ds_wf, [("outputnode.preproc_mni", f"inputnode.preproc_{modality}"),
                               ("outputnode.coreg_transform", f"inputnode.coreg_{modality}")]),
            (coreg_wf, reports_wf, [("outputnode.preproc_mni", f"inputnode.preproc_{modality}"),
                                    ("outputnode.coreg_warped", f"inputnode.coreg_{modality}")]),
            (coreg_wf, images, [("outputnode.preproc_mni", f"in{k}")]),
            (coreg_wf, fovs, [("outputnode.fov_mni", f"in{k}")]),
        ]
    workflow.connect(connections)
    return workflow


@dataclass
class RunResult:
    """Outcome of running one session's workflow.

    Attributes
    ----------
    subject_id, session_id : str, str or None
    success : bool
    reason : str
        One line saying why it failed (empty on success).
    crash_files : list of pathlib.Path
        Nipype crash files written by this run.
    elapsed_s : float
    outputs : dict
        Derivative paths by key (see :func:`bids_genbrain.workflows.outputs.output_paths`).
    methods : str
        Methods boilerplate of the workflow.
    """

    subject_id: str
    session_id: str | None
    success: bool
    reason: str = ""
    crash_files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)
    methods: str = ""


def _crash_reason(crash_files: Sequence[Path], exc: BaseException) -> str:
    """The last line of the first crash file's traceback, with the failing node's name."""
    for crash in sorted(crash_files):
        lines = [ln.strip() for ln in crash.read_text(errors="replace").splitlines() if ln.strip()]
        node = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Node:")), "?")
        errors = [ln for ln in lines if ("Error" in ln or "Exception" in ln)
                  and not ln.startswith(("File ", "Traceback", "raise "))]
        if errors:
            return f"node {node} failed: {errors[-1]} (crash file {crash.name})"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def run_workflow(
    workflow: Workflow,
    *,
    work_dir: Path | str,
    crash_dir: Path | str,
    plugin: str = "MultiProc",
    plugin_args: Mapping[str, Any] | None = None,
    n_procs: int = 1,
    memory_gb: float | None = None,
    omp_nthreads: int = 1,
) -> tuple[bool, str, list[Path]]:
    """Run a workflow; return whether it succeeded, why not, and the crash files.

    Parameters
    ----------
    workflow : nipype Workflow
    work_dir : path-like
        Nipype base directory: a rerun with the same inputs skips finished nodes.
    crash_dir : path-like
        Where nipype writes crash files (text).
    plugin : str
        ``MultiProc`` (local, honours ``n_procs``/``memory_gb``), ``Linear``, ``SLURM``,
        ``SGE``, ... any nipype plugin.
    plugin_args : mapping, optional
        Extra plugin arguments (e.g. ``sbatch_args``), merged over the defaults.
    n_procs : int
        Processes of MultiProc.
    memory_gb : float, optional
        Memory MultiProc may schedule.
    omp_nthreads : int
        ITK threads of child processes.

    Returns
    -------
    success : bool
    reason : str
    crash_files : list of pathlib.Path
    """
    crash_dir = Path(crash_dir)
    crash_dir.mkdir(parents=True, exist_ok=True)
    workflow.base_dir = str(Path(work_dir))
    workflow.config["execution"].update({
        "crashdump_dir": str(crash_dir), "crashfile_format": "txt",
        "stop_on_first_crash": True, "hash_method": "content",
        "remove_unnecessary_outputs": False,
    })
    args: dict[str, Any] = {}
    if plugin == "MultiProc":
        # "forkserver": workers never inherit a parent's ITK thread pool (a forked copy of a
        # process that already ran ANTs deadlocks)
        args = {"n_procs": max(1, int(n_procs)), "raise_insufficient": False,
                "mp_context": "forkserver"}
        multiprocessing.set_forkserver_preload(["__main__", logs.__name__])
        if memory_gb:
            args["memory_gb"] = float(memory_gb)
    args.update(plugin_args or {})
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(omp_nthreads)))
    before = set(crash_dir.glob("crash-*"))
    try:
        workflow.run(plugin=plugin, plugin_args=args)
    except Exception as exc:  # noqa: BLE001 - nipype raises RuntimeError and others
        crashes = sorted(set(crash_dir.glob("crash-*")) - before)
        return False, _crash_reason(crashes, exc), crashes
    return True, "", []


def preprocess_participant(
    subject_id: str,
    sessions: Mapping[str | None, Mapping[str, Sequence[str]]],
    *,
    output_dir: Path | str,
    work_dir: Path | str,
    sloppy: bool = False,
    registration: str = "fast",
    omp_nthreads: int = 1,
    resolution: float = 2.0,
    seed: int = 0,
    plugin: str = "MultiProc",
    plugin_args: Mapping[str, Any] | None = None,
    n_procs: int = 1,
    memory_gb: float | None = None,
    bids_dir: Path | str | None = None,
    log_dir: Path | str | None = None,
) -> list[RunResult]:
    """Preprocess every session of one participant, each with its own workflow.

    A session that fails leaves crash files in ``log_dir`` and does not stop the other
    sessions. Nipype's log goes to ``log_dir/pypeline.log`` (warnings also to the terminal);
    the methods boilerplate to ``log_dir/CITATION.md``. Nothing outside the participant's
    folders is written, so parallel jobs into one OUTPUT_DIR never collide.

    Parameters
    ----------
    subject_id : str
        Participant label.
    sessions : mapping
        Session label (None without sessions) -> contrast -> runs.
    output_dir, work_dir : path-like
        Derivatives root; nipype work directory (reused by reruns).
    sloppy, registration, omp_nthreads, resolution, seed, bids_dir
        See :func:`init_participant_wf`.
    plugin, plugin_args, n_procs, memory_gb
        See :func:`run_workflow`.
    log_dir : path-like, optional
        The participant's log folder of this run; default ``OUTPUT_DIR/sub-<label>/log``.

    Returns
    -------
    list of RunResult
        One per session, in the given order.
    """
    from ..utils import atomic_write_text

    subject_id = _label(subject_id)
    output_dir = Path(output_dir)
    crash_dir = Path(log_dir) if log_dir else output_dir / f"sub-{subject_id}" / "log"
    crash_dir.mkdir(parents=True, exist_ok=True)
    logs.log_nipype_to(crash_dir)
    results = []
    for session_id, anat_files in sessions.items():
        start = time.monotonic()
        label = f"sub-{subject_id}" + (f" ses-{session_id}" if session_id else "")
        try:
            workflow = init_participant_wf(
                subject_id=subject_id, session_id=session_id, anat_files=anat_files,
                output_dir=output_dir, sloppy=sloppy, registration=registration,
                omp_nthreads=omp_nthreads,
                resolution=resolution, seed=seed, bids_dir=bids_dir)
        except ValueError as exc:
            results.append(RunResult(subject_id, session_id, False, str(exc)))
            continue
        methods = workflow.visit_desc()
        LOGGER.info("%s: preprocessing (%s registration)", label,
                    preset_name(sloppy=sloppy, registration=registration))
        success, reason, crashes = run_workflow(
            workflow, work_dir=work_dir, crash_dir=crash_dir, plugin=plugin,
            plugin_args=plugin_args, n_procs=n_procs, memory_gb=memory_gb,
            omp_nthreads=omp_nthreads)
        modalities = [m for m in MODALITIES if anat_files.get(m)]
        outputs = output_paths(output_dir, {"sub": subject_id, "ses": session_id},
                               reference=modalities[0], modalities=modalities,
                               resolution=resolution)
        results.append(RunResult(subject_id, session_id, success, reason, crashes,
                                 time.monotonic() - start, outputs, methods))
        atomic_write_text(crash_dir / "CITATION.md", methods + "\n")
        LOGGER.log(logging.INFO if success else logging.ERROR, "%s: %s", label,
                   "done" if success else reason)
    return results


def run_participant_preprocessing(config: Any, subject_id: str,
                                  sessions: Mapping[str | None, Mapping[str, Sequence[str]]],
                                  log_dir: Path | str | None = None) -> list[str]:
    """The participant level's preprocessing step, driven by the BIDS-App configuration.

    With ``--derivatives``, a participant's existing MNI-space maps are imported
    (:func:`bids_genbrain.workflows.precomputed.import_derivatives`) and its sessions are
    not preprocessed; otherwise each session runs :func:`preprocess_participant`.

    Parameters
    ----------
    config : bids_genbrain.config.Config
        Validated configuration (``output_dir``, ``work_dir``, ``sloppy``, ``registration``,
        ``omp_nthreads``, ``resolution``, ``seed``, ``plugin``, ``plugin_settings``, ``nprocs``,
        ``mem_gb``,
        ``bids_dir``, ``derivatives``).
    subject_id : str
        Bare label.
    sessions : mapping
        Session label (or None) -> contrast -> runs.
    log_dir : path-like, optional
        The participant's log folder of this run (see :func:`preprocess_participant`).

    Returns
    -------
    list of str
        One line per failed session (empty when everything succeeded).
    """
    from .precomputed import import_derivatives

    failures = []
    todo = {}
    for session_id, anat_files in sessions.items():
        if config.derivatives:
            maps = import_derivatives(config.derivatives, config.output_dir,
                                      subject_id=subject_id, session_id=session_id,
                                      resolution=config.resolution)
            if maps:
                LOGGER.info("sub-%s%s: %d MNI-space derivative(s) imported; not preprocessed",
                            subject_id, f" ses-{session_id}" if session_id else "", len(maps))
                continue
        todo[session_id] = anat_files
    results = preprocess_participant(
        subject_id, todo, output_dir=config.output_dir, work_dir=config.work_dir,
        sloppy=config.sloppy, registration=config.registration,
        omp_nthreads=config.omp_nthreads, resolution=config.resolution,
        seed=config.seed, plugin=config.plugin, plugin_args=config.plugin_settings,
        n_procs=config.nprocs, memory_gb=config.mem_gb, bids_dir=config.bids_dir,
        log_dir=log_dir)
    for res in results:
        if not res.success:
            where = f"ses-{res.session_id}: " if res.session_id else ""
            failures.append(f"{where}{res.reason}")
    return failures


__all__ = ["MODALITIES", "TEMPLATE", "RunResult", "init_participant_wf", "preprocess_participant",
           "run_participant_preprocessing", "run_workflow"]
