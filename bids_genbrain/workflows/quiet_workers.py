"""nipype's terminal output at WARNING, in this process and in MultiProc's workers.

Node-by-node INFO lines drown the participant progress bar; every record still goes to
``OUTPUT_DIR/logs/pypeline.log`` through nipype's file handler. MultiProc's workers come from
a forkserver, which configures nipype logging afresh, so the runner asks the forkserver to
import this module before it forks (:func:`multiprocessing.set_forkserver_preload`).
"""

from __future__ import annotations

import logging


def quiet_nipype_console(level: int = logging.WARNING) -> None:
    """Raise the level of nipype's terminal handlers (not of its file handler)."""
    from nipype import logging as _nipype_logging  # noqa: F401 - creates the handlers

    for name in ("nipype", "nipype.workflow", "nipype.interface", "nipype.utils"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(level)


quiet_nipype_console()
