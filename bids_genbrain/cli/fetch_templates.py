"""``genbrain fetch-templates``: put the templates on disk once, so later runs work offline."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..spaces import SpaceError, prefetch_space
from ..templates import TEMPLATE, TemplateError, prefetch

DEFAULT_SPACES = ("MNI152NLin2009cAsym",)
"""Other spaces fetched by default: fMRIPrep's default output space."""


def fetch_templates(
    resolution: Annotated[Optional[list[float]], typer.Option(
        "--resolution", help="Grid(s) in mm to prepare (repeatable) [default: 1 and 2].")] = None,
    fallback: Annotated[bool, typer.Option(
        "--fallback", help="Build the offline fallback (nilearn's ICBM152 on FSL's grid) instead "
        "of downloading from TemplateFlow: for sites where TemplateFlow is unreachable.")] = False,
    space: Annotated[Optional[list[str]], typer.Option(
        "--space", help="Other template whose maps --derivatives will bring onto "
        f"{TEMPLATE} (repeatable) [default: {', '.join(DEFAULT_SPACES)}]: fetches "
        "TemplateFlow's template-to-template transform, or both T1w templates to register. "
        "Not with --fallback.")] = None,
) -> None:
    """Download MNI152NLin6Asym (T1w, brain mask, GM/WM/CSF priors) from TemplateFlow.

    Run once with network (e.g. on a cluster's login node, with TEMPLATEFLOW_HOME on shared
    storage); compute nodes then find the files without network. Grids other than 1 and 2 mm
    are resampled into GENBRAIN_CACHE_DIR. Also fetches what brings other templates' maps
    (fMRIPrep's MNI152NLin2009cAsym by default) onto MNI152NLin6Asym. With --fallback nothing
    is downloaded.
    """
    resolutions = tuple(resolution) if resolution else (1.0, 2.0)
    if any(r <= 0 for r in resolutions):
        typer.echo("genbrain: error: --resolution must be positive (mm)", err=True)
        raise typer.Exit(2)
    try:
        paths = prefetch(resolutions, source="fallback" if fallback else "templateflow")
        if not fallback:
            for other in space or DEFAULT_SPACES:
                paths += prefetch_space(other)
    except (TemplateError, SpaceError) as exc:
        typer.echo(f"genbrain: error: {exc}", err=True)
        raise typer.Exit(2) from None
    folders = sorted({str(p.parent) for p in paths})
    typer.echo(f"{len(paths)} template files ready in {', '.join(folders)}")
