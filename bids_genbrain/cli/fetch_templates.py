"""``genbrain fetch-templates``: put the templates on disk once, so later runs work offline."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..templates import TEMPLATE, TemplateError, prefetch


def fetch_templates(
    resolution: Annotated[Optional[list[float]], typer.Option(
        "--resolution", help="Grid(s) in mm to prepare (repeatable) [default: 1 and 2].")] = None,
    fallback: Annotated[bool, typer.Option(
        "--fallback", help="Build the offline fallback (nilearn's ICBM152 on FSL's grid) instead "
        "of downloading from TemplateFlow: for sites where TemplateFlow is unreachable.")] = False,
) -> None:
    """Download MNI152NLin6Asym (T1w, brain mask, GM/WM/CSF priors) from TemplateFlow.

    Run once with network (e.g. on a cluster's login node, with TEMPLATEFLOW_HOME on shared
    storage); compute nodes then find the files without network. Grids other than 1 and 2 mm
    are resampled into GENBRAIN_CACHE_DIR. With --fallback nothing is downloaded.
    """
    resolutions = tuple(resolution) if resolution else (1.0, 2.0)
    if any(r <= 0 for r in resolutions):
        typer.echo("genbrain: error: --resolution must be positive (mm)", err=True)
        raise typer.Exit(2)
    try:
        paths = prefetch(resolutions, source="fallback" if fallback else "templateflow")
    except TemplateError as exc:
        typer.echo(f"genbrain: error: {exc}", err=True)
        raise typer.Exit(2) from None
    folders = sorted({str(p.parent) for p in paths})
    typer.echo(f"{len(paths)} {TEMPLATE} files ready in {', '.join(folders)}")
