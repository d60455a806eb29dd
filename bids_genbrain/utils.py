"""Small shared helpers: atomic writes (files and folders), the cache folder, seeding."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (what a scheduler's cpuset or cgroup
    allots a job, e.g. SLURM's ``--cpus-per-task``), not the whole node's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1


def default_threads(nprocs: int) -> int:
    """Threads per process when ``--omp-nthreads`` is 0: ``OMP_NUM_THREADS`` when the
    environment sets it (a scheduler's or the user's thread budget, which torch honours too),
    else ``min(nprocs, 8)``; never more than ``nprocs``."""
    try:
        wanted = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        wanted = 0
    return min(nprocs, wanted if wanted > 0 else 8)


def cache_dir() -> Path:
    """The project's cache folder (``$GENBRAIN_CACHE_DIR`` or ``~/.cache/bids_genbrain``)."""
    root = os.environ.get("GENBRAIN_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "bids_genbrain"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _owner_tag() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporary folders beside ``target`` left by killed processes of this host."""
    host = socket.gethostname().split(".")[0]
    for path in target.parent.glob(f".{target.name}.{host}-*"):
        pid = path.name[len(f".{target.name}.{host}-"):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


def _temporary_prefix(target: Path | str) -> tuple[Path, str]:
    """``target`` (its folder created, stale temporaries removed) and its temporaries' prefix."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    return target, f".{target.name}.{_owner_tag()}."


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only on success.

    The temporary name keeps the target's full suffix (``.nii.gz``, ``.json``) so writers
    that infer the format from the extension work. A reader never sees a partial file. The
    name also carries the writer's host and pid: temporaries left by killed writers (SIGKILL
    runs no cleanup) are removed by the next write of the same target.

    Parameters
    ----------
    target : path-like
        Final location. Its folder is created.
    """
    target, prefix = _temporary_prefix(target)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".part{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared files
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: Path | str, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` whole.

    A reader never sees a partly written folder under the final name: the temporary folder
    is renamed into place (the previous ``target``, if any, is first moved aside, then
    removed). Temporary folders of killed processes on this host are removed on the next call.

    Parameters
    ----------
    target : path-like
        Final folder. Its parent is created.
    """
    target, prefix = _temporary_prefix(target)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".part", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; outputs are shared folders
        if target.exists():
            old = target.with_name(f".{target.name}.{_owner_tag()}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def allocate(path: Path | str, nbytes: int) -> None:
    """Create ``path`` with ``nbytes`` reserved on disk, so a full disk fails now, not later.

    Raises
    ------
    OSError
        ``ENOSPC`` when the space is not there.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:  # filesystems without fallocate: a sparse file
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            os.ftruncate(fd, nbytes)
    finally:
        os.close(fd)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (when imported) torch; return a NumPy generator for ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    return np.random.default_rng(seed)
