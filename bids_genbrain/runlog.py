"""The run log: ``OUTPUT_DIR/logs/`` holds what was run, with which versions, seeds and timings.

Each run writes ``logs/<level>-<timestamp>.log`` (every log record) and, when it ends,
``logs/<level>-<timestamp>.json`` (command line, configuration, package versions, seed, timings
and the outcome of each participant or step).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .derivatives import container_info, write_json
from .errors import InputError

KEY_PACKAGES = (
    "bids_genbrain", "numpy", "scipy", "nibabel", "pandas", "pybids", "nipype", "niworkflows",
    "templateflow", "nilearn", "antspyx", "torch", "monai", "lightgbm",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour shapes the outputs."""
    found = {}
    for name in KEY_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


@dataclass
class RunLog:
    """Collects timings and outcomes during a run; written as JSON at the end."""

    json_path: Path
    record: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a named step into ``timings_s``."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.record.setdefault("timings_s", {})[name] = round(time.monotonic() - t0, 3)

    def outcome(self, name: str, status: str, detail: str = "") -> None:
        """Record the outcome of a participant or step (``ok``/``failed``/``skipped``)."""
        self.record.setdefault("outcomes", {})[name] = {"status": status, "detail": detail}


@contextlib.contextmanager
def run_log(output_dir: Path, level: str, config: dict[str, Any], seed: int) -> Iterator[RunLog]:
    """Open the run's log files for the duration of a ``with`` block.

    Parameters
    ----------
    output_dir : pathlib.Path
        The derivatives root; ``logs/`` is created inside.
    level : str
        ``participant``, ``group`` or a tool name, used in file names.
    config : dict
        The validated configuration, recorded whole.
    seed : int
        The run's seed, recorded at the top level.

    Yields
    ------
    RunLog
    """
    logs = Path(output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    stem = f"{level}-{stamp}"
    handler = logging.FileHandler(logs / f"{stem}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    log = RunLog(json_path=logs / f"{stem}.json")
    log.record.update(
        command_line=list(sys.argv),
        level=level,
        seed=seed,
        started=datetime.now(timezone.utc).isoformat(),
        python=sys.version.split()[0],
        platform=platform.platform(),
        container=container_info(),
        versions=package_versions(),
        config=config,
    )
    try:
        yield log
        log.record.setdefault("status", "finished")
    except BaseException as exc:
        log.record["status"] = f"aborted: {type(exc).__name__}: {exc}"
        if not isinstance(exc, InputError):
            log.record["traceback"] = traceback.format_exc()
            # the file log gets the traceback; the terminal shows the CLI's one-line error
            logging.getLogger("bids_genbrain").error("run aborted", exc_info=True,
                                                     extra={"console": False})
        raise
    finally:
        log.record["finished"] = datetime.now(timezone.utc).isoformat()
        log.record["elapsed_s"] = round(time.monotonic() - log._t0, 3)
        write_json(log.json_path, log.record)
        root.removeHandler(handler)
        handler.close()
