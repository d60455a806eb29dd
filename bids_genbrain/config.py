"""One configuration object for a BIDS-App run, validated before any work starts.

As in fMRIPrep's ``config.py``, the command line only fills this object; every part of the
app reads its settings from it, and the run log records it whole.

Each option is declared once, here: a :class:`Config` field made with :func:`option` holds
the default, the help text, the help panel, extra spellings and the values it accepts.
:mod:`bids_genbrain.cli.bids_app` builds the command line from these fields, and
:meth:`Config.validate` checks every value against them before any work starts, so a
configuration made in Python (the demo, tests) is checked exactly like one from the command
line. To add an option: add a field with :func:`option`, then read ``config.<name>``.
"""

from __future__ import annotations

import math
import re
import typing
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .derivatives import IMAGE_MODALITIES, TEMPLATE
from .errors import InputError
from .model.presets import (COHORT_AVERAGE, GUIDANCE_SCALE, PREDICTION_TYPE, PREDICTIONS,
                             TASK_AVERAGE)
from .utils import available_cpus, default_threads

ANALYSIS_LEVELS = ("participant", "group")
REGISTRATION_CHOICES = ("fast", "accurate")
"""Values of ``--registration`` (presets in :mod:`bids_genbrain.interfaces.ants`)."""
DEVICES = ("auto", "cpu", "cuda")

# help panels, in the order ``--help`` shows them
INPUT = "Input selection"
OUTPUT = "Outputs"
PERFORMANCE = "Performance"
PREPROCESSING = "Preprocessing (participant level)"
GROUP = "Group level (model, synthetic cohort, BWAS)"
TASKS = "Image tasks (participant level, with a --model from genbrain finetune)"
RUN = "Run control"
COMPAT = "fMRIPrep compatibility (accepted; no effect here)"
PANELS = (INPUT, OUTPUT, PERFORMANCE, PREPROCESSING, GROUP, TASKS, RUN, COMPAT)

NATIVE_SPACES = ("anat", "T1w")
"""fMRIPrep's names of the native anatomical space (its outputs are always written)."""

MAX_SEED = 2**31 - 2
"""Largest seed: ANTs takes ``seed + 1`` as a C int."""


@dataclass(frozen=True)
class Option:
    """How a :class:`Config` field appears on the command line and which values it accepts.

    Attributes
    ----------
    help : str
        One or two sentences for ``--help``.
    panel : str
        Help section (one of :data:`PANELS`).
    flags : tuple of str
        Spellings besides ``--<name-with-dashes>`` (``-w``, fMRIPrep's ``--nthreads`` ...).
    metavar : str, optional
        Placeholder in ``--help``.
    choices : tuple of str, optional
        Accepted values.
    minimum, maximum : float, optional
        Inclusive bounds of a number.
    above : float, optional
        Exclusive lower bound of a number.
    unit : str
        Shown in bound errors (``GB``, ``mm``).
    path : {"file", "dir"}, optional
        The value names an existing file or folder (made absolute by :meth:`Config.validate`).
    count : bool
        A repeatable flag counted into an int (``-vv``).
    default_text : str, optional
        What ``--help`` says the default is, where the field's default is resolved later.
    """

    help: str
    panel: str = RUN
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    unit: str = ""
    path: str | None = None
    count: bool = False
    default_text: str | None = None

    def check(self, flag: str, value: Any) -> Any:
        """Check one value (each item of a list); return it, paths made absolute.

        Raises
        ------
        InputError
            Naming ``flag``, the value and what is accepted.
        """
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [self.check(flag, item) for item in value]
        if self.choices is not None and str(value) not in self.choices:
            raise InputError(f"{flag} {value!r} unknown; use one of {', '.join(self.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_number(flag, value)
        if self.path is not None:
            return self._check_path(flag, value)
        return value

    def _check_number(self, flag: str, value: float) -> None:
        unit = f" {self.unit}" if self.unit else ""
        if not math.isfinite(value):
            raise InputError(f"{flag} must be a finite number, got {value}")
        if self.minimum is not None and value < self.minimum:
            raise InputError(f"{flag} must be at least {self.minimum:g}{unit}, got {value:g}")
        if self.above is not None and value <= self.above:
            raise InputError(f"{flag} must be greater than {self.above:g}{unit}, got {value:g}")
        if self.maximum is not None and value > self.maximum:
            raise InputError(f"{flag} must be at most {self.maximum:g}{unit}, got {value:g}")

    def _check_path(self, flag: str, value: Any) -> Path:
        path = Path(value).expanduser().resolve()
        if not path.exists():
            raise InputError(f"{path}: {flag} not found")
        if self.path == "file" and not path.is_file():
            raise InputError(f"{path}: {flag} must be a file, not a folder")
        if self.path == "dir" and not path.is_dir():
            raise InputError(f"{path}: {flag} must be a folder")
        return path


def option(default: Any = MISSING, *, factory: Any = MISSING, **spec: Any) -> Any:
    """A :class:`Config` field that is a command-line option (``spec``: :class:`Option`)."""
    meta = {"option": Option(**spec)}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(name: str) -> str:
    """The command-line spelling of a field: ``mem_gb`` -> ``--mem-gb``."""
    return "--" + name.replace("_", "-")


@dataclass
class Config:
    """Settings of one ``bids_genbrain`` run (see ``bids_genbrain --help`` for each option)."""

    bids_dir: Path
    output_dir: Path
    analysis_level: list[str]
    """Levels to run, in this order (``participant``, ``group`` or both; a string is one)."""
    # input selection
    participant_label: list[str] = option(
        factory=list, panel=INPUT, metavar="LABEL...",
        help="Participants to process (with or without 'sub-'); default all.")
    session_label: list[str] = option(
        factory=list, panel=INPUT, metavar="LABEL...",
        help="Sessions to process (with or without 'ses-'); default all.")
    bids_filter_file: Path | None = option(
        None, panel=INPUT, path="file", metavar="FILE",
        help="JSON of pybids filters per image kind (t1w, t2w, flair), as fMRIPrep's.")
    skip_bids_validation: bool = option(
        False, panel=INPUT, help="Do not validate the input dataset.")
    exclude_participants: Path | None = option(
        None, panel=INPUT, path="file", metavar="TSV",
        help="Group level: leave out the participants listed (e.g. failed QC): a TSV with a "
             "participant_id column (and optionally reason), or one label per line. With "
             "--participant-label, only those participants enter the cohort.")
    derivatives: list[Path] = option(
        factory=list, panel=INPUT, path="dir", metavar="PATH...",
        help="Existing MNI-space derivatives (e.g. fMRIPrep's) to use instead of "
             "preprocessing.")
    # outputs
    resolution: float | None = option(
        None, panel=OUTPUT, minimum=0.5, maximum=16.0, unit="mm", metavar="MM",
        default_text="2, or the res- of --output-spaces",
        help="MNI grid voxel size in mm (GenBrain: 2).")
    output_spaces: list[str] = option(
        factory=list, panel=OUTPUT, metavar="SPACE[:res-N]...",
        help=f"fMRIPrep's spelling of the output grid: {TEMPLATE}[:res-N] (N in mm; "
             f"res-2 is GenBrain's grid). anat and T1w (native space, always written) are "
             f"accepted; any other space is not produced and is an error.")
    # performance
    work_dir: Path | None = option(
        None, panel=PERFORMANCE, flags=("-w",), metavar="DIR", default_text="./work",
        help="Intermediate files (never inside BIDS_DIR); a rerun resumes from here.")
    nprocs: int = option(
        0, panel=PERFORMANCE, flags=("--nthreads", "--n-cpus"), minimum=0, metavar="N",
        help="Processes in parallel (0: every CPU this job may use, i.e. its affinity mask).")
    omp_nthreads: int = option(
        0, panel=PERFORMANCE, minimum=0, metavar="N",
        help="Threads per process (0: $OMP_NUM_THREADS when set, else min(nprocs, 8)).")
    mem_gb: float | None = option(
        None, panel=PERFORMANCE, minimum=1.0, unit="GB", metavar="GB",
        help="Memory limit for the workflow scheduler.")
    mem_mb: str | None = option(
        None, panel=PERFORMANCE, flags=("--mem",), metavar="MB",
        help="fMRIPrep's memory limit: MB, or a size with a unit (16G, 16000MB); sets "
             "--mem-gb.")
    plugin: str = option(
        "MultiProc", panel=PERFORMANCE, metavar="NAME",
        help="nipype plugin: MultiProc, Linear, SLURM, SGE ...")
    plugin_args: Path | None = option(
        None, panel=PERFORMANCE, path="file", metavar="FILE",
        help="JSON file of nipype plugin arguments (e.g. sbatch_args).")
    device: str = option(
        "auto", panel=PERFORMANCE, choices=DEVICES, metavar="{auto,cpu,cuda}",
        help="Where the model runs.")
    # preprocessing
    sloppy: bool = option(
        False, panel=PREPROCESSING,
        help="Fast, low-resolution registration (tests, demos); not for research.")
    registration: str = option(
        "fast", panel=PREPROCESSING, choices=REGISTRATION_CHOICES, metavar="{fast,accurate}",
        help="Template registration: fast (2 mm template, the default) or accurate (1 mm "
             "template, tens of minutes per participant); see docs/usage.md.")
    check_only: bool = option(
        False, panel=PREPROCESSING,
        help="Only find and check each participant's images and write the reports (e.g. "
             "before a long cluster run); no preprocessing.")
    # group level
    model: str | Path | None = option(
        None, panel=GROUP, metavar="DIR|URL",
        help="GenBrain checkpoint to fine-tune: a folder, or an http(s)/file URL of a folder "
             "or archive (fetched once into the cache), optionally pinned with "
             "'#sha256=<weights sha256>'; without it a model is trained from scratch on the "
             "site.")
    modality: str = option(
        "GMmod", panel=GROUP, metavar="NAME",
        help="Map to model: GMmod (modulated GM, VBM), GM, T1w, T2w, FLAIR or a "
             "derivative's desc.")
    condition: list[str] = option(
        factory=lambda: ["age", "sex"], panel=GROUP, metavar="COLUMN...",
        help="participants.tsv columns the model is conditioned on.")
    contrast: str | None = option(
        None, panel=GROUP, metavar="COLUMN",
        help="participants.tsv column tested in the BWAS (e.g. diagnosis).")
    confound: list[str] = option(
        factory=list, panel=GROUP, metavar="COLUMN...",
        help="Extra confounds beside age, sex (and site when several).")
    n_synthetic: int = option(
        1000, panel=GROUP, minimum=1, metavar="N", help="Synthetic images to generate.")
    reference_map: Path | None = option(
        None, panel=GROUP, path="file", metavar="FILE",
        help="d or t map of a large study to compare the BWAS maps with.")
    synthetic_conditions: Path | None = option(
        None, panel=GROUP, path="file", metavar="TSV",
        help="TSV of conditions, one row per synthetic image, instead of the balanced "
             "default.")
    preset: str = option(
        "small", panel=GROUP, metavar="NAME",
        help="Model size when training from scratch (tiny, small, genbrain-b, genbrain-l).")
    steps: int = option(
        10000, panel=GROUP, minimum=1, metavar="N", help="Fine-tuning steps (paper: 10000).")
    batch_size: int = option(
        32, panel=GROUP, minimum=1, metavar="N", help="Training batch size (paper: 32).")
    prediction_type: str = option(
        PREDICTION_TYPE, panel=GROUP, choices=PREDICTIONS, metavar="TARGET",
        help="Training target of a model trained from scratch: epsilon (the paper's), "
        "v_prediction or sample; a --model keeps its own (docs/model.md).")
    lr: float | None = option(
        None, panel=GROUP, above=0.0, maximum=1.0, metavar="LR",
        default_text="1e-3 for nano/tiny/small, 1e-4 for genbrain-b/l (a --model: its preset's)",
        help="AdamW learning rate.")
    sampling_steps: int = option(
        50, panel=GROUP, minimum=1, maximum=1000, metavar="N", help="DDIM steps.")
    cfg_scale: float = option(
        GUIDANCE_SCALE, panel=GROUP, minimum=0.0, metavar="W",
        help="Classifier-free guidance scale of the synthetic cohort (4: at 1.2 a learned "
        "diagnosis effect is a quarter of the real one; docs/model.md).")
    average: int | None = option(
        None, panel=GROUP, minimum=1, metavar="K",
        default_text=f"{TASK_AVERAGE} with --enhance/--impute (the paper's), {COHORT_AVERAGE} "
        "for the group level",
        help="Samples averaged per synthetic, enhanced or imputed image.")
    privacy_threshold: float = option(
        0.95, panel=GROUP, above=0.0, maximum=1.0, metavar="R",
        help="Raw Pearson r above which the GenBrain paper's check calls a synthetic image a "
             "copy (reported; the gate uses distance to the closest record and mean-removed "
             "r, see docs/group.md).")
    holdout: str = option(
        "auto", panel=GROUP, metavar="auto|none|FRACTION",
        help="Participants held out of training, to measure conditional fidelity and "
             "memorization on people the model never saw: auto (20 %, stratified by the "
             "contrast, when that holds out at least 10 per group), none, or a fraction in "
             "(0, 0.5].")
    # image tasks (bids_genbrain.tasks)
    enhance: bool = option(
        False, panel=TASKS,
        help="Enhance each participant's preprocessed images of the modalities the --model "
             "was trained for (desc-enhanced).")
    impute: str | None = option(
        None, panel=TASKS, choices=IMAGE_MODALITIES, metavar="MODALITY",
        help="Impute MODALITY from the --model's sources for participants that lack it "
             "(desc-synthetic).")
    impute_existing: bool = option(
        False, panel=TASKS,
        help="With --impute, also impute for participants that have the modality, to compare "
             "with the real image.")
    # run control
    stop_on_first_crash: bool = option(
        False, panel=RUN,
        help="Stop at the first participant that fails (default: finish the others).")
    clean_workdir: bool = option(
        False, panel=RUN,
        help="First remove this run's intermediate files from the work dir (the selected "
             "participants' folders, or the group level's); other jobs' are kept.")
    reports_only: bool = option(
        False, panel=RUN,
        help="Rebuild the reports from existing outputs: participant reports and the merged "
             "summaries; at the group level also group.html and its statistics, from the "
             "finished model and synthetic cohort (no training, no sampling).")
    boilerplate_only: bool = option(
        False, panel=RUN,
        help="Write the methods boilerplate (logs/CITATION.md; with the group level also "
             "logs/CITATION_group.md) and exit.")
    config_file: Path | None = option(
        None, panel=RUN, path="file", metavar="TOML",
        help="Settings of an earlier run (every run writes one: logs/<level>-<run>.toml and "
             "sub-<label>/log/<run>/bids_genbrain.toml); options given here take precedence.")
    seed: int = option(
        42, panel=RUN, minimum=0, maximum=MAX_SEED, metavar="N",
        help="Seed of every stochastic step.")
    verbose: int = option(
        0, panel=RUN, flags=("-v",), count=True, help="More log output (repeatable).")
    # fMRIPrep options that mean nothing here (its wrappers pass them)
    notrack: bool = option(
        False, panel=COMPAT, help="No effect: bids_genbrain never sends usage data.")
    fs_license_file: str | None = option(
        None, panel=COMPAT, metavar="FILE",
        help="No effect: no FreeSurfer step needs a licence (the file is not read).")
    fs_no_reconall: bool = option(
        False, panel=COMPAT, help="No effect: surfaces are never reconstructed.")
    anat_only: bool = option(
        False, panel=COMPAT, help="No effect: only anatomical images are processed.")
    # resolved by validate(), not options
    plugin_settings: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    """``<UTC time>_<8 hex>``: names this run's log files (unique across parallel jobs)."""
    command_line: list[str] = field(default_factory=list)

    @classmethod
    def options(cls) -> list[tuple[str, Option, Any]]:
        """``(name, spec, default)`` of every option field, in declaration order."""
        out = []
        for f in fields(cls):
            spec = f.metadata.get("option")
            if spec is None:
                continue
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            out.append((f.name, spec, default))
        return out

    @classmethod
    def types(cls) -> dict[str, Any]:
        """Field name -> type annotation (evaluated)."""
        return typing.get_type_hints(cls)

    def validate(self) -> Config:
        """Check paths and values up front; resolve defaults.

        Returns
        -------
        Config
            ``self``, with absolute paths and resolved thread counts.

        Raises
        ------
        InputError
            The first problem found, naming the option or file and the fix.
        """
        levels = ([self.analysis_level] if isinstance(self.analysis_level, str)
                  else list(self.analysis_level))
        unknown = [lv for lv in levels if lv not in ANALYSIS_LEVELS]
        if unknown or not levels:
            raise InputError(f"analysis level {' '.join(unknown) or '(none)'} unknown; use "
                             f"{' or '.join(ANALYSIS_LEVELS)} (or both, in that order)")
        if len(set(levels)) != len(levels):
            raise InputError(f"analysis level given twice: {' '.join(levels)}")
        self.analysis_level = sorted(levels, key=ANALYSIS_LEVELS.index)
        for name, spec, _ in self.options():
            setattr(self, name, spec.check(flag_of(name), getattr(self, name)))
        self._resolve_spaces()
        self._resolve_memory()
        self._check_tasks()  # before any --model download
        self._check_folders()
        self._check_names()
        if self.model is not None:  # a folder or URL, fetched, hash/grid/mask checked
            from .model.fetch import resolve_model

            self.model = resolve_model(self.model)
        if self.reports_only and self.boilerplate_only:
            raise InputError("give --reports-only or --boilerplate-only, not both")
        if "group" in self.analysis_level and self.contrast is None:
            raise InputError("the group level needs --contrast COLUMN (e.g. --contrast "
                             "diagnosis)")
        self.run_id = self.run_id or new_run_id()
        if self.lr is None:
            from .model.train import training_lr

            self.lr = training_lr(self.preset, self.model)
        self.nprocs = self.nprocs if self.nprocs > 0 else available_cpus()
        self.omp_nthreads = (self.omp_nthreads if self.omp_nthreads > 0 else
                             default_threads(self.nprocs))
        if self.omp_nthreads > self.nprocs:
            raise InputError(
                f"--omp-nthreads ({self.omp_nthreads}) cannot exceed --nprocs ({self.nprocs})"
            )
        self.plugin_settings = _read_plugin_args(self.plugin_args)
        self._check_holdout()
        if self.exclude_participants is not None:
            from .selection import read_exclusions

            read_exclusions(self.exclude_participants)  # a malformed file fails here
        return self

    def _check_holdout(self) -> None:
        """``--holdout`` is auto, none or a fraction in (0, 0.5]."""
        self.holdout = str(self.holdout)
        if self.holdout in ("auto", "none"):
            return
        try:
            fraction = float(self.holdout)
        except ValueError:
            fraction = math.nan
        if not 0 < fraction <= 0.5:
            raise InputError(f"--holdout {self.holdout!r}: use auto, none or a fraction of the "
                             "participants in (0, 0.5], e.g. 0.2")

    def _check_folders(self) -> None:
        """BIDS_DIR exists; OUTPUT_DIR and the work dir are folders that do not write into it."""
        self.bids_dir = Path(self.bids_dir).expanduser().resolve()
        self.output_dir = Path(self.output_dir).expanduser().resolve()
        if not self.bids_dir.is_dir():
            raise InputError(f"{self.bids_dir}: BIDS_DIR does not exist; give a BIDS dataset root")
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise InputError(f"{self.output_dir}: OUTPUT_DIR is a file; give a folder")
        if self.output_dir == self.bids_dir:
            raise InputError(
                f"{self.output_dir}: OUTPUT_DIR must differ from BIDS_DIR (the input is never"
                " written to); use e.g. BIDS_DIR/derivatives/genbrain"
            )
        inside = self.bids_dir in self.output_dir.parents
        if inside and (self.bids_dir / "derivatives") not in (
            self.output_dir, *self.output_dir.parents
        ):
            raise InputError(
                f"{self.output_dir}: an OUTPUT_DIR inside BIDS_DIR must be under"
                f" {self.bids_dir / 'derivatives'}; the input dataset is never written to"
            )
        given = self.work_dir is not None
        self.work_dir = Path(self.work_dir or "work").expanduser().resolve()
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise InputError(f"{self.work_dir}: --work-dir is a file; give a folder")
        if self.bids_dir in (self.work_dir, *self.work_dir.parents):
            where = "" if given else " (the default ./work of this folder)"
            raise InputError(f"{self.work_dir}: the work dir{where} must not be inside "
                             f"BIDS_DIR; give -w/--work-dir elsewhere, e.g. /scratch/work")

    def _resolve_spaces(self) -> None:
        """``--output-spaces`` -> the MNI grid; ``--resolution`` defaults to 2 mm."""
        resolutions = set()
        for token in (t for value in self.output_spaces for t in str(value).split()):
            name, *modifiers = token.split(":")
            if name in NATIVE_SPACES and not modifiers:
                continue
            if name != TEMPLATE:
                raise InputError(
                    f"--output-spaces {token}: bids_genbrain writes {TEMPLATE} (the model's "
                    f"grid) and native space ({', '.join(NATIVE_SPACES)}) only; maps in other "
                    f"spaces (e.g. fMRIPrep's) can be given with --derivatives")
            for modifier in modifiers:
                key, _, label = modifier.partition("-")
                try:
                    if key != "res":
                        raise ValueError
                    resolutions.add(float(label.replace("p", ".")))
                except ValueError:
                    raise InputError(f"--output-spaces {token}: only a res-<mm> modifier is "
                                     f"understood (e.g. {TEMPLATE}:res-2)") from None
        if len(resolutions) > 1:
            raise InputError(f"--output-spaces asks for {len(resolutions)} grids; one run "
                             "writes one (use another OUTPUT_DIR for a second)")
        if resolutions:
            (wanted,) = resolutions
            wanted = self._field_spec("resolution").check("the res- of --output-spaces", wanted)
            if self.resolution is not None and self.resolution != wanted:
                raise InputError(f"--resolution {self.resolution:g} and --output-spaces "
                                 f"res-{wanted:g} disagree; give one")
            self.resolution = wanted
        if self.resolution is None:
            self.resolution = 2.0

    def _resolve_memory(self) -> None:
        """fMRIPrep's ``--mem``/``--mem-mb`` (MB, or with a unit) -> ``mem_gb``."""
        if self.mem_mb is None:
            return
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)B?\s*", str(self.mem_mb),
                             re.IGNORECASE)
        if match is None:
            raise InputError(f"--mem {self.mem_mb!r}: give MB or a size with a unit "
                             "(16G, 16000MB)")
        scale = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}
        gb = float(match[1]) * scale[(match[2] or "M").upper()]
        gb = self._field_spec("mem_gb").check("--mem", gb)
        if self.mem_gb is not None and abs(self.mem_gb - gb) > 1e-6:
            raise InputError(f"--mem-gb {self.mem_gb:g} and --mem {self.mem_mb} disagree; "
                             "give one")
        self.mem_gb, self.mem_mb = gb, None

    @classmethod
    def _field_spec(cls, name: str) -> Option:
        return cls.__dataclass_fields__[name].metadata["option"]

    def _check_tasks(self) -> None:
        """``--enhance``/``--impute``: participant level, with a --model; resolve ``average``."""
        wanted = self.enhance or self.impute is not None
        if self.impute_existing and self.impute is None:
            raise InputError("--impute-existing needs --impute MODALITY")
        if wanted:
            flag = "--enhance" if self.enhance else f"--impute {self.impute}"
            if "participant" not in self.analysis_level:
                raise InputError(f"{flag} is a participant-level option; run the participant "
                                 "level with it")
            if self.enhance and self.impute is not None:
                raise InputError("--enhance and --impute need different models; give one")
            if self.check_only:
                raise InputError(f"--check-only writes no images; it cannot be combined with "
                                 f"{flag}")
            if self.model is None:
                raise InputError(f"{flag} needs --model CKPT, a model from genbrain finetune "
                                 f"--task {'enhance' if self.enhance else 'synthesize'}")
        if self.average is None:
            self.average = TASK_AVERAGE if wanted else COHORT_AVERAGE

    def _check_names(self) -> None:
        """Values that name something known elsewhere: preset, nipype plugin, CUDA."""
        from .model.presets import PRESETS

        if self.preset not in PRESETS:
            raise InputError(f"--preset {self.preset!r} unknown; use one of "
                             f"{', '.join(sorted(PRESETS))}")
        if self.plugin not in ("MultiProc", "Linear") and self.plugin not in nipype_plugins():
            raise InputError(f"--plugin {self.plugin!r} unknown; nipype has "
                             f"{', '.join(nipype_plugins())}")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise InputError("--device cuda: torch sees no CUDA device; use --device cpu")

    def settings(self) -> dict[str, Any]:
        """What ``--config-file`` reloads: the positional arguments and every option that is
        set (paths as strings), without the one-shot actions (:data:`NOT_RELOADED`)."""
        out: dict[str, Any] = {}
        names = ["bids_dir", "output_dir", "analysis_level",
                 *(n for n, _, _ in self.options() if n not in NOT_RELOADED)]
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = ([str(v) for v in value] if isinstance(value, list)
                         else str(value) if isinstance(value, Path) else value)
        return out

    def to_toml(self) -> str:
        """The run's settings as TOML, reloadable with ``--config-file``."""
        import tomli_w

        from . import __version__

        header = (f"# bids_genbrain {__version__}, run {self.run_id}: reload with\n"
                  f"#   bids_genbrain BIDS_DIR OUTPUT_DIR LEVEL --config-file THIS_FILE\n"
                  "# (options on that command line take precedence)\n")
        return header + tomli_w.dumps({
            "run": {"version": __version__, "run_id": self.run_id,
                    "command_line": [str(a) for a in self.command_line]},
            "settings": self.settings(),
        })

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (paths as strings) for logs and provenance."""
        return {k: (str(v) if isinstance(v, Path) else
                    [str(x) for x in v] if isinstance(v, list) and v and isinstance(v[0], Path)
                    else v)
                for k, v in asdict(self).items()}


NOT_RELOADED = ("config_file", "reports_only", "boilerplate_only", "clean_workdir", "mem_mb")
"""Options a written configuration leaves out: actions of one run, and ``--mem`` (folded into
``mem_gb``)."""


def read_config_file(path: Path | str) -> dict[str, Any]:
    """Settings of a ``--config-file`` (TOML as written by :meth:`Config.to_toml`).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict
        Field name -> value, typed as the :class:`Config` field.

    Raises
    ------
    InputError
        Unreadable TOML, an unknown setting or a value of the wrong type (naming the file and
        the key).
    """
    import tomllib

    path = Config._field_spec("config_file").check("--config-file", path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: --config-file cannot be read as TOML ({exc})") from None
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise InputError(f"{path}: [settings] must be a table")
    hints = Config.types()
    known = {"bids_dir", "output_dir", "analysis_level",
             *(n for n, _, _ in Config.options() if n not in NOT_RELOADED)}
    out = {}
    for key, value in settings.items():
        if key not in known:
            raise InputError(f"{path}: unknown setting {key!r} in [settings]")
        try:
            out[key] = _typed(value, hints[key])
        except TypeError:
            raise InputError(f"{path}: setting {key!r} = {value!r} is not a "
                             f"{_type_name(hints[key])}") from None
    return out


def _typed(value: Any, annotation: Any) -> Any:
    """``value`` (from TOML) as ``annotation`` (``int``, ``Path | None``, ``list[str]`` ...)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        if isinstance(value, str):  # analysis_level = "participant"
            value = [value]
        if not isinstance(value, list):
            raise TypeError
        return [_typed(v, args[0]) for v in value]
    if type(None) in typing.get_args(annotation):
        return _typed(value, args[0])
    if annotation is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if annotation in (str, Path):
        if not isinstance(value, str):
            raise TypeError
        return annotation(value)
    raise TypeError


def _type_name(annotation: Any) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(annotation)
                       if a is not type(None)) or getattr(annotation, "__name__", str(annotation))


def new_run_id() -> str:
    """``<UTC YYYYmmdd-HHMMSS>_<8 hex>``: sorts by time, unique across parallel jobs."""
    from datetime import datetime, timezone

    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:8]}"


def nipype_plugins() -> list[str]:
    """Names of nipype's execution plugins (``MultiProc``, ``Linear``, ``SLURM`` ...)."""
    from nipype.pipeline import plugins

    return sorted(name[: -len("Plugin")] for name in dir(plugins)
                  if name.endswith("Plugin") and name != "Plugin")


def _read_plugin_args(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: --plugin-args is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: --plugin-args must hold a JSON object")
    return data
