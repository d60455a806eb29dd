"""``bids_genbrain BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS-App entry point.

Follows the BIDS-Apps specification: positional arguments first, then options. As in
fMRIPrep, every option also works with underscores (``--participant_label``), and list options
take several values after one flag (``--participant-label 01 02``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from ..config import Config
from ..errors import InputError, disk_full

LOGGER = logging.getLogger("bids_genbrain")

VARIADIC_OPTIONS = (
    "--participant-label", "--session-label", "--derivatives", "--condition", "--confound",
)
"""Options that take several values after one flag (expanded for click)."""


class Level(str, Enum):
    participant = "participant"
    group = "group"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def normalize_argv(argv: list[str]) -> list[str]:
    """Rewrite BIDS-Apps style arguments into what click parses.

    ``--participant_label`` becomes ``--participant-label``; ``--participant-label 01 02``
    becomes ``--participant-label 01 --participant-label 02`` (values run until the next
    token starting with ``-``).

    Parameters
    ----------
    argv : list of str
        Arguments without the program name.

    Returns
    -------
    list of str
    """
    out: list[str] = []
    current: str | None = None
    for token in argv:
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            name = name.replace("_", "-")
            token = name + eq + value
            current = name if (name in VARIADIC_OPTIONS and not eq) else None
            out.append(token)
            continue
        if token.startswith("-") and len(token) > 1:
            current = None
            out.append(token)
            continue
        if current is not None and out and out[-1] != current:
            out.append(current)
        out.append(token)
    return out


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bids_genbrain {__version__}")
        raise typer.Exit(0)


def _setup_console_logging(verbose: int) -> None:
    """Console shows warnings (-v: info, -vv: debug); the run's log file gets info and up."""
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING - 10 * min(verbose, 2))
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(lambda record: getattr(record, "console", True))
    root = logging.getLogger()
    logging.raiseExceptions = False  # a log that cannot be written (full disk) is no traceback
    root.addHandler(console)
    root.setLevel(min(logging.INFO, console.level))


def _plugin_args(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: --plugin-args file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: --plugin-args is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: --plugin-args must hold a JSON object")
    return data


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})

_IN = "Input selection"
_PERF = "Performance"
_PREP = "Preprocessing (participant level)"
_GROUP = "Group level (model, synthetic cohort, BWAS)"


@app.command(no_args_is_help=True)
def bids_genbrain(
    bids_dir: Annotated[Path, typer.Argument(help="Root of the BIDS dataset (read only).",
                                             show_default=False)],
    output_dir: Annotated[Path, typer.Argument(help="Where derivatives are written.",
                                               show_default=False)],
    analysis_level: Annotated[Level, typer.Argument(
        help="participant: preprocess each participant to MNI152NLin6Asym; group: fine-tune "
             "GenBrain, generate a synthetic cohort, BWAS maps.", show_default=False)],
    participant_label: Annotated[Optional[list[str]], typer.Option(
        "--participant-label", metavar="LABEL...", help="Participants to process (with or without 'sub-'); "
        "default all.", rich_help_panel=_IN)] = None,
    session_label: Annotated[Optional[list[str]], typer.Option(
        "--session-label", metavar="LABEL...", help="Sessions to process (with or without 'ses-'); default all.",
        rich_help_panel=_IN)] = None,
    bids_filter_file: Annotated[Optional[Path], typer.Option(
        "--bids-filter-file", help="JSON of pybids filters per image kind (t1w, t2w, flair), "
        "as fMRIPrep's.", rich_help_panel=_IN)] = None,
    skip_bids_validation: Annotated[bool, typer.Option(
        "--skip-bids-validation", help="Do not validate the input dataset.",
        rich_help_panel=_IN)] = False,
    derivatives: Annotated[Optional[list[Path]], typer.Option(
        "--derivatives", metavar="PATH...", help="Existing MNI-space derivatives (e.g. fMRIPrep's) to use instead "
        "of preprocessing.", rich_help_panel=_IN)] = None,
    work_dir: Annotated[Optional[Path], typer.Option(
        "-w", "--work-dir", help="Intermediate files; a rerun resumes from here. "
        "Default: OUTPUT_DIR/work.", rich_help_panel=_PERF)] = None,
    nprocs: Annotated[int, typer.Option("--nprocs", "--n-cpus", help="Processes in parallel "
                                        "(0: all CPUs).", rich_help_panel=_PERF)] = 0,
    omp_nthreads: Annotated[int, typer.Option("--omp-nthreads", help="Threads per process "
                                              "(0: min(nprocs, 8)).", rich_help_panel=_PERF)] = 0,
    mem_gb: Annotated[Optional[float], typer.Option("--mem-gb", help="Memory limit for the "
                                                    "workflow scheduler.", rich_help_panel=_PERF)] = None,
    plugin: Annotated[str, typer.Option("--plugin", help="nipype plugin: MultiProc, Linear, "
                                        "SLURM, SGE ...", rich_help_panel=_PERF)] = "MultiProc",
    plugin_args: Annotated[Optional[Path], typer.Option(
        "--plugin-args", help="JSON file of nipype plugin arguments (e.g. sbatch_args).",
        rich_help_panel=_PERF)] = None,
    device: Annotated[Device, typer.Option("--device", help="Where the model runs.",
                                           rich_help_panel=_PERF)] = Device.auto,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every stochastic step.")] = 42,
    sloppy: Annotated[bool, typer.Option("--sloppy", help="Fast, low-resolution registration "
                                         "(tests, demos); not for research.",
                                         rich_help_panel=_PREP)] = False,
    check_only: Annotated[bool, typer.Option(
        "--check-only", help="Only find and check each participant's images and write the "
        "reports (e.g. before a long cluster run); no preprocessing.",
        rich_help_panel=_PREP)] = False,
    resolution: Annotated[float, typer.Option("--resolution", help="MNI grid voxel size in mm "
                                              "(GenBrain: 2).", rich_help_panel=_PREP)] = 2.0,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="GenBrain checkpoint to fine-tune: a folder, or an http(s)/file URL of "
        "a folder or archive (fetched once into the cache), optionally pinned with "
        "'#sha256=<weights sha256>'; without it a model is trained from scratch on the site.",
        rich_help_panel=_GROUP)] = None,
    modality: Annotated[str, typer.Option("--modality", help="Map to model: GMmod (modulated "
                                          "GM, VBM), GM, T1w, T2w, FLAIR or a derivative's desc.",
                                          rich_help_panel=_GROUP)] = "GMmod",
    condition: Annotated[Optional[list[str]], typer.Option(
        "--condition", metavar="COLUMN...", help="participants.tsv columns the model is conditioned on "
        "(default: age sex).", rich_help_panel=_GROUP)] = None,
    contrast: Annotated[Optional[str], typer.Option(
        "--contrast", help="participants.tsv column tested in the BWAS (e.g. diagnosis).",
        rich_help_panel=_GROUP)] = None,
    confound: Annotated[Optional[list[str]], typer.Option(
        "--confound", metavar="COLUMN...", help="Extra confounds beside age, sex (and site when several).",
        rich_help_panel=_GROUP)] = None,
    n_synthetic: Annotated[int, typer.Option("--n-synthetic", help="Synthetic images to "
                                             "generate.", rich_help_panel=_GROUP)] = 1000,
    reference_map: Annotated[Optional[Path], typer.Option(
        "--reference-map", help="d or t map of a large study to compare the BWAS maps with.",
        rich_help_panel=_GROUP)] = None,
    synthetic_conditions: Annotated[Optional[Path], typer.Option(
        "--synthetic-conditions", help="TSV of conditions, one row per synthetic image, "
        "instead of the balanced default.", rich_help_panel=_GROUP)] = None,
    preset: Annotated[str, typer.Option("--preset", help="Model size when training from "
                                        "scratch (tiny, small, genbrain-b, genbrain-l).",
                                        rich_help_panel=_GROUP)] = "small",
    steps: Annotated[int, typer.Option("--steps", help="Fine-tuning steps (paper: 10000).",
                                       rich_help_panel=_GROUP)] = 10000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size "
                                            "(paper: 32).", rich_help_panel=_GROUP)] = 32,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help="AdamW learning rate [default: 1e-4 to fine-tune a --model (paper), 1e-3 "
        "from scratch]", show_default=False, rich_help_panel=_GROUP)] = None,
    sampling_steps: Annotated[int, typer.Option("--sampling-steps", help="DDIM steps.",
                                                rich_help_panel=_GROUP)] = 50,
    cfg_scale: Annotated[float, typer.Option("--cfg-scale", help="Classifier-free guidance "
                                             "scale.", rich_help_panel=_GROUP)] = 1.2,
    average: Annotated[int, typer.Option("--average", help="Samples averaged per synthetic "
                                         "image (paper: 5).", rich_help_panel=_GROUP)] = 1,
    privacy_threshold: Annotated[float, typer.Option(
        "--privacy-threshold", help="Pearson r above which a synthetic image counts as a copy "
        "of a training image and is excluded.", rich_help_panel=_GROUP)] = 0.95,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True,
                                         help="More log output (repeatable).")] = 0,
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """GenBrain BIDS-App: preprocess to MNI152NLin6Asym 2 mm, fine-tune the generative model on
    a site, generate balanced synthetic cohorts and brain-wide association maps.

    Exit codes: 0 success, 1 some participant failed (the others finished), 2 bad input.
    """
    _setup_console_logging(verbose)
    try:
        config = Config(
            bids_dir=bids_dir, output_dir=output_dir, analysis_level=analysis_level.value,
            participant_label=participant_label or [], session_label=session_label or [],
            bids_filter_file=bids_filter_file, skip_bids_validation=skip_bids_validation,
            work_dir=work_dir, nprocs=nprocs, omp_nthreads=omp_nthreads, mem_gb=mem_gb,
            seed=seed, device=device.value, derivatives=derivatives or [], model=model,
            sloppy=sloppy, check_only=check_only, resolution=resolution, plugin=plugin,
            plugin_args=_plugin_args(plugin_args), verbose=verbose, modality=modality,
            condition=condition or ["age", "sex"], contrast=contrast, confound=confound or [],
            n_synthetic=n_synthetic, reference_map=reference_map,
            synthetic_conditions=synthetic_conditions, preset=preset, steps=steps,
            batch_size=batch_size, lr=lr, sampling_steps=sampling_steps, cfg_scale=cfg_scale,
            average=average, privacy_threshold=privacy_threshold,
            command_line=list(sys.argv),
        ).validate()
        code = run(config)
    except InputError as exc:
        typer.echo(f"bids_genbrain: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("bids_genbrain: interrupted; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log, not the terminal
        LOGGER.debug("unexpected error", exc_info=True)
        full = disk_full(exc)
        if full is not None:
            typer.echo(f"bids_genbrain: error: {full}", err=True)
            raise typer.Exit(1) from None
        logs = Path(output_dir).resolve() / "logs"
        typer.echo(f"bids_genbrain: error: {type(exc).__name__}: {exc} (traceback in {logs})",
                   err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def run(config: Config) -> int:
    """Run the configured analysis level; return the exit code.

    Parameters
    ----------
    config : Config
        Validated configuration.

    Returns
    -------
    int
        0 on success, 1 when some participant failed.
    """
    from ..locking import exclusive_lock
    from ..runlog import run_log

    config.output_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if config.analysis_level == "group":  # one group level per OUTPUT_DIR at a time
            stack.enter_context(exclusive_lock(config.output_dir / "group" / ".lock",
                                               f"a group-level run on {config.output_dir}"))
        log = stack.enter_context(run_log(config.output_dir, config.analysis_level,
                                          config.to_dict(), config.seed))
        if config.analysis_level == "participant":
            from ..participant import run_participant_level

            results = run_participant_level(config, log)
            failed = [r for r in results if r.status != "ok"]
            typer.echo(f"participant level: {len(results) - len(failed)} of {len(results)} "
                       f"participant(s) finished; outputs in {config.output_dir}")
            if failed:
                typer.echo(f"{len(failed)} participant(s) failed:", err=True)
                for r in failed:
                    typer.echo(f"  sub-{r.subject}: {r.reason}", err=True)
                log.record["status"] = "finished with failures"
                return 1
            return 0
        from ..group import run_group_level

        run_group_level(config, log)
        return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of ``bids_genbrain``."""
    args = normalize_argv(list(sys.argv[1:] if argv is None else argv))
    app(args=args, prog_name="bids_genbrain")
