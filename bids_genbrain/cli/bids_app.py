"""``bids_genbrain BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS-App entry point.

Follows the BIDS-Apps specification: positional arguments first, then options. As in
fMRIPrep, every option also works with underscores (``--participant_label``), and list options
take several values after one flag (``--participant-label 01 02``).

The options are not declared here: they are the fields of :class:`bids_genbrain.config.Config`
made with :func:`bids_genbrain.config.option` (default, help, panel, spellings, accepted
values), turned into typer options by :func:`_option_parameters`. Only values given on the
command line reach the ``Config``; everything else takes the field's default.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import __version__
from ..config import PANELS, Config, Option, flag_of, read_config_file
from ..errors import InputError, disk_full
from .common import GroupedCommand, given_on_command_line, run_typer

LOGGER = logging.getLogger("bids_genbrain")

PROG = "bids_genbrain"


def _variadic_options() -> tuple[str, ...]:
    """Options that take several values after one flag (expanded for click)."""
    hints = Config.types()
    return tuple(flag_of(name) for name, _, _ in Config.options()
                 if typing.get_origin(hints[name]) is list)


def normalize_argv(argv: list[str], variadic: tuple[str, ...] | None = None) -> list[str]:
    """Rewrite BIDS-Apps style arguments into what click parses.

    ``--participant_label`` becomes ``--participant-label``; ``--participant-label 01 02``
    becomes ``--participant-label 01 --participant-label 02`` (values run until the next
    token starting with ``-``).

    Parameters
    ----------
    argv : list of str
        Arguments without the program name.
    variadic : tuple of str, optional
        Options that take several values (default: the BIDS-App's list options).

    Returns
    -------
    list of str
    """
    variadic = _variadic_options() if variadic is None else variadic
    out: list[str] = []
    current: str | None = None
    for token in argv:
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            name = name.replace("_", "-")
            token = name + eq + value
            current = name if (name in variadic and not eq) else None
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
        typer.echo(f"{PROG} {__version__}")
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


def _cli_type(annotation: Any) -> Any:
    """The typer type of a Config field: ``X | None`` and ``list[X]`` become ``Optional``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        return Optional[annotation]  # noqa: UP045 - typer needs typing.Optional here
    if type(None) in typing.get_args(annotation):
        return Optional[args[0]]  # noqa: UP045
    return annotation


def _show_default(spec: Option, default: Any) -> bool | str:
    if spec.default_text is not None:
        return spec.default_text
    if isinstance(default, list):
        return " ".join(map(str, default)) if default else False
    return default is not None and not isinstance(default, bool)


def _option_parameters() -> list[inspect.Parameter]:
    """One keyword parameter with a ``typer.Option`` per :class:`Config` option field."""
    hints = Config.types()
    params = []
    for name, spec, default in Config.options():
        flags = (flag_of(name), *spec.flags)
        help_text = spec.help
        if spec.choices and not spec.metavar:
            help_text += f" One of {', '.join(spec.choices)}."
        info = typer.Option(*flags, help=help_text, metavar=spec.metavar, count=spec.count,
                            show_default=_show_default(spec, default),
                            rich_help_panel=spec.panel)
        cli_default = None if isinstance(default, list) else default
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        default=cli_default,
                                        annotation=Annotated[_cli_type(hints[name]), info]))
    return params


def _positional_parameters() -> list[inspect.Parameter]:
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return [
        inspect.Parameter("ctx", keyword, annotation=typer.Context),
        inspect.Parameter("bids_dir", keyword, annotation=Annotated[Path, typer.Argument(
            metavar="BIDS_DIR", help="Root of the BIDS dataset (read only).",
            show_default=False)]),
        inspect.Parameter("output_dir", keyword, annotation=Annotated[Path, typer.Argument(
            metavar="OUTPUT_DIR", help="Where derivatives are written.", show_default=False)]),
        inspect.Parameter("analysis_level", keyword, annotation=Annotated[list[str],
            typer.Argument(metavar="{participant,group}...", show_default=False,
                           help="participant: preprocess each participant to "
                                "MNI152NLin6Asym; group: fine-tune GenBrain, generate a "
                                "synthetic cohort, BWAS maps; both: one after the other.")]),
    ]


def _extra_parameters() -> list[inspect.Parameter]:
    """Options that are not settings of the run."""
    return [inspect.Parameter(
        "version", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[Optional[bool], typer.Option(  # noqa: UP045
            "--version", callback=_version, is_eager=True, rich_help_panel=PANELS[-1],
            help="Print the version and exit."),
        ])]


def bids_genbrain(ctx: typer.Context, bids_dir: Path, output_dir: Path,
                  analysis_level: list[str], **values: Any) -> None:
    """GenBrain BIDS-App: preprocess to MNI152NLin6Asym 2 mm, fine-tune the generative model on
    a site, generate balanced synthetic cohorts and brain-wide association maps.

    Exit codes: 0 success, 1 some participant failed (the others finished), 2 bad input.
    """
    values.pop("version", None)
    given = given_on_command_line(ctx, values)
    try:
        settings = {}
        if given.get("config_file") is not None:
            settings = read_config_file(given["config_file"])
            for name in ("bids_dir", "output_dir", "analysis_level"):
                settings.pop(name, None)  # the command line's positional arguments win
        settings.update(given)
        _setup_console_logging(settings.get("verbose", 0))
        config = Config(bids_dir=bids_dir, output_dir=output_dir,
                        analysis_level=analysis_level, command_line=list(sys.argv),
                        **settings).validate()
        code = run(config)
    except InputError as exc:
        typer.echo(f"{PROG}: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo(f"{PROG}: interrupted; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log, not the terminal
        LOGGER.debug("unexpected error", exc_info=True)
        full = disk_full(exc)
        if full is not None:
            typer.echo(f"{PROG}: error: {full}", err=True)
            raise typer.Exit(1) from None
        logs = Path(output_dir).resolve() / "logs"
        typer.echo(f"{PROG}: error: {type(exc).__name__}: {exc} (traceback in {logs})",
                   err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


bids_genbrain.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    _positional_parameters() + _option_parameters() + _extra_parameters())

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})
app.command(cls=GroupedCommand, no_args_is_help=True)(bids_genbrain)


def run(config: Config) -> int:
    """Run the configured analysis level(s); return the exit code.

    Parameters
    ----------
    config : Config
        Validated configuration.

    Returns
    -------
    int
        0 on success (participants skipped for having no anatomical image do not count),
        1 when some participant failed, 2 when every failure was bad input of that
        participant (e.g. no source image for ``--impute``).
    """
    from ..locking import exclusive_lock
    from ..runlog import run_log

    config.output_dir.mkdir(parents=True, exist_ok=True)
    if config.boilerplate_only:
        for level in config.analysis_level:
            typer.echo(f"methods boilerplate of the {level} level: {_boilerplate(config, level)}")
        return 0
    code = 0
    for level in config.analysis_level:
        if code and config.stop_on_first_crash:
            typer.echo(f"--stop-on-first-crash: {level} level not run", err=True)
            break
        with contextlib.ExitStack() as stack:
            if level == "group":  # one group level per OUTPUT_DIR, and per work dir, at a time
                stack.enter_context(exclusive_lock(config.output_dir / "group" / ".lock",
                                                   f"a group-level run on {config.output_dir}"))
                stack.enter_context(exclusive_lock(
                    config.work_dir / "group" / ".lock",
                    f"a group-level run using the work dir {config.work_dir}"))
            log = stack.enter_context(run_log(config.output_dir, level, config.to_dict(),
                                              config.seed, run_id=config.run_id,
                                              toml=config.to_toml()))
            if level == "participant":
                code = max(code, _participant_level(config, log))
            else:
                from ..summaries import rebuild_shared_files

                summary = rebuild_shared_files(config.output_dir)  # from every job's records
                from ..group import run_group_level

                result = run_group_level(config, log)
                if config.reports_only:
                    typer.echo(f"group level --reports-only: merged summary of {len(summary)} "
                               f"participant(s) and {result.report} rebuilt from the trained "
                               "model and the synthetic cohort")
                else:
                    typer.echo(result.summary())
    return code


def _boilerplate(config: Config, level: str) -> Path:
    """Write one level's methods text (``--boilerplate-only``); run nothing."""
    if level == "participant":
        from ..participant import write_boilerplate

        return write_boilerplate(config)
    from ..reports.group import group_methods
    from ..summaries import write_citation

    return write_citation(config.output_dir, [group_methods(config)], level="group")


def _participant_level(config: Config, log) -> int:
    from ..participant import run_participant_level

    results = run_participant_level(config, log)
    failed = [r for r in results if r.status == "failed"]
    if config.reports_only:
        typer.echo(f"participant level --reports-only: reports of {len(results)} "
                   f"participant(s) rebuilt ({len(failed)} failed in their last run); merged "
                   f"summaries in {config.output_dir}")
        return 0
    done = [r for r in results if r.status != "skipped"]
    skipped = len(results) - len(done)
    typer.echo(f"participant level: {len(done) - len(failed)} of {len(done)} participant(s) "
               "finished" + (f", {skipped} skipped (no anatomical image)" if skipped else "")
               + f"; outputs in {config.output_dir}")
    if not failed:
        return 0
    typer.echo(f"{len(failed)} participant(s) failed:", err=True)
    for r in failed:
        typer.echo(f"  sub-{r.subject}: {r.reason}", err=True)
    log.record["status"] = "finished with failures"
    # 2 when every failure is bad input of that participant (a source --model needs is missing)
    return 2 if all(r.input_error for r in failed) else 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of ``bids_genbrain``."""
    args = normalize_argv(list(sys.argv[1:] if argv is None else argv))
    run_typer(app, args, PROG)


__all__ = ["app", "main", "normalize_argv", "run"]
