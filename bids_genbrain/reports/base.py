"""Self-contained HTML reports: sections of text, tables and figures in one file.

Participant and group reports are both built from :class:`Section` objects and rendered by
:func:`render_report`; figures are embedded (SVG inline, PNG as base64) so a report is a single
file that can be mailed or opened from a cluster's scratch space.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from .. import __version__
from ..utils import atomic_write_text


@dataclass
class Section:
    """One titled part of a report.

    Attributes
    ----------
    title : str
    text : str
        Plain text paragraphs (escaped on rendering).
    tables : list of pandas.DataFrame
    figures : list of path-like
        SVG or PNG files to embed.
    html : str
        Trusted pre-rendered HTML (e.g. a niworkflows reportlet).
    status : {"ok", "warning", "error"}
    """

    title: str
    text: str = ""
    tables: list[pd.DataFrame] = field(default_factory=list)
    figures: list[Path | str] = field(default_factory=list)
    html: str = ""
    status: str = "ok"


def embed_figure(path: Path | str) -> str:
    """HTML for one figure file: inline SVG, or a base64 PNG ``<img>``."""
    path = Path(path)
    if path.suffix == ".svg":
        return path.read_text(encoding="utf-8")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    mime = "image/png" if path.suffix == ".png" else "image/jpeg"
    return f'<img src="data:{mime};base64,{data}" alt="{html.escape(path.stem)}">'


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, border=0, classes="table", na_rep="n/a",
                         float_format=lambda v: f"{v:.4g}")


def render_report(
    title: str,
    sections: Sequence[Section],
    out_path: Path | str,
    *,
    methods: str = "",
) -> Path:
    """Render sections into one HTML file, written atomically.

    Parameters
    ----------
    title : str
        Page title (e.g. ``sub-01``).
    sections : sequence of Section
    out_path : path-like
    methods : str
        Citable methods boilerplate, shown last.

    Returns
    -------
    pathlib.Path
    """
    env = Environment(loader=PackageLoader("bids_genbrain", "reports"),
                      autoescape=select_autoescape(["html"]))
    page = env.get_template("report.html").render(
        title=title,
        version=__version__,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        sections=[
            {
                "title": s.title,
                "text": s.text,
                "status": s.status,
                "tables": [_table_html(t) for t in s.tables],
                "figures": [embed_figure(f) for f in s.figures],
                "html": s.html,
            }
            for s in sections
        ],
        methods=methods,
    )
    return atomic_write_text(out_path, page)
