"""Small shared helpers: atomic writes, the cache folder, seeding."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir() -> Path:
    """The project's cache folder (``$GENBRAIN_CACHE_DIR`` or ``~/.cache/bids_genbrain``)."""
    root = os.environ.get("GENBRAIN_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "bids_genbrain"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only on success.

    The temporary name keeps the target's full suffix (``.nii.gz``, ``.json``) so writers
    that infer the format from the extension work. A reader never sees a partial file.

    Parameters
    ----------
    target : path-like
        Final location. Its folder is created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}",
                               dir=target.parent)
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


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (when imported) torch; return a NumPy generator for ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    return np.random.default_rng(seed)
