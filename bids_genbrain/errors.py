"""Errors that reach the user as one line (exit code 2), never as a traceback."""

from __future__ import annotations

import errno


class InputError(Exception):
    """Bad input (dataset, option, file): the message names the file and the fix."""


_FULL_TEXT = ("No space left on device", "StorageFull", "Disk quota exceeded", "os error 28")


def disk_full(exc: BaseException) -> str | None:
    """A one-line message when ``exc`` (or an exception it chains) is a full disk, else None.

    Libraries report a full disk differently: ``OSError`` with ``ENOSPC``/``EDQUOT``, or their
    own errors wrapping it (safetensors' ``IoError(... StorageFull)``, nipype's node crashes).

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    str or None
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        is_os = isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT)
        if is_os or any(text in str(current) for text in _FULL_TEXT):
            where = getattr(current, "filename", None)
            return (f"no space left on the device{f' writing {where}' if where else ''}; "
                    "free space (or point OUTPUT_DIR / --work-dir elsewhere) and rerun the "
                    "same command: finished outputs are kept and the run resumes")
        current = current.__cause__ or current.__context__
    return None
