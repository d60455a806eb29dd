"""The run log: ``OUTPUT_DIR/logs/`` holds what was run, with which versions, seeds and timings.

Each run writes ``logs/<level>-<run id>.log`` (every log record), ``<level>-<run id>.toml``
(its settings, reloadable with ``--config-file``) and, when it ends, ``<level>-<run id>.json``
(command line, configuration, package versions, seed, timings and the outcome of each
participant or step). Run ids (``<UTC time>_<8 hex>``) are unique, so parallel jobs into one
OUTPUT_DIR never write the same file.

Each participant of a participant-level run also gets ``sub-<label>/log/<run id>/`` (as
fMRIPrep): its log records (``run.log``), settings (``bids_genbrain.toml``), summary row
(``summary.tsv``), crash files, nipype's ``pypeline.log`` and methods (``CITATION.md``);
:func:`participant_log` opens it. Files that several jobs share are rebuilt from these under
:func:`output_lock` (:mod:`bids_genbrain.summaries`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import platform
import shlex
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
from .utils import atomic_write_text

LOGGER = logging.getLogger(__name__)

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
        """Time a named step into ``timings_s`` and log its start and end."""
        LOGGER.info("%s: started", name)
        t0 = time.monotonic()
        finished = False
        try:
            yield
            finished = True
        finally:
            seconds = round(time.monotonic() - t0, 3)
            self.record.setdefault("timings_s", {})[name] = seconds
            LOGGER.info("%s: %s after %.1f s", name, "finished" if finished else "stopped",
                        seconds)

    def outcome(self, name: str, status: str, detail: str = "") -> None:
        """Record the outcome of a participant or step (``ok``/``failed``/``skipped``)."""
        self.record.setdefault("outcomes", {})[name] = {"status": status, "detail": detail}


@contextlib.contextmanager
def output_lock(output_dir: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on OUTPUT_DIR (``.bids_genbrain.lock``) for a ``with`` block.

    Jobs that share an OUTPUT_DIR take it to rebuild shared files; ``flock`` is released when
    the process dies, so a killed job never leaves it held.
    """
    path = Path(output_dir) / ".bids_genbrain.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def participant_log_dir(output_dir: Path | str, subject: str, run_id: str) -> Path:
    """``OUTPUT_DIR/sub-<label>/log/<run id>``."""
    return Path(output_dir) / f"sub-{subject.removeprefix('sub-')}" / "log" / run_id


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _log_handler(path: Path, started: str) -> logging.FileHandler:
    """A handler appending records to ``path``, whose first record is ``started``.

    A new log appears (atomically) holding that record, so a run killed at any point leaves a
    log that says what ran, never an empty file under the log's name; an existing one (a
    run id reused) is appended to.
    """
    formatter = logging.Formatter(LOG_FORMAT)
    first = logging.makeLogRecord({"name": __name__, "levelname": "INFO",
                                   "levelno": logging.INFO, "msg": started})
    new = not path.exists()
    if new:
        atomic_write_text(path, formatter.format(first) + "\n")
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(formatter)
    if not new:
        handler.emit(first)
    return handler


@contextlib.contextmanager
def participant_log(output_dir: Path | str, subject: str, run_id: str,
                    toml: str | None = None) -> Iterator[Path]:
    """Send log records to ``sub-<label>/log/<run id>/run.log`` for a ``with`` block.

    Parameters
    ----------
    output_dir : path-like
    subject : str
        Label (with or without ``sub-``).
    run_id : str
    toml : str, optional
        The run's settings, written as ``bids_genbrain.toml``.

    Yields
    ------
    pathlib.Path
        The participant's log folder of this run.
    """
    folder = participant_log_dir(output_dir, subject, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    if toml is not None:
        atomic_write_text(folder / "bids_genbrain.toml", toml)
    handler = _log_handler(folder / "run.log", f"sub-{subject.removeprefix('sub-')}: run "
                           f"{run_id} started: {shlex.join(sys.argv)}")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield folder
    finally:
        root.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def run_log(output_dir: Path, level: str, config: dict[str, Any], seed: int, *,
            run_id: str | None = None, toml: str | None = None) -> Iterator[RunLog]:
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
    run_id : str, optional
        Names the files (``<level>-<run id>.*``); default a new one.
    toml : str, optional
        The run's settings (:meth:`bids_genbrain.config.Config.to_toml`), written first.

    Yields
    ------
    RunLog
    """
    logs = Path(output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    from .config import new_run_id

    stem = f"{level}-{run_id or new_run_id()}"
    if toml is not None:
        atomic_write_text(logs / f"{stem}.toml", toml)
    handler = _log_handler(logs / f"{stem}.log", f"run {stem} started: {shlex.join(sys.argv)}")
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
