"""``genbrain``: the tools that are not BIDS-App levels (simulate, pretrain, sample, demo ...).

Each command lives in its own module under :mod:`bids_genbrain.cli` and is registered here,
so ``genbrain --help`` lists them all while importing only what the called command needs.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="genbrain",
    help="GenBrain tools: simulate BIDS cohorts, pretrain and sample the model, run a demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)



@app.callback()
def _tools() -> None:
    """GenBrain tools: simulate BIDS cohorts, pretrain and sample the model, run a demo."""


from .fetch_templates import fetch_templates  # noqa: E402

app.command("fetch-templates")(fetch_templates)
from .pretrain import pretrain  # noqa: E402

app.command("pretrain")(pretrain)
from .sample import sample  # noqa: E402

app.command("sample")(sample)
from .simulate import simulate  # noqa: E402

app.command("simulate")(simulate)
from .demo import demo  # noqa: E402

app.command("demo")(demo)


def main() -> None:
    """Console-script entry point of ``genbrain``."""
    app()
