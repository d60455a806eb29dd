"""Memorization check: is a synthetic image a copy of a training image?

Every synthetic image is correlated (Pearson r over the brain voxels) with every training
image of the same modality; a synthetic image whose largest r exceeds a threshold (0.95 by
default) is flagged as a likely copy, to be excluded from the synthetic cohort and reported.

Both sets are ``(n_images, n_voxels)`` arrays, typically :class:`numpy.memmap` stores that do
not fit in memory. The correlations are computed in blocks of rows of both sets and chunks
of voxels: one streaming pass gives each image's mean and centred norm (Chan's pairwise
update, numerically stable), a second pass accumulates the centred cross products, so memory
is bounded by the block sizes, never by the number of images or voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from ..stats.glm import DEFAULT_MEMORY_MB

DEFAULT_THRESHOLD = 0.95
"""Pearson r above which a synthetic image is flagged as a copy."""


def _as_images(images: ArrayLike, name: str) -> np.ndarray:
    array = images if hasattr(images, "shape") and hasattr(images, "dtype") else \
        np.asarray(images)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (n_images, n_voxels), got {array.shape}")
    return array  # type: ignore[return-value]


def _voxel_chunks(n_voxels: int, voxels: ArrayLike | None,
                  chunk_size: int) -> list[slice | np.ndarray]:
    if voxels is None:
        return [slice(a, min(a + chunk_size, n_voxels)) for a in range(0, n_voxels, chunk_size)]
    keep = np.asarray(voxels, dtype=bool)
    if keep.shape != (n_voxels,):
        raise ValueError(f"voxels must be a boolean vector of {n_voxels}, got {keep.shape}")
    index = np.flatnonzero(keep)
    if index.size < 2:
        raise ValueError("fewer than 2 voxels selected")
    return [index[a:a + chunk_size] for a in range(0, index.size, chunk_size)]


def _read(images: np.ndarray, rows: slice, chunk: slice | np.ndarray) -> np.ndarray:
    block = np.asarray(images[rows][:, chunk], dtype=np.float64)
    if not np.isfinite(block).all():
        raise ValueError("images contain NaN or inf; fill them before the memorization check")
    return block


def image_moments(
    images: ArrayLike,
    *,
    voxels: ArrayLike | None = None,
    row_block: int = 1024,
    chunk_size: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and centred norm of every image, streaming over row blocks and voxel chunks.

    Parameters
    ----------
    images : array-like, shape (n_images, n_voxels)
    voxels : array-like of bool, shape (n_voxels,), optional
        Voxels used (default: all).
    row_block, chunk_size : int
        Rows and voxels read at a time.

    Returns
    -------
    mean : ndarray, shape (n_images,)
    norm : ndarray, shape (n_images,)
        ``sqrt(sum_v (x_v - mean)^2)``.
    """
    data = _as_images(images, "images")
    chunks = _voxel_chunks(data.shape[1], voxels, chunk_size)
    mean = np.zeros(data.shape[0])
    m2 = np.zeros(data.shape[0])
    for a in range(0, data.shape[0], row_block):
        rows = slice(a, min(a + row_block, data.shape[0]))
        count = 0
        for chunk in chunks:
            block = _read(data, rows, chunk)
            n_c = block.shape[1]
            mean_c = block.mean(axis=1)
            m2_c = ((block - mean_c[:, None]) ** 2).sum(axis=1)
            delta = mean_c - mean[rows]
            total = count + n_c
            mean[rows] += delta * n_c / total
            m2[rows] += m2_c + delta**2 * count * n_c / total
            count = total
    return mean, np.sqrt(m2)


def max_correlation(
    synthetic: ArrayLike,
    training: ArrayLike,
    *,
    voxels: ArrayLike | None = None,
    row_block: int = 1024,
    chunk_size: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Largest Pearson r of every synthetic image with any training image.

    Parameters
    ----------
    synthetic : array-like, shape (n_synthetic, n_voxels)
    training : array-like, shape (n_training, n_voxels)
    voxels : array-like of bool, shape (n_voxels,), optional
        Voxels the correlation is computed over (default: all columns, i.e. the brain mask
        the arrays were built with).
    row_block : int
        Images of each set held at a time.
    chunk_size : int, optional
        Voxels read at a time; default from ``memory_mb``.
    memory_mb : float
        Budget for the two blocks of ``row_block x chunk_size`` float64 values.
    progress : bool
        Show a progress bar.

    Returns
    -------
    max_r : ndarray, shape (n_synthetic,)
        NaN for a constant synthetic image (or when every training image is constant).
    nearest : ndarray of int, shape (n_synthetic,)
        Row of the most correlated training image (-1 where ``max_r`` is NaN).
    """
    syn = _as_images(synthetic, "synthetic")
    train = _as_images(training, "training")
    if syn.shape[1] != train.shape[1]:
        raise ValueError(f"synthetic images have {syn.shape[1]} voxels, training images "
                         f"{train.shape[1]}")
    if row_block < 1:
        raise ValueError(f"row_block must be >= 1, got {row_block}")
    if chunk_size is None:
        chunk_size = max(1, int(memory_mb * 2**20 // (8 * 2 * row_block)))
    chunks = _voxel_chunks(syn.shape[1], voxels, chunk_size)
    mu_s, norm_s = image_moments(syn, voxels=voxels, row_block=row_block, chunk_size=chunk_size)
    mu_t, norm_t = image_moments(train, voxels=voxels, row_block=row_block,
                                 chunk_size=chunk_size)
    n_syn, n_train = syn.shape[0], train.shape[0]
    max_r = np.full(n_syn, np.nan)
    nearest = np.full(n_syn, -1, dtype=np.intp)
    syn_blocks = [slice(a, min(a + row_block, n_syn)) for a in range(0, n_syn, row_block)]
    train_blocks = [slice(a, min(a + row_block, n_train)) for a in range(0, n_train, row_block)]
    bar = tqdm(total=len(syn_blocks) * len(chunks), desc="memorization", unit="chunk",
               disable=not progress, leave=False)
    for rs in syn_blocks:
        cross = np.zeros((rs.stop - rs.start, n_train))
        for chunk in chunks:
            s_block = _read(syn, rs, chunk) - mu_s[rs, None]
            for rt in train_blocks:
                cross[:, rt] += s_block @ (_read(train, rt, chunk) - mu_t[rt, None]).T
            bar.update()
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cross / np.outer(norm_s[rs], norm_t)
        r[~np.isfinite(r)] = -np.inf
        best = r.argmax(axis=1)
        value = r[np.arange(r.shape[0]), best]
        found = np.isfinite(value)
        max_r[rs] = np.where(found, value, np.nan)
        nearest[rs] = np.where(found, best, -1)
    bar.close()
    return max_r, nearest


def memorization_table(
    synthetic: ArrayLike,
    training: ArrayLike,
    *,
    synthetic_ids: Sequence[str] | None = None,
    training_ids: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    voxels: ArrayLike | None = None,
    row_block: int = 1024,
    chunk_size: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = True,
) -> pd.DataFrame:
    """Flag synthetic images that copy a training image.

    Parameters
    ----------
    synthetic : array-like, shape (n_synthetic, n_voxels)
    training : array-like, shape (n_training, n_voxels)
    synthetic_ids, training_ids : sequence of str, optional
        Labels of the rows (default: row numbers as strings).
    threshold : float
        A synthetic image whose largest r is above this is flagged.
    voxels, row_block, chunk_size, memory_mb, progress
        See :func:`max_correlation`.

    Returns
    -------
    pandas.DataFrame, shape (n_synthetic, 4)
        Columns ``synthetic_id``, ``nearest_training_id`` (missing when undefined), ``max_r``,
        ``flagged``; rows in the order of ``synthetic``.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a correlation in [-1, 1], got {threshold}")
    n_syn, n_train = len(synthetic), len(training)
    synthetic_ids = [str(i) for i in range(n_syn)] if synthetic_ids is None \
        else [str(i) for i in synthetic_ids]
    training_ids = [str(i) for i in range(n_train)] if training_ids is None \
        else [str(i) for i in training_ids]
    if len(synthetic_ids) != n_syn or len(training_ids) != n_train:
        raise ValueError(f"got {len(synthetic_ids)} synthetic and {len(training_ids)} training "
                         f"ids for {n_syn} and {n_train} images")
    max_r, nearest = max_correlation(synthetic, training, voxels=voxels, row_block=row_block,
                                     chunk_size=chunk_size, memory_mb=memory_mb,
                                     progress=progress)
    return pd.DataFrame({
        "synthetic_id": synthetic_ids,
        "nearest_training_id": [training_ids[i] if i >= 0 else None for i in nearest],
        "max_r": max_r,
        "flagged": np.nan_to_num(max_r, nan=-np.inf) > threshold,
    })
