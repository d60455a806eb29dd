"""Agreement between a BWAS map and a reference map, with bootstrap confidence intervals.

Metrics (all over the voxels finite in both maps):

``r``
    Pearson correlation of the two maps.
``dice_pos`` / ``dice_neg``
    Dice coefficient of the voxels above ``threshold`` (resp. below ``-threshold``) in both
    maps; NaN when neither map has such a voxel.
``dice_micro``
    Micro-averaged Dice over the positive and negative classes:
    ``2 (|P_a & P_b| + |N_a & N_b|) / (|P_a| + |P_b| + |N_a| + |N_b|)``.
``dice_top``
    Dice of the ``top_fraction`` (20 %) voxels of largest ``|value|`` in each map; both sets
    have ``ceil(top_fraction * n)`` voxels (ties at the cut broken by position).

:func:`bootstrap_comparison` resamples the participants of the real sample with replacement
(within each group for a two-group contrast), refits the GLM chunked for each draw, and
reports a normal (standard) bootstrap interval of every metric: the full-sample estimate plus
or minus ``z`` bootstrap standard errors, on Fisher's z scale for ``r`` and clipped to [0, 1]
for the Dice coefficients. Percentile intervals are wrong for these metrics: a resampled
participant list repeats people, which adds noise to each replicate's map, so every replicate
agrees less with the reference than the full sample does and the percentile interval can lie
entirely below the estimate (measured: r 0.369, percentile interval [0.200, 0.336] at N = 80).
The spread of the replicates is still a usable standard error (Efron & Tibshirani 1993,
ch. 13); the percentiles stay available in :attr:`BootstrapResult.replicates`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.spatial import distance
from tqdm.auto import tqdm

from ..templates import brain_mask, mni_grid
from .glm import DEFAULT_MEMORY_MB, Design, DesignError, fit_glm, make_design

METRICS = ("r", "dice_pos", "dice_neg", "dice_micro", "dice_top")
"""Names of the comparison metrics, in table order."""


def _finite_pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.size} vs {y.size} voxels")
    finite = np.isfinite(x) & np.isfinite(y)
    return x[finite], y[finite]


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator > 0 else math.nan


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity of two maps (not centred) over the voxels finite in both.

    The GenBrain paper's age/sex similarity between two t maps.

    Parameters
    ----------
    a, b : array-like, shape (n_voxels,)

    Returns
    -------
    float
        In [-1, 1]; NaN when either map is zero everywhere (or no voxel is finite in both).
    """
    return _cosine(*_finite_pair(a, b))


def map_correlation(a: ArrayLike, b: ArrayLike) -> float:
    """Pearson r of two maps over the voxels finite in both.

    Parameters
    ----------
    a, b : array-like, shape (n_voxels,)

    Returns
    -------
    float
        NaN when fewer than 2 voxels are finite in both or either map is constant there.
    """
    x, y = _finite_pair(a, b)
    if x.size < 2:
        return math.nan
    return _cosine(x - x.mean(), y - y.mean())


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice coefficient ``2 |A & B| / (|A| + |B|)`` of two boolean maps.

    Parameters
    ----------
    a, b : array-like of bool, same shape

    Returns
    -------
    float
        In [0, 1]; NaN when both maps are empty.
    """
    a = np.asarray(a, dtype=bool).ravel()
    b = np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if not (a.any() or b.any()):
        return math.nan
    return 1.0 - float(distance.dice(a, b))


def top_fraction_mask(values: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """Boolean mask of the ``ceil(fraction * n)`` voxels of largest absolute value.

    Parameters
    ----------
    values : ndarray, shape (n_voxels,)
    fraction : float
        In (0, 1].

    Returns
    -------
    ndarray of bool, shape (n_voxels,)
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    k = math.ceil(fraction * values.size)
    keep = np.zeros(values.size, dtype=bool)
    if k:
        keep[np.argpartition(-np.abs(values), k - 1)[:k]] = True
    return keep


def compare_maps(
    stat_map: ArrayLike,
    reference: ArrayLike,
    *,
    threshold: float = 0.0,
    top_fraction: float = 0.2,
) -> dict[str, float]:
    """Pearson r and Dice agreement of a map with a reference map.

    Parameters
    ----------
    stat_map, reference : array-like, shape (n_voxels,)
        Masked maps on the same voxels (e.g. Cohen's d); NaN voxels of either are ignored.
    threshold : float
        Voxels count as positive above ``threshold`` and negative below ``-threshold`` (the
        same cut for both maps: compare like with like, e.g. d with d).
    top_fraction : float
        Fraction of voxels of largest ``|value|`` for ``dice_top``.

    Returns
    -------
    dict
        One float per name in :data:`METRICS`.
    """
    if np.size(stat_map) != np.size(reference):
        raise ValueError(f"map has {np.size(stat_map)} voxels, reference has "
                         f"{np.size(reference)}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    a, b = _finite_pair(stat_map, reference)
    if a.size < 2:
        raise ValueError("fewer than 2 voxels are finite in both maps")
    pos_a, pos_b, neg_a, neg_b = a > threshold, b > threshold, a < -threshold, b < -threshold
    sizes = pos_a.sum() + pos_b.sum() + neg_a.sum() + neg_b.sum()
    both = (pos_a & pos_b).sum() + (neg_a & neg_b).sum()
    return {
        "r": map_correlation(a, b),
        "dice_pos": dice(pos_a, pos_b),
        "dice_neg": dice(neg_a, neg_b),
        "dice_micro": float(2 * both / sizes) if sizes else math.nan,
        "dice_top": dice(top_fraction_mask(a, top_fraction), top_fraction_mask(b, top_fraction)),
    }


def reference_vector(
    reference: Path | str | nb.spatialimages.SpatialImage,
    *,
    resolution: float = 2.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """A reference map as a masked voxel vector on the MNI grid.

    Parameters
    ----------
    reference : path-like or nibabel image
        3D map (e.g. Cohen's d of a large study) in MNI space; resampled (trilinear) to
        :func:`bids_genbrain.templates.mni_grid` when on another grid.
    resolution : float
        Target grid.
    mask : ndarray of bool, optional
        Voxels to keep, in C order; default :func:`bids_genbrain.templates.brain_mask`.

    Returns
    -------
    ndarray, shape (mask.sum(),)
    """
    from nilearn.image import resample_img

    img = nb.load(reference) if isinstance(reference, (str, Path)) else reference
    shape, affine = mni_grid(resolution)
    mask = brain_mask(resolution) if mask is None else np.asarray(mask, dtype=bool)
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = nb.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine)
    if len(img.shape) != 3:
        raise ValueError(f"reference map must be 3D, got shape {img.shape}")
    if img.shape != tuple(shape) or not np.allclose(img.affine, affine):
        img = resample_img(img, target_affine=affine, target_shape=shape,
                           interpolation="continuous", force_resample=True, copy_header=True)
    return np.asarray(img.dataobj, dtype=np.float64)[mask]


@dataclass
class BootstrapResult:
    """Bootstrap of the comparison between a real-sample map and a reference.

    Attributes
    ----------
    summary : pandas.DataFrame
        Index :data:`METRICS`; columns ``estimate`` (full sample), ``se`` (bootstrap standard
        error, on Fisher's z scale for ``r``), ``ci_low``, ``ci_high`` (normal interval, see
        :func:`normal_interval`) and ``n_boot`` (draws with a finite value).
    replicates : pandas.DataFrame, shape (n_boot, len(METRICS))
        Metrics of every draw.
    indices : ndarray of int, shape (n_boot, n_participants)
        Rows of the table drawn by every draw (the images used are ``rows[indices]``, or
        ``indices`` when no ``rows`` were given).
    n_redrawn : int
        Draws replaced because their design was not estimable.
    """

    summary: pd.DataFrame
    replicates: pd.DataFrame
    indices: np.ndarray
    n_redrawn: int


def normal_interval(metric: str, estimate: float, replicates: ArrayLike,
                    ci: float = 0.95) -> tuple[float, float, float]:
    """Normal bootstrap interval of one comparison metric, centred on the estimate.

    ``r`` is handled on Fisher's z scale (``arctanh``), where its sampling distribution is
    close to normal, and transformed back; Dice coefficients on their own scale, clipped to
    [0, 1].

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.
    estimate : float
        Full-sample value.
    replicates : array-like, shape (n_boot,)
        Bootstrap values (non-finite ones are ignored).
    ci : float
        Coverage.

    Returns
    -------
    se, low, high : float
        Bootstrap standard error (on the z scale for ``r``) and the interval; NaN when the
        estimate is not finite or fewer than two replicates are.
    """
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not np.isfinite(estimate) or values.size < 2:
        return math.nan, math.nan, math.nan
    z = stats.norm.ppf(0.5 + ci / 2.0)
    if metric == "r":
        limit = 1.0 - 1e-12
        centre = np.arctanh(np.clip(estimate, -limit, limit))
        se = float(np.std(np.arctanh(np.clip(values, -limit, limit)), ddof=1))
        return se, float(np.tanh(centre - z * se)), float(np.tanh(centre + z * se))
    se = float(np.std(values, ddof=1))
    return se, max(0.0, estimate - z * se), min(1.0, estimate + z * se)


def _draw(rng: np.random.Generator, strata: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([rng.choice(s, size=s.size, replace=True) for s in strata])


def bootstrap_comparison(
    images: ArrayLike,
    table: pd.DataFrame,
    reference: ArrayLike,
    *,
    contrast: str,
    confounds: Sequence[str] = (),
    categorical: Collection[str] = ("sex", "site"),
    levels: tuple[Any, Any] | None = None,
    rows: ArrayLike | None = None,
    stat: Literal["d", "t"] = "d",
    n_boot: int = 1000,
    ci: float = 0.95,
    threshold: float = 0.0,
    top_fraction: float = 0.2,
    seed: int = 0,
    chunk_size: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = True,
) -> BootstrapResult:
    """Bootstrap confidence intervals of a real-sample map's agreement with a reference.

    Every draw resamples participants with replacement (within each level of a two-group
    contrast, so both groups keep their size), rebuilds the design, refits the voxel-wise
    GLM in voxel chunks (the image array is never copied), and compares the ``stat`` map
    with ``reference`` (:func:`compare_maps`). A draw whose design is not estimable (e.g.
    a confound level confounded with the contrast) is redrawn.

    Parameters
    ----------
    images : array-like, shape (n_images, n_voxels)
        Real images (a :class:`numpy.memmap` is fine).
    table : pandas.DataFrame, shape (n_participants, n_columns)
        Covariates, one row per image used (row ``i`` is image ``rows[i]``).
    reference : array-like, shape (n_voxels,)
        Reference map (see :func:`reference_vector`).
    contrast, confounds, categorical, levels
        See :func:`bids_genbrain.stats.glm.make_design`.
    rows : array-like of int, shape (n_participants,), optional
        Image rows of the table's rows (e.g. one image per participant of a larger store);
        default: the table's rows are the images' rows.
    stat : {"d", "t"}
        Map compared with the reference.
    n_boot : int
        Number of bootstrap draws.
    ci : float
        Coverage of the interval (:func:`normal_interval`).
    threshold, top_fraction
        See :func:`compare_maps`.
    seed : int
        Seed of the draws; the same seed gives the same result.
    chunk_size, memory_mb
        Voxel chunking of each fit (see :func:`bids_genbrain.stats.glm.fit_glm`).
    progress : bool
        Show a progress bar over draws.

    Returns
    -------
    BootstrapResult
    """
    if stat not in ("d", "t"):
        raise ValueError(f"stat must be 'd' or 't', got {stat!r}")
    if n_boot < 1 or not 0.0 < ci < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < ci < 1, got {n_boot}, {ci}")
    table = table.reset_index(drop=True)
    reference = np.asarray(reference, dtype=np.float64)
    image_rows = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.intp)
    if image_rows.shape != (len(table),):
        raise ValueError(f"rows has shape {image_rows.shape}; need one image row per table "
                         f"row ({len(table)})")

    def design_of(sub: pd.DataFrame) -> Design:
        return make_design(sub, contrast, confounds, categorical=categorical, levels=levels)

    def compare(design: Design, draw: np.ndarray) -> dict[str, float]:
        result = fit_glm(images, design, rows=image_rows[draw], chunk_size=chunk_size,
                         memory_mb=memory_mb)
        return compare_maps(getattr(result, stat), reference, threshold=threshold,
                            top_fraction=top_fraction)

    full = design_of(table)
    estimate = compare(full, np.arange(len(table)))
    if full.kind == "two-group":
        labels = table[contrast].astype(str).to_numpy()
        strata = [np.flatnonzero(labels == lev) for lev in full.levels]
    else:
        strata = [np.arange(len(table))]
    rng = np.random.default_rng(seed)
    draws, values, redrawn = [], [], 0
    for _ in tqdm(range(n_boot), desc="bootstrap", unit="draw", disable=not progress,
                  leave=False):
        while True:
            draw = _draw(rng, strata)
            try:
                design = design_of(table.iloc[draw])
                break
            except DesignError as exc:
                redrawn += 1
                if redrawn > n_boot:
                    raise RuntimeError(f"more than {n_boot} bootstrap draws were not estimable"
                                       f" (last: {exc}); the sample is too small for this "
                                       "design") from exc
        draws.append(draw)
        values.append(compare(design, draw))
    replicates = pd.DataFrame(values, columns=list(METRICS))
    intervals = {m: normal_interval(m, estimate[m], replicates[m], ci) for m in METRICS}
    summary = pd.DataFrame({
        "estimate": pd.Series(estimate),
        "se": pd.Series({m: v[0] for m, v in intervals.items()}),
        "ci_low": pd.Series({m: v[1] for m, v in intervals.items()}),
        "ci_high": pd.Series({m: v[2] for m, v in intervals.items()}),
        "n_boot": replicates.notna().sum(),
    }).loc[list(METRICS)]
    summary.index.name = "metric"
    return BootstrapResult(summary=summary, replicates=replicates,
                           indices=np.vstack(draws), n_redrawn=redrawn)
