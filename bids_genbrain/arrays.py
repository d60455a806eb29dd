"""Streaming over image arrays ``(n_images, n_voxels)`` in blocks of rows, with bounded memory.

Cohort stores are row-major files (one image per row). Passing over them by rows reads each
file once, sequentially, which is the fastest a disk allows. Reading through a
:class:`numpy.memmap` would map every page it touches into the process (its resident set grows
to the file's size, tens of GB for UK Biobank-sized cohorts); the readers here read a
file-backed memmap with plain ``pread`` calls into a buffer of one block instead, so the memory
of a pass is one block, and the kernel's page cache (not the process) holds what was read.
In-memory arrays are sliced.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_BLOCK_MB = 64.0
"""Bytes of stored values read per block when no block size is given."""


def as_rows(images: ArrayLike, name: str = "images") -> np.ndarray:
    """Check a ``(n_images, n_voxels)`` numeric array without reading it.

    Parameters
    ----------
    images : array-like, shape (n_images, n_voxels)
    name : str
        For the error message.

    Returns
    -------
    ndarray or numpy.memmap
        ``images`` itself when it is an array (a memmap stays unread), else ``np.asarray``.
    """
    array = images if hasattr(images, "shape") and hasattr(images, "dtype") else \
        np.asarray(images)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (n_images, n_voxels), got {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array  # type: ignore[return-value]


def _file_backed(images: np.ndarray) -> bool:
    """A whole, C-ordered memmap of a file (not a view), which can be read with pread."""
    return (isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap)
            and images.flags.c_contiguous and images.filename is not None)


def block_rows(n_voxels: int, itemsize: int, block_mb: float = DEFAULT_BLOCK_MB) -> int:
    """Rows per block so that one block of stored values takes about ``block_mb``."""
    return max(1, int(block_mb * 2**20 // max(1, n_voxels * itemsize)))


def read_rows(images: np.ndarray, start: int, stop: int,
              out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``start:stop`` of ``images`` as an in-memory array (a file-backed memmap is read
    with ``pread``, never mapped).

    Parameters
    ----------
    images : ndarray or numpy.memmap, shape (n_images, n_voxels)
    start, stop : int
    out : ndarray, optional
        Buffer of at least ``stop - start`` rows and the array's dtype, reused across calls.

    Returns
    -------
    ndarray, shape (stop - start, n_voxels), dtype of ``images``
    """
    if not _file_backed(images):
        block = np.asarray(images[start:stop])
        if out is None:
            return block
        out[:stop - start] = block
        return out[:stop - start]
    fd = os.open(images.filename, os.O_RDONLY)
    try:
        return _pread_rows(fd, images, start, stop, out)
    finally:
        os.close(fd)


def _pread_rows(fd: int, images: np.memmap, start: int, stop: int,
                out: np.ndarray | None) -> np.ndarray:
    n = stop - start
    row_bytes = images.shape[1] * images.dtype.itemsize
    if out is None:
        out = np.empty((n, images.shape[1]), dtype=images.dtype)
    view = memoryview(out[:n].reshape(-1).view(np.uint8))
    offset = images.offset + start * row_bytes
    done = 0
    while done < n * row_bytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(f"{images.filename}: ends before row {stop} (truncated store)")
        done += got
    return out[:n]


def iter_row_blocks(
    images: np.ndarray,
    rows: ArrayLike | None = None,
    *,
    n_rows: int | None = None,
    block_mb: float = DEFAULT_BLOCK_MB,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions, block)``: every wanted row once, in blocks read in file order.

    Parameters
    ----------
    images : ndarray or numpy.memmap, shape (n_images, n_voxels)
    rows : array-like of int, optional
        Rows wanted, in any order, repeats allowed (a bootstrap draw); default all rows.
    n_rows : int, optional
        Rows per block (default from ``block_mb``).
    block_mb : float
        Size of a block of stored values when ``n_rows`` is None.

    Yields
    ------
    positions : ndarray of int, shape (k,)
        Where each row of ``block`` sits in ``rows`` (in ``range(n_images)`` without ``rows``).
        A row wanted twice is yielded twice (two positions).
    block : ndarray, shape (k, n_voxels), dtype of ``images``
        Valid until the next iteration (buffers are reused). A file-backed memmap is read
        one block ahead by a thread, so reading overlaps the caller's work on a block.
    """
    n_images, n_voxels = images.shape
    step = n_rows or block_rows(n_voxels, images.dtype.itemsize, block_mb)
    index = None if rows is None else np.asarray(rows, dtype=np.intp)
    if index is not None and index.size and (index.min() < 0 or index.max() >= n_images):
        raise ValueError(f"rows must index the {n_images} images")
    if not _file_backed(images):
        if index is None:
            for start in range(0, n_images, step):
                yield np.arange(start, min(start + step, n_images)), images[start:start + step]
            return
        order = np.argsort(index, kind="stable")
        for a in range(0, index.size, step):
            yield order[a:a + step], np.asarray(images[index[order[a:a + step]]])
        return
    if index is None:
        plan = [(np.arange(a, min(a + step, n_images)), None) for a in range(0, n_images, step)]
    else:
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        plan = [(order[a:a + step], wanted[a:a + step]) for a in range(0, wanted.size, step)]
    fd = os.open(images.filename, os.O_RDONLY)

    def read(job: tuple[np.ndarray, np.ndarray | None], buffer: np.ndarray) -> np.ndarray:
        positions, chunk = job
        if chunk is None:  # all rows, in order
            return _pread_rows(fd, images, int(positions[0]), int(positions[-1]) + 1, buffer)
        unique, inverse = np.unique(chunk, return_inverse=True)
        got = buffer[:unique.size]
        for run in np.split(np.arange(unique.size), np.flatnonzero(np.diff(unique) > 1) + 1):
            lo, hi = int(unique[run[0]]), int(unique[run[-1]]) + 1  # contiguous rows
            _pread_rows(fd, images, lo, hi, got[run[0]:run[-1] + 1])
        return got if unique.size == chunk.size else got[inverse]

    # double buffering: a thread reads the next block (pread releases the GIL) while the
    # caller works on this one, so disk and CPU overlap
    buffers = [np.empty((step, n_voxels), dtype=images.dtype) for _ in range(2)]
    try:
        with ThreadPoolExecutor(1) as reader:
            pending = reader.submit(read, plan[0], buffers[0]) if plan else None
            for k, job in enumerate(plan):
                block = pending.result()
                if k + 1 < len(plan):
                    pending = reader.submit(read, plan[k + 1], buffers[(k + 1) % 2])
                yield job[0], block
    finally:
        os.close(fd)
