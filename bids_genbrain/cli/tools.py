"""``genbrain``: the tools that are not BIDS-App levels (simulate, pretrain, sample, demo ...).

Each command lives in its own module under :mod:`bids_genbrain.cli` and is registered here,
so ``genbrain --help`` lists them all while importing only what the called command needs.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .. import __version__
from .common import GroupedCommand, GroupedGroup, run_typer

PROG = "genbrain"

app = typer.Typer(
    name=PROG,
    cls=GroupedGroup,
    help="GenBrain tools: simulate BIDS cohorts, pretrain and sample the model, evaluate "
         "synthetic cohorts, augment classifiers, run a demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit(0)


@app.callback()
def _tools(
    version: Annotated[Optional[bool], typer.Option(  # noqa: UP045 - typer needs Optional
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """GenBrain tools: simulate BIDS cohorts, pretrain and sample the model, evaluate synthetic
    cohorts, augment classifiers, run a demo."""


from .fetch_templates import fetch_templates  # noqa: E402

app.command("fetch-templates", cls=GroupedCommand)(fetch_templates)
from .pretrain import pretrain  # noqa: E402

app.command("pretrain", cls=GroupedCommand)(pretrain)
from .sample import sample  # noqa: E402

app.command("sample", cls=GroupedCommand)(sample)
from .finetune import finetune  # noqa: E402

app.command("finetune", cls=GroupedCommand)(finetune)
from .simulate import simulate  # noqa: E402

app.command("simulate", cls=GroupedCommand)(simulate)
from .demo import demo  # noqa: E402

app.command("demo", cls=GroupedCommand)(demo)
from .evaluate import evaluate  # noqa: E402

app.command("evaluate", cls=GroupedCommand)(evaluate)
from .augment import augment  # noqa: E402

app.command("augment", cls=GroupedCommand)(augment)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of ``genbrain``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "finetune":  # --source T1w T2w, as the BIDS-App's list options
        from .bids_app import normalize_argv
        from .finetune import VARIADIC

        args = [args[0], *normalize_argv(args[1:], VARIADIC)]
    run_typer(app, args, PROG)
