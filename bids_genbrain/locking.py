"""Exclusive locks on output folders: one writer at a time for what must not be shared.

A lock is a file (e.g. ``OUTPUT_DIR/group/.lock``) held with ``flock`` for the whole run and
holding who took it (host, pid, start time, command line). The kernel releases the lock when
its process ends, however it ends, so a run killed by the scheduler (SIGKILL) never blocks the
rerun. A lock can only go stale where the filesystem keeps a lock of a dead client (an NFS
server that lost a crashed node); the refusal message says how to clear it by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from .errors import InputError


class LockError(InputError):
    """Another run holds the lock (the message names the lock, the holder and the fix)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']} since {info['started']} "
                f"({' '.join(info['command'])[:120]})")
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that has not written its details yet"


@contextlib.contextmanager
def exclusive_lock(path: Path | str, what: str) -> Iterator[Path]:
    """Hold ``path`` as an exclusive lock for the duration of a ``with`` block.

    Parameters
    ----------
    path : path-like
        The lock file (its folder is created).
    what : str
        What the lock protects, for the message (e.g. ``"the group level of /out"``).

    Yields
    ------
    pathlib.Path
        ``path``.

    Raises
    ------
    LockError
        Another live process holds the lock; the message names the holder and how to clear a
        stale lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockError(
                    f"{path}: {what} is already running ({_holder(path)}); wait for it to "
                    f"finish, or, if no such run is alive (its node crashed), delete {path} "
                    "and rerun") from None
            raise
        try:  # the file may have been removed (a release, a manual clear) while we waited
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": list(sys.argv)}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
