"""``genbrain fetch-templates``: fill the TemplateFlow cache once, so later runs work offline."""

from __future__ import annotations

import typer

from ..templates import TEMPLATE, TemplateError, prefetch


def fetch_templates() -> None:
    """Download MNI152NLin6Asym (1 and 2 mm: T1w, brain mask, GM/WM/CSF priors) from TemplateFlow.

    Run once with network (e.g. on a cluster's login node, with TEMPLATEFLOW_HOME on shared
    storage); compute nodes then find the files without network.
    """
    try:
        paths = prefetch()
    except TemplateError as exc:
        typer.echo(f"genbrain: error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(paths)} {TEMPLATE} files ready in {paths[0].parent}")
