"""Memorization check: is a synthetic image a copy of a training image?

Three measures, each of a synthetic image against every training image of the modality:

``max_r`` (the GenBrain paper's check, :func:`memorization_table`)
    Largest Pearson r over the brain voxels; the paper flags r > 0.95. On GM maps this does not
    discriminate: every brain shares the template's anatomy, and the training mean alone
    reaches r ~0.95 with the training images (issue 12), so a sample that ignores everything
    individual passes for a copy.
``residual_r``
    Pearson r after removing the training mean (voxel by voxel) from both images: what two
    images share beyond the anatomy every brain shares. The mean itself has no residual (r
    undefined, never a copy); two different people correlate weakly; a copy correlates 1.
``dcr``
    Distance to the closest training record: root-mean-square difference over the brain
    voxels with the nearest training image (store units), the standard test of synthetic-data
    privacy (e.g. Yale et al. 2020, SynthCity). A copy is closer to its source than any real
    new person is to anyone in the training set.

The gate (:func:`check_memorization`) compares each synthetic image with a *baseline* of real
images that the training set does not contain: held-out participants against every training
image (the "same distance for held-out real images"), and, when fewer than
``MIN_HELDOUT_BASELINE`` images are held out, also every training image against the training
images of *other* participants (leave-one-participant-out). A synthetic image is flagged as a
copy of its closest training record when both

* its ``dcr`` is below half the smallest ``dcr`` of the baseline: it is much closer to that
  participant than any real new person is to their own closest participant, and
* its ``residual_r`` with that record is above the point halfway between the largest
  ``residual_r`` of the baseline (each baseline image with its closest record) and 1 (a
  perfect copy): it resembles that participant beyond the shared anatomy much more than any
  real new person resembles theirs.

The first criterion alone flags the template mean (it is close to everybody); the second alone
also flags a faint echo of one participant's pattern on an otherwise average brain, which is
closer to the mean than to that person; both together say "this is that person". The margin
(``COPY_MARGIN``: half the way from the baseline's extreme to a perfect copy) keeps new images
off the gate: a new image drawn like the baseline's images falls beyond the baseline's
extreme with probability ``1 / (B + 1)`` for ``B`` baseline images (exchangeability), so the
extremes alone would exclude a few percent of genuinely new samples, while a copy degraded by
independent noise is still flagged (tests/test_privacy.py). Residuals of the
leave-one-participant-out baseline are taken about the full training mean, which includes the
image itself; that biases their ``residual_r`` down by about ``1 / (N - 1)``, well inside the
margin.

Computation
-----------
Both sets are ``(n_images, n_voxels)`` arrays, typically cohort stores larger than memory,
read by blocks of whole rows (:func:`bids_genbrain.arrays.iter_row_blocks`: in file order,
never mapped), optionally a subset of their rows (a store's training rows). Every image is
centred on the training mean ``m`` (voxel by voxel), which removes the large common part
before any product is formed; then one pass over the training images per block of queries
accumulates the cross products ``<a, b>`` of the residuals ``a = s - m``, ``b = t - m``. Every
measure follows exactly from these and per-image sums:

* ``residual_r = <a, b> / (|a| |b|)``, ``dcr^2 = (|a|^2 + |b|^2 - 2 <a, b>) / V``;
* raw Pearson r: with ``m~ = m - mean(m)`` and ``V`` voxels,
  ``cov(s, t) = |m~|^2 + <m~, a> + <m~, b> + <a, b> - V mean(a) mean(b)``, and the variances
  likewise, so no term carries the images' offset (stable for intensities far from 0).

Memory is one block of each set plus the ``(block, n_training)`` products, never the cohort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from ..arrays import as_rows, block_rows, iter_row_blocks
from ..stats.glm import DEFAULT_MEMORY_MB

DEFAULT_THRESHOLD = 0.95
"""Pearson r above which the paper's raw-r check calls a synthetic image a copy."""

COPY_MARGIN = 0.5
"""How far from the baseline's extremes towards a perfect copy the gate's cuts lie."""

RESIDUAL_TOLERANCE = 1e-4
"""Residual norm, relative to the training images' median, below which an image is the mean
(float32 rounding of a mean image is ~1e-6 of a GM residual)."""

MIN_HELDOUT_BASELINE = 10
"""Held-out images below which the leave-one-participant-out training images join the baseline."""


@dataclass(frozen=True)
class _Side:
    """Per-image sums of one set about the training mean, over the chosen voxels."""

    sum_a: np.ndarray   # sum_v a_v
    m_dot_a: np.ndarray  # <m~, a>
    sq_a: np.ndarray    # |a|^2


class _Pairs:
    """The training side of every comparison: mean, voxels, per-image sums, block reader.

    Parameters
    ----------
    training : array-like, shape (n_all, n_voxels)
    rows : array-like of int, optional
        Rows of ``training`` that are the training images (default all).
    voxels : array-like of bool, optional
        Voxels compared (default all).
    memory_mb : float
        Budget of a block of float64 rows.
    """

    def __init__(self, training: ArrayLike, rows: ArrayLike | None, voxels: ArrayLike | None,
                 memory_mb: float) -> None:
        self.data = as_rows(training, "training")
        n_vox = self.data.shape[1]
        self.keep = slice(None) if voxels is None else np.asarray(voxels, dtype=bool)
        if voxels is not None:
            if self.keep.shape != (n_vox,):
                raise ValueError(f"voxels must be a boolean vector of {n_vox}, got "
                                 f"{self.keep.shape}")
            if self.keep.sum() < 2:
                raise ValueError("fewer than 2 voxels selected")
        self.rows = np.arange(self.data.shape[0]) if rows is None else \
            np.asarray(rows, dtype=np.intp)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= self.data.shape[0]):
            raise ValueError(f"rows must index the {self.data.shape[0]} training images")
        if self.rows.size == 0:
            raise ValueError("no training image")
        self.n_rows = block_rows(n_vox, 8, memory_mb / 4)
        total = None
        for _, block in self.blocks():
            part = block.sum(axis=0)
            total = part if total is None else total + part
        self.mean = total / self.rows.size
        self.n_voxels = int(self.mean.size)
        self.m_tilde = self.mean - self.mean.mean()
        self.m_sq = float(self.m_tilde @ self.m_tilde)
        self.side = self.sums(self.data, self.rows)

    def blocks(self, data: np.ndarray | None = None, rows: np.ndarray | None = None):
        """Yield ``(positions, float64 block)`` of ``rows`` of ``data`` (default: training)."""
        data = self.data if data is None else data
        rows = self.rows if rows is None else rows
        for positions, block in iter_row_blocks(data, rows, n_rows=self.n_rows):
            values = np.asarray(block[:, self.keep], dtype=np.float64)
            if not np.isfinite(values).all():
                raise ValueError("images contain NaN or inf; fill them before the memorization "
                                 "check")
            yield positions, values

    def sums(self, data: np.ndarray, rows: np.ndarray) -> _Side:
        """Per-image sums of ``rows`` of ``data`` about the training mean."""
        out = [np.zeros(len(rows)) for _ in range(3)]
        for positions, block in self.blocks(data, rows):
            a = block - self.mean
            out[0][positions] = a.sum(axis=1)
            out[1][positions] = a @ self.m_tilde
            out[2][positions] = np.einsum("ij,ij->i", a, a)
        return _Side(*out)

    def cross(self, queries: np.ndarray, rows: np.ndarray, progress: bool, desc: str):
        """Yield ``(positions, <a, b> block)`` for blocks of query rows against all training."""
        n_blocks = -(-len(rows) // self.n_rows)
        bar = tqdm(total=n_blocks, desc=desc, unit="block", disable=not progress, leave=False)
        for positions, block in self.blocks(queries, rows):
            a = block - self.mean
            products = np.zeros((len(positions), self.rows.size))
            for t_positions, t_block in self.blocks():
                products[:, t_positions] = a @ (t_block - self.mean).T
            bar.update()
            yield positions, products
        bar.close()

    def raw_r(self, q: _Side, positions: np.ndarray, products: np.ndarray) -> np.ndarray:
        """Pearson r of the raw images (see the module docstring)."""
        t, n = self.side, self.n_voxels
        cov = (self.m_sq + q.m_dot_a[positions, None] + t.m_dot_a[None, :] + products
               - q.sum_a[positions, None] * t.sum_a[None, :] / n)
        var_q = self.m_sq + 2 * q.m_dot_a[positions] + q.sq_a[positions] - q.sum_a[positions]**2 / n
        var_t = self.m_sq + 2 * t.m_dot_a + t.sq_a - t.sum_a**2 / n
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cov / np.sqrt(np.outer(np.clip(var_q, 0, None), np.clip(var_t, 0, None)))
        r[~np.isfinite(r)] = np.nan
        constant_q = var_q <= 1e-12 * max(float(np.median(var_t)), 1e-300)
        r[constant_q] = np.nan
        return np.clip(r, -1.0, 1.0)

    def residual_r(self, q: _Side, positions: np.ndarray, products: np.ndarray) -> np.ndarray:
        """Pearson r of the mean-removed images (NaN for an image equal to the mean)."""
        t = self.side
        tiny = RESIDUAL_TOLERANCE**2 * float(np.median(t.sq_a))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = products / np.sqrt(np.outer(q.sq_a[positions], t.sq_a))
        r[(q.sq_a[positions] <= tiny)[:, None] | (t.sq_a <= tiny)[None, :]
          | ~np.isfinite(r)] = np.nan
        return np.clip(r, -1.0, 1.0)

    def distance(self, q: _Side, positions: np.ndarray, products: np.ndarray) -> np.ndarray:
        """Root-mean-square distance of every query of the block to every training image."""
        sq = q.sq_a[positions, None] + self.side.sq_a[None, :] - 2.0 * products
        return np.sqrt(np.clip(sq, 0.0, None) / self.n_voxels)


def _best(values: np.ndarray, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the best finite value and its column (NaN and -1 when none)."""
    ranked = np.where(np.isfinite(values), values, -np.inf if largest else np.inf)
    column = ranked.argmax(axis=1) if largest else ranked.argmin(axis=1)
    value = ranked[np.arange(len(ranked)), column]
    found = np.isfinite(value)
    return np.where(found, value, np.nan), np.where(found, column, -1)


@dataclass(frozen=True)
class NearestRecords:
    """Each query image against the training images (see the module docstring).

    Positions index the training images (``training_rows`` when given).

    Attributes
    ----------
    max_r : ndarray, shape (n_queries,)
        Largest raw Pearson r with a training image (NaN for a constant image).
    max_r_nearest : ndarray of int
        Its position (-1 when undefined).
    dcr : ndarray, shape (n_queries,)
        Root-mean-square distance over the voxels to the closest training image.
    nearest : ndarray of int
        Its position (-1 when every record is excluded).
    residual_r : ndarray, shape (n_queries,)
        Pearson r, after removing the training mean, with that closest record (NaN for an
        image equal to the mean).
    max_residual_r : ndarray, shape (n_queries,)
        Largest residual r with any training image.
    max_residual_nearest : ndarray of int
        Its position (-1 when undefined).
    """

    max_r: np.ndarray
    max_r_nearest: np.ndarray
    dcr: np.ndarray
    nearest: np.ndarray
    residual_r: np.ndarray
    max_residual_r: np.ndarray
    max_residual_nearest: np.ndarray


def nearest_records(
    queries: ArrayLike,
    training: ArrayLike,
    *,
    query_rows: ArrayLike | None = None,
    training_rows: ArrayLike | None = None,
    query_groups: Sequence[str] | None = None,
    training_groups: Sequence[str] | None = None,
    voxels: ArrayLike | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = True,
    desc: str = "memorization",
) -> NearestRecords:
    """Raw r, mean-removed r and distance to the closest training record of every query.

    Parameters
    ----------
    queries : array-like, shape (n_all_queries, n_voxels)
        Synthetic or real images (a cohort store's data is read by blocks of rows).
    training : array-like, shape (n_all, n_voxels)
    query_rows, training_rows : array-like of int, optional
        Rows of each array to use (default all); may index the same store.
    query_groups, training_groups : sequence of str, optional
        Participant of each used row: a query is never compared with a record of its own
        participant (leave-one-participant-out when the queries are the training images).
    voxels : array-like of bool, shape (n_voxels,), optional
        Voxels compared (default all columns: the brain mask the arrays were built with).
    memory_mb : float
        Budget of the blocks read at a time.
    progress : bool
        Show a progress bar.
    desc : str
        Its label.

    Returns
    -------
    NearestRecords
    """
    qry = _check_pair(queries, training)
    pairs = _Pairs(training, training_rows, voxels, memory_mb)
    return _nearest(pairs, qry, query_rows, query_groups, training_groups, progress, desc)


def _nearest(pairs: _Pairs, queries: np.ndarray, query_rows: ArrayLike | None,
             query_groups: Sequence[str] | None, training_groups: Sequence[str] | None,
             progress: bool, desc: str) -> NearestRecords:
    """:func:`nearest_records` against a prepared training side."""
    rows = np.arange(queries.shape[0]) if query_rows is None else \
        np.asarray(query_rows, dtype=np.intp)
    if rows.size and (rows.min() < 0 or rows.max() >= queries.shape[0]):
        raise ValueError(f"query rows must index the {queries.shape[0]} images")
    if (query_groups is None) != (training_groups is None):
        raise ValueError("give query_groups and training_groups together")
    if query_groups is not None:
        q_ids = np.asarray([str(g) for g in query_groups])
        t_ids = np.asarray([str(g) for g in training_groups])
        if len(q_ids) != len(rows) or len(t_ids) != pairs.rows.size:
            raise ValueError(f"got {len(q_ids)} query and {len(t_ids)} training groups for "
                             f"{len(rows)} and {pairs.rows.size} images")
    side = pairs.sums(queries, rows)
    n = len(rows)
    out = {k: np.full(n, np.nan) for k in ("max_r", "dcr", "residual_r", "max_residual_r")}
    where = {k: np.full(n, -1, dtype=np.intp) for k in ("max_r", "dcr", "max_residual_r")}
    for positions, products in pairs.cross(queries, rows, progress, desc):
        raw = pairs.raw_r(side, positions, products)
        dist = pairs.distance(side, positions, products)
        res = pairs.residual_r(side, positions, products)
        if query_groups is not None:
            same = q_ids[positions, None] == t_ids[None, :]
            raw[same], dist[same], res[same] = np.nan, np.nan, np.nan
        out["max_r"][positions], where["max_r"][positions] = _best(raw, largest=True)
        out["dcr"][positions], where["dcr"][positions] = _best(dist, largest=False)
        closest = where["dcr"][positions]
        out["residual_r"][positions] = np.where(
            closest >= 0, res[np.arange(len(positions)), np.maximum(closest, 0)], np.nan)
        out["max_residual_r"][positions], where["max_residual_r"][positions] = \
            _best(res, largest=True)
    return NearestRecords(max_r=out["max_r"], max_r_nearest=where["max_r"], dcr=out["dcr"],
                          nearest=where["dcr"], residual_r=out["residual_r"],
                          max_residual_r=out["max_residual_r"],
                          max_residual_nearest=where["max_residual_r"])


def max_correlation(
    synthetic: ArrayLike,
    training: ArrayLike,
    *,
    voxels: ArrayLike | None = None,
    training_rows: ArrayLike | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Largest Pearson r of every synthetic image with any training image (the paper's check).

    Parameters
    ----------
    synthetic : array-like, shape (n_synthetic, n_voxels)
    training : array-like, shape (n_training, n_voxels)
    voxels, training_rows, memory_mb, progress
        See :func:`nearest_records`.

    Returns
    -------
    max_r : ndarray, shape (n_synthetic,)
        NaN for a constant synthetic image (or when every training image is constant).
    nearest : ndarray of int, shape (n_synthetic,)
        Position of the most correlated training image (-1 where ``max_r`` is NaN).
    """
    found = nearest_records(synthetic, training, training_rows=training_rows, voxels=voxels,
                            memory_mb=memory_mb, progress=progress)
    return found.max_r, found.max_r_nearest


def _check_pair(queries: ArrayLike, training: ArrayLike) -> np.ndarray:
    q, t = as_rows(queries, "synthetic"), as_rows(training, "training")
    if q.shape[1] != t.shape[1]:
        raise ValueError(f"synthetic images have {q.shape[1]} voxels, training images "
                         f"{t.shape[1]}")
    return q


def _labels(ids: Sequence[str] | None, n: int, what: str) -> list[str]:
    labels = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} {what} ids for {n} images")
    return labels


def _ids_at(ids: Sequence[str], positions: np.ndarray) -> list[str | None]:
    return [ids[i] if i >= 0 else None for i in positions]


def memorization_table(
    synthetic: ArrayLike,
    training: ArrayLike,
    *,
    synthetic_ids: Sequence[str] | None = None,
    training_ids: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    voxels: ArrayLike | None = None,
    training_rows: ArrayLike | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = True,
) -> pd.DataFrame:
    """The paper's raw-r check: synthetic images whose largest r exceeds ``threshold``.

    Parameters
    ----------
    synthetic : array-like, shape (n_synthetic, n_voxels)
    training : array-like, shape (n_training, n_voxels)
    synthetic_ids, training_ids : sequence of str, optional
        Labels of the rows (default: row numbers as strings); ``training_ids`` label the used
        training rows.
    threshold : float
        A synthetic image whose largest r is above this is flagged.
    voxels, training_rows, memory_mb, progress
        See :func:`nearest_records`.

    Returns
    -------
    pandas.DataFrame, shape (n_synthetic, 4)
        Columns ``synthetic_id``, ``nearest_training_id`` (missing when undefined), ``max_r``,
        ``flagged``; rows in the order of ``synthetic``.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a correlation in [-1, 1], got {threshold}")
    n_train = len(training) if training_rows is None else len(training_rows)
    synthetic_ids = _labels(synthetic_ids, len(synthetic), "synthetic")
    training_ids = _labels(training_ids, n_train, "training")
    max_r, nearest = max_correlation(synthetic, training, voxels=voxels,
                                     training_rows=training_rows, memory_mb=memory_mb,
                                     progress=progress)
    return pd.DataFrame({
        "synthetic_id": synthetic_ids,
        "nearest_training_id": _ids_at(training_ids, nearest),
        "max_r": max_r,
        "flagged": np.nan_to_num(max_r, nan=-np.inf) > threshold,
    })


@dataclass(frozen=True)
class MemorizationCheck:
    """The privacy gate's verdict on a synthetic cohort (see the module docstring).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per synthetic image: ``synthetic_id``, ``nearest_training_id`` and ``max_r``
        (raw Pearson r, the paper's check), ``raw_r_copy`` (``max_r`` above the paper's
        threshold; reported, not gating), ``dcr``, ``dcr_training_id`` (the closest record),
        ``residual_r`` (mean-removed r with it), ``max_residual_r``,
        ``max_residual_training_id``, ``flagged`` (the gate).
    baseline : pandas.DataFrame
        One row per baseline image: ``image_id``, ``source`` (``held-out`` or
        ``training (other participants)``), ``dcr``, ``dcr_training_id``, ``residual_r``.
    dcr_cut : float
        ``dcr`` below which an image may be a copy: ``1 - COPY_MARGIN`` times the baseline's
        smallest.
    residual_r_cut : float
        ``residual_r`` above which an image may be a copy: ``COPY_MARGIN`` of the way from the
        baseline's largest to 1.
    """

    table: pd.DataFrame
    baseline: pd.DataFrame
    dcr_cut: float
    residual_r_cut: float

    @property
    def flagged(self) -> np.ndarray:
        """Boolean vector: synthetic images the gate excludes."""
        return self.table["flagged"].to_numpy(dtype=bool)


def check_memorization(
    synthetic: ArrayLike,
    training: ArrayLike,
    *,
    training_ids: Sequence[str],
    training_rows: ArrayLike | None = None,
    synthetic_ids: Sequence[str] | None = None,
    heldout: ArrayLike | None = None,
    heldout_rows: ArrayLike | None = None,
    heldout_ids: Sequence[str] = (),
    raw_threshold: float = DEFAULT_THRESHOLD,
    voxels: ArrayLike | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = True,
) -> MemorizationCheck:
    """Flag synthetic images that copy a training participant (the group level's gate).

    Parameters
    ----------
    synthetic : array-like, shape (n_synthetic, n_voxels)
    training : array-like, shape (n_all, n_voxels)
        The images the model was trained on (``training_rows`` of it: a store's rows).
    training_ids : sequence of str
        Participant of each training image (several sessions share one id).
    training_rows : array-like of int, optional
        Rows of ``training`` (default all).
    synthetic_ids : sequence of str, optional
        Labels of the synthetic rows (default: row numbers).
    heldout : array-like, shape (n_any, n_voxels), optional
        Real images of participants the model never saw (default: ``training``, with
        ``heldout_rows`` naming them).
    heldout_rows : array-like of int, optional
        Rows of ``heldout`` (default: all of a given ``heldout``; none when ``heldout`` is not
        given).
    heldout_ids : sequence of str
        Their participants.
    raw_threshold : float
        The paper's raw-r threshold, for the ``raw_r_copy`` column.
    voxels, memory_mb, progress
        See :func:`nearest_records`.

    Returns
    -------
    MemorizationCheck

    Raises
    ------
    ValueError
        Mismatched shapes or ids, fewer than two training participants, or a baseline with no
        defined value.
    """
    if not -1.0 <= raw_threshold <= 1.0:
        raise ValueError(f"threshold must be a correlation in [-1, 1], got {raw_threshold}")
    pairs = _Pairs(training, training_rows, voxels, memory_mb)
    training_ids = _labels(training_ids, pairs.rows.size, "training")
    if len(set(training_ids)) < 2:
        raise ValueError("the memorization check needs at least two training participants")
    synthetic_ids = _labels(synthetic_ids, len(synthetic), "synthetic")
    syn = _nearest(pairs, _check_pair(synthetic, training), None, None, None, progress,
                   "memorization")
    if heldout is None:
        heldout, heldout_rows = training, (np.zeros(0, np.intp) if heldout_rows is None
                                           else heldout_rows)
    held_rows = np.arange(len(heldout)) if heldout_rows is None else \
        np.asarray(heldout_rows, dtype=np.intp)
    baseline = []
    if held_rows.size:
        heldout_ids = _labels(heldout_ids, held_rows.size, "held-out")
        held = _nearest(pairs, _check_pair(heldout, training), held_rows, None, None, progress,
                        "held-out baseline")
        baseline.append(_baseline_rows(held, heldout_ids, training_ids, "held-out"))
    if held_rows.size < MIN_HELDOUT_BASELINE:
        loo = _nearest(pairs, pairs.data, pairs.rows, training_ids, training_ids, progress,
                       "training baseline")
        baseline.append(_baseline_rows(loo, training_ids, training_ids,
                                       "training (other participants)"))
    base = pd.concat(baseline, ignore_index=True)
    if not (base["dcr"].notna().any() and base["residual_r"].notna().any()):
        raise ValueError("the memorization baseline has no defined distance or correlation "
                         "(constant images?)")
    dcr_cut = (1.0 - COPY_MARGIN) * float(base["dcr"].min())
    largest = float(base["residual_r"].max())
    residual_cut = largest + COPY_MARGIN * (1.0 - largest)
    table = pd.DataFrame({
        "synthetic_id": synthetic_ids,
        "nearest_training_id": _ids_at(training_ids, syn.max_r_nearest),
        "max_r": syn.max_r,
        "raw_r_copy": np.nan_to_num(syn.max_r, nan=-np.inf) > raw_threshold,
        "dcr": syn.dcr,
        "dcr_training_id": _ids_at(training_ids, syn.nearest),
        "residual_r": syn.residual_r,
        "max_residual_r": syn.max_residual_r,
        "max_residual_training_id": _ids_at(training_ids, syn.max_residual_nearest),
    })
    table["flagged"] = (np.nan_to_num(syn.dcr, nan=np.inf) < dcr_cut) & \
        (np.nan_to_num(syn.residual_r, nan=-np.inf) > residual_cut)
    return MemorizationCheck(table=table, baseline=base, dcr_cut=dcr_cut,
                             residual_r_cut=residual_cut)


def _baseline_rows(found: NearestRecords, image_ids: Sequence[str], training_ids: Sequence[str],
                   source: str) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(image_ids), "source": source, "dcr": found.dcr,
                         "dcr_training_id": _ids_at(training_ids, found.nearest),
                         "residual_r": found.residual_r})
