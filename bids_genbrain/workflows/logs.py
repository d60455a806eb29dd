"""Where nipype logs: every record to the participant's log folder, warnings on the terminal.

The runner points nipype at ``sub-<label>/log/<run id>/pypeline.log`` before each participant.

Node-by-node INFO lines drown the participant progress bar, so nipype's terminal handlers are
raised to WARNING, in this process and in MultiProc's workers. The workers come from a
forkserver, which configures nipype logging afresh, so the runner asks the forkserver to
import this module before it forks (:func:`multiprocessing.set_forkserver_preload`); the
import quiets the terminal.
"""

from __future__ import annotations

import logging
from pathlib import Path


def quiet_nipype_console(level: int = logging.WARNING) -> None:
    """Raise the level of nipype's terminal handlers (not of its file handler)."""
    from nipype import logging as _nipype_logging  # noqa: F401 - creates the handlers

    for name in ("nipype", "nipype.workflow", "nipype.interface", "nipype.utils"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(level)


def log_nipype_to(log_dir: Path | str) -> None:
    """Send every nipype record to ``log_dir/pypeline.log``, only warnings to the terminal."""
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    nipype_config.update_config({"logging": {"log_directory": str(log_dir),
                                             "log_to_file": True}})
    nipype_logging.update_logging(nipype_config)
    quiet_nipype_console()


quiet_nipype_console()
