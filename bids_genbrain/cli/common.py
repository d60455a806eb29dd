"""What both entry points share: help grouped by panel, one-line usage errors.

typer vendors click (``typer._click``); its exceptions and parameter sources are imported from
there, in this module only.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.16 vendors click
    from typer._click.core import ParameterSource
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.core import ParameterSource
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError


def _format_grouped(command: Any, ctx: typer.Context, formatter: Any) -> None:
    """Arguments, then options in sections named by their ``rich_help_panel`` (argparse style)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        panel = ("Arguments" if param.param_type_name == "argument"
                 else getattr(param, "rich_help_panel", None) or "Options")
        sections.setdefault(panel, []).append(record)
    for title, records in sections.items():
        with formatter.section(title):
            formatter.write_dl(records)


class GroupedCommand(TyperCommand):
    """A typer command whose ``--help`` lists options under their panels."""

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        _format_grouped(self, ctx, formatter)


class GroupedGroup(TyperGroup):
    """A typer group whose ``--help`` lists options under their panels, then the commands."""

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        _format_grouped(self, ctx, formatter)
        self.format_commands(ctx, formatter)


def given_on_command_line(ctx: typer.Context, values: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``values`` that the user gave (not click's defaults)."""
    return {name: value for name, value in values.items()
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}


def run_typer(app: typer.Typer, args: Sequence[str], prog: str) -> None:
    """Run a typer app; a usage error (unknown option, bad value) is one line, exit 2.

    Click prints a usage block and a hint over several lines; a wrapper script or a cluster
    log is easier to read with one ``<prog>: error: ...`` line, as for every other bad input.
    """
    try:
        code = app(args=list(args), prog_name=prog, standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        code = 2
    except UsageError as exc:
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().split())
        typer.echo(f"{prog}: error: {message}{hint}", err=True)
        code = 2
    except ClickException as exc:
        typer.echo(f"{prog}: error: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo(f"{prog}: aborted", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
