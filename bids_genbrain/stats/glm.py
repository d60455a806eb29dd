"""Voxel-wise ordinary least squares for brain-wide association studies (BWAS).

A cohort is an array of shape ``(n_images, n_voxels)`` (usually a :class:`numpy.memmap` of
brain-masked images, one row per image, voxels in C order of
:func:`bids_genbrain.templates.brain_mask`) and a table with one row per image. This module

1. builds a design matrix from the table (:func:`make_design`): the contrast variable (a
   two-level variable becomes an indicator of its second level, a numeric one stays
   continuous), confounds (numeric ones centred, categorical ones dummy coded, a categorical
   confound with a single level such as a single site contributes no column) and an intercept;
2. fits the model voxel by voxel, reading the images once in blocks of rows (the file order
   of a cohort store) so that memory is bounded whatever the number of images
   (:func:`fit_glm`): effect, t, two-sided p, Cohen's d
   and Benjamini-Hochberg q for the contrast;
3. writes the maps as BIDS-Stats-Models statmaps with JSON sidecars (:func:`write_statmaps`).

Cohen's d
---------
* Two-group contrast: the confound-adjusted mean difference (the indicator's coefficient)
  divided by the pooled residual standard deviation of the model, ``sqrt(RSS / df)``. Without
  confounds this is the classical ``(mean_1 - mean_0) / s_pooled``; in general it equals
  ``t * sqrt(c' (X'X)^-1 c)``.
* Continuous contrast: the conversion from the partial correlation,
  ``d = 2 r / sqrt(1 - r^2) = 2 t / sqrt(df)`` (Rosenthal, 1994), i.e. the d of a
  two-group comparison with the same strength of association.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from tqdm.auto import tqdm

from .. import __version__
from ..arrays import as_rows, block_rows, iter_row_blocks
from ..derivatives import TEMPLATE, kind_path, masked_to_image, write_image
from ..templates import brain_mask, mni_grid

STATS = ("t", "p", "d", "q")
"""Statistics written as maps, in BIDS-Stats-Models ``stat-<label>`` spelling."""

DEFAULT_MEMORY_MB = 256.0
"""Memory of the images read at a time (rows x voxels of the stored dtype)."""


class DesignError(ValueError):
    """A table cannot give an estimable design (missing column, NaN, rank deficiency ...)."""


@dataclass(frozen=True)
class Design:
    """A design matrix with its contrast.

    Attributes
    ----------
    matrix : pandas.DataFrame, shape (n_images, n_regressors)
        Columns: the contrast regressor first, then the confounds, then ``intercept``.
    contrast : ndarray, shape (n_regressors,)
        Contrast vector (1 on the contrast regressor).
    variable : str
        Name of the contrast column in the table.
    kind : {"two-group", "continuous"}
        Two-level variable (indicator of ``levels[1]``) or numeric covariate.
    levels : tuple of str or None
        ``(reference, active)`` for a two-group contrast.
    group_sizes : dict
        Number of images per level (two-group contrasts only).
    formula : str
        Wilkinson-style description, e.g. ``"Y ~ diagnosis + age + C(sex) + 1"``.
    """

    matrix: pd.DataFrame
    contrast: np.ndarray
    variable: str
    kind: Literal["two-group", "continuous"]
    levels: tuple[str, str] | None
    group_sizes: dict[str, int] = field(default_factory=dict)
    formula: str = ""

    @property
    def n(self) -> int:
        """Number of images (rows)."""
        return int(self.matrix.shape[0])

    @property
    def df(self) -> int:
        """Residual degrees of freedom, ``n - rank``."""
        return self.n - int(self.matrix.shape[1])

    @property
    def columns(self) -> list[str]:
        """Regressor names."""
        return [str(c) for c in self.matrix.columns]


def _is_categorical(series: pd.Series, forced: Collection[str]) -> bool:
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    return series.name in forced or not numeric


def _levels(series: pd.Series) -> list[str]:
    """Distinct values as strings, in natural order (numbers by value)."""
    values = list(pd.unique(series))
    try:
        values.sort()
    except TypeError:  # mixed types: order by their text
        values.sort(key=str)
    return [str(v) for v in values]


def _check_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DesignError(f"columns {missing} not in the table (has {list(table.columns)})")
    nan = table[list(columns)].isna()
    if nan.to_numpy().any():
        bad = {c: table.index[nan[c]].tolist()[:5] for c in columns if nan[c].any()}
        raise DesignError(f"missing values (NaN) in design columns, first rows: {bad}; "
                          "drop or impute those rows and their images first")


def _check_rank(matrix: pd.DataFrame) -> None:
    values = matrix.to_numpy(dtype=float)
    if np.linalg.matrix_rank(values) == values.shape[1]:
        return
    for j in range(1, values.shape[1] + 1):
        if np.linalg.matrix_rank(values[:, :j]) < j:
            raise DesignError(
                f"rank-deficient design: regressor {matrix.columns[j - 1]!r} is a linear "
                f"combination of {list(matrix.columns[:j - 1])} (collinear confounds, or a "
                "confound that is constant or confounded with the contrast)")


def make_design(
    table: pd.DataFrame,
    contrast: str,
    confounds: Sequence[str] = (),
    *,
    categorical: Collection[str] = ("sex", "site"),
    levels: tuple[Any, Any] | None = None,
) -> Design:
    """Build the design matrix of a voxel-wise GLM from a table of participants/images.

    Parameters
    ----------
    table : pandas.DataFrame, shape (n_images, n_columns)
        One row per image, in the order of the image array.
    contrast : str
        Column tested. A column with exactly two distinct values (strings, booleans or
        numbers) gives a two-group contrast: an indicator of the second level (sorted, or
        ``levels[1]``). A numeric column with more values is a continuous contrast.
    confounds : sequence of str
        Nuisance columns, e.g. ``("age", "sex", "site")``. Numeric columns are centred;
        categorical ones (non-numeric, or named in ``categorical``) are dummy coded against
        their first level, so a site column with a single site adds nothing.
    categorical : collection of str
        Columns treated as categorical even when numeric (e.g. sites coded 1, 2, 3).
    levels : tuple, optional
        ``(reference, active)`` levels of a two-group contrast; default: sorted order.

    Returns
    -------
    Design

    Raises
    ------
    DesignError
        Missing columns, NaN values, a constant contrast, a categorical contrast with more
        than two levels, fewer images than regressors + 1, or a rank-deficient design.
    """
    if not isinstance(table, pd.DataFrame):
        raise DesignError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if contrast in confounds:
        raise DesignError(f"{contrast!r} is both the contrast and a confound")
    _check_columns(table, [contrast, *confounds])
    table = table.reset_index(drop=True)
    column = table[contrast]
    distinct = _levels(column)
    if len(distinct) < 2:
        raise DesignError(f"contrast column {contrast!r} is constant ({distinct}); "
                          "nothing to test")
    regressors: dict[str, np.ndarray] = {}
    terms: list[str] = []
    group_sizes: dict[str, int] = {}
    ordered: tuple[str, str] | None = None
    if len(distinct) == 2 or _is_categorical(column, categorical):
        if len(distinct) != 2:
            raise DesignError(f"categorical contrast {contrast!r} has {len(distinct)} levels "
                              f"{distinct}; a BWAS contrast compares two: subset the table")
        ordered = (str(levels[0]), str(levels[1])) if levels is not None else \
            (distinct[0], distinct[1])
        if sorted(ordered) != sorted(distinct):
            raise DesignError(f"levels {ordered} do not match the values {distinct} of "
                              f"{contrast!r}")
        as_str = column.astype(str)
        regressors[f"{contrast}[{ordered[1]}]"] = (as_str == ordered[1]).to_numpy(float)
        group_sizes = {lev: int((as_str == lev).sum()) for lev in ordered}
        kind: Literal["two-group", "continuous"] = "two-group"
        terms.append(f"C({contrast})")
    else:
        values = column.to_numpy(dtype=float)
        regressors[contrast] = values - values.mean()
        kind = "continuous"
        terms.append(contrast)
    for name in confounds:
        series = table[name]
        if _is_categorical(series, categorical):
            conf_levels = _levels(series)
            as_str = series.astype(str)
            for lev in conf_levels[1:]:
                regressors[f"{name}[{lev}]"] = (as_str == lev).to_numpy(float)
            if len(conf_levels) > 1:
                terms.append(f"C({name})")
        else:
            values = series.to_numpy(dtype=float)
            regressors[name] = values - values.mean()
            terms.append(name)
    regressors["intercept"] = np.ones(len(table))
    matrix = pd.DataFrame(regressors)
    if len(table) <= matrix.shape[1]:
        raise DesignError(f"{len(table)} images for {matrix.shape[1]} regressors: need at "
                          "least one residual degree of freedom")
    _check_rank(matrix)
    vector = np.zeros(matrix.shape[1])
    vector[0] = 1.0
    return Design(matrix=matrix, contrast=vector, variable=contrast, kind=kind, levels=ordered,
                  group_sizes=group_sizes, formula="Y ~ " + " + ".join(terms + ["1"]))


@dataclass
class GLMResult:
    """Voxel-wise results of one contrast.

    Attributes
    ----------
    design : Design
    effect : ndarray, shape (n_voxels,)
        Contrast estimate ``c' beta`` (adjusted mean difference, or slope per unit).
    t, p, d, q : ndarray, shape (n_voxels,)
        t statistic, two-sided p value, Cohen's d (see the module docstring) and
        Benjamini-Hochberg adjusted p over all voxels.
    sigma : ndarray, shape (n_voxels,)
        Residual standard deviation ``sqrt(RSS / df)``.
    n_constant : int
        Voxels with the same value in every image (e.g. outside a tissue); their effect,
        t and d are 0 and p is 1.
    """

    design: Design
    effect: np.ndarray
    t: np.ndarray
    p: np.ndarray
    d: np.ndarray
    q: np.ndarray
    sigma: np.ndarray
    n_constant: int

    def maps(self) -> dict[str, np.ndarray]:
        """The statistics written as maps, keyed by :data:`STATS` label."""
        return {"t": self.t, "p": self.p, "d": self.d, "q": self.q}


def voxel_chunks(n_voxels: int, n_rows: int, chunk_size: int | None = None,
                 memory_mb: float = DEFAULT_MEMORY_MB) -> list[slice]:
    """Split ``range(n_voxels)`` into contiguous slices for chunked processing.

    Parameters
    ----------
    n_voxels : int
        Number of voxels (columns).
    n_rows : int
        Number of images held per chunk (sets the chunk width when ``chunk_size`` is None).
    chunk_size : int, optional
        Voxels per chunk; default: as many as fit ``memory_mb`` for about three float64
        copies of an ``(n_rows, chunk)`` block.
    memory_mb : float
        Memory budget of a chunk when ``chunk_size`` is None.

    Returns
    -------
    list of slice
    """
    if chunk_size is None:
        chunk_size = int(memory_mb * 2**20 // (3 * 8 * max(n_rows, 1)))
    chunk_size = max(1, min(int(chunk_size), max(n_voxels, 1)))
    return [slice(a, min(a + chunk_size, n_voxels)) for a in range(0, n_voxels, chunk_size)]


TILE_VOXELS = 4096
"""Voxels of a row block converted to float64 at a time (a tile that stays in cache)."""


def fit_glm(
    images: ArrayLike,
    design: Design,
    *,
    rows: ArrayLike | None = None,
    chunk_size: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_jobs: int = 1,
    progress: bool = False,
) -> GLMResult:
    """Fit the design to every voxel by OLS and test its contrast.

    The images are read once, in blocks of rows (the file order of a cohort store, see
    :mod:`bids_genbrain.arrays`), accumulating the sufficient statistics ``X'Y`` and the
    per-voxel ``Y'Y`` in float64 after shifting every voxel by the first image read (with an
    intercept this changes only the intercept's coefficient, and keeps ``RSS = Y'Y - beta'X'Y``
    free of cancellation; a voxel is constant exactly when every shifted value is 0). Memory
    is one block plus ``O(p * n_voxels)``, whatever the number of images.

    Parameters
    ----------
    images : array-like, shape (n_images, n_voxels)
        Image data, one row per image; a :class:`numpy.memmap` is read block by block and
        never mapped whole.
    design : Design
        From :func:`make_design`; ``design.n`` rows, in the order of ``images`` (or of
        ``rows``).
    rows : array-like of int, shape (design.n,), optional
        Rows of ``images`` to use, repetitions allowed (bootstrap); default: all rows.
    chunk_size : int, optional
        Voxels converted to float64 at a time (default :data:`TILE_VOXELS`).
    memory_mb : float
        Memory of the blocks of rows in flight (two: one read ahead while one is processed).
    n_jobs : int
        Threads working on a block (over disjoint voxels); results do not depend on it.
    progress : bool
        Show a progress bar over blocks.

    Returns
    -------
    GLMResult

    Raises
    ------
    ValueError
        Shape mismatch between images, rows and design, or NaN/inf in the images.
    """
    data = as_rows(images)
    index = None if rows is None else np.asarray(rows, dtype=np.intp)
    n_used = data.shape[0] if index is None else index.shape[0]
    if index is not None and index.size and (index.min() < 0 or index.max() >= data.shape[0]):
        raise ValueError(f"rows must index the {data.shape[0]} images")
    if n_used != design.n:
        raise ValueError(f"{n_used} images but the design has {design.n} rows")
    x = design.matrix.to_numpy(dtype=np.float64)
    pinv = np.linalg.pinv(x)
    xtx_inv = pinv @ pinv.T  # (X'X)^-1
    c = design.contrast
    var_factor = float(c @ xtx_inv @ c)
    ones = np.ones(design.n)
    # with an intercept in the model, shifting each voxel changes only the intercept's
    # coefficient, so the shift may be any per-voxel constant
    centre = np.allclose(x @ (pinv @ ones), ones)
    df = design.df
    n_vox = data.shape[1]
    xty = np.zeros((x.shape[1], n_vox))
    yty = np.zeros(n_vox)
    spread = np.zeros(n_vox)  # sum of squared deviations from the first image
    width = min(chunk_size or TILE_VOXELS, max(n_vox, 1))
    n_block = block_rows(n_vox, data.dtype.itemsize, memory_mb / 2)  # two blocks in flight
    n_jobs = max(1, int(n_jobs))
    tiles = [slice(a, min(a + width, n_vox)) for a in range(0, n_vox, width)]
    buffers = [np.empty((min(n_block, max(n_used, 1)), width)) for _ in range(n_jobs)]
    ref = np.zeros(n_vox)

    def accumulate(job: int, block: np.ndarray, xb: np.ndarray) -> None:
        for sl in tiles[job::n_jobs]:  # disjoint voxels per thread
            tile = buffers[job][:block.shape[0], :sl.stop - sl.start]
            np.subtract(block[:, sl], ref[sl], out=tile, dtype=np.float64)
            ss = np.einsum("ij,ij->j", tile, tile)
            spread[sl] += ss
            if not centre:  # no intercept: the model needs the unshifted values
                tile += ref[sl]
                ss = np.einsum("ij,ij->j", tile, tile)
            xty[:, sl] += xb.T @ tile
            yty[sl] += ss

    blocks = iter_row_blocks(data, index, n_rows=n_block)
    with ThreadPoolExecutor(n_jobs) as pool:  # numpy and BLAS release the GIL
        for k, (positions, block) in enumerate(tqdm(
                blocks, total=-(-n_used // n_block), desc="GLM", unit="block",
                disable=not progress, leave=False)):
            if k == 0:  # shift every voxel by the first image read
                ref[:] = block[0]
            xb = x[positions]
            list(pool.map(accumulate, range(n_jobs), [block] * n_jobs, [xb] * n_jobs))
    bad = ~(np.isfinite(spread) & np.isfinite(xty).all(axis=0))
    if bad.any():
        raise ValueError(f"images contain NaN or inf (voxels {np.flatnonzero(bad)[:5].tolist()}"
                         " ...); mask or fill them before the GLM")
    beta = xtx_inv @ xty
    effect = c @ beta
    rss = yty - np.einsum("ij,ij->j", beta, xty)
    constant = spread == 0.0
    sigma = np.sqrt(np.clip(rss, 0.0, None) / df)
    se = sigma * np.sqrt(var_factor)
    effect[constant] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(constant, 0.0, effect / se)
    p = 2.0 * stats.t.sf(np.abs(t), df)
    if design.kind == "two-group":
        d = t * np.sqrt(var_factor)
    else:
        d = 2.0 * t / np.sqrt(df)
    q = stats.false_discovery_control(p, method="bh") if n_vox else p.copy()
    return GLMResult(design=design, effect=effect, t=t, p=p, d=d, q=q, sigma=sigma,
                     n_constant=int(constant.sum()))


def _label(text: str) -> str:
    label = "".join(ch for ch in text if ch.isalnum())
    if not label:
        raise ValueError(f"cannot make a BIDS label from {text!r}")
    return label


def write_statmaps(
    result: GLMResult,
    out_dir: Path | str,
    *,
    desc: str = "real",
    label: str | None = None,
    resolution: float = 2.0,
    mask: np.ndarray | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the t, p, d and q maps of a result as BIDS-Stats-Models statmaps.

    Files are ``space-MNI152NLin6Asym_res-<r>_contrast-<label>_desc-<desc>_stat-<s>_statmap
    .nii.gz`` in ``out_dir``, each with a JSON sidecar (design columns, contrast vector, N,
    df, formula, group sizes, the statistic's definition).

    Parameters
    ----------
    result : GLMResult
    out_dir : path-like
        Target folder (e.g. ``OUTPUT_DIR/group/bwas``), created if needed.
    desc : str
        ``real`` or ``synthetic`` (any alphanumeric label).
    label : str, optional
        Contrast label; default: the contrast variable without non-alphanumerics.
    resolution : float
        Grid of the maps (:func:`bids_genbrain.templates.mni_grid`).
    mask : ndarray of bool, shape mni_grid(resolution)[0], optional
        Voxels of the result's columns in C order; default
        :func:`bids_genbrain.templates.brain_mask`.
    metadata : mapping, optional
        Extra sidecar fields (``Sources``, model sha256 ...).

    Returns
    -------
    dict
        Statistic label -> written path.
    """
    shape, _ = mni_grid(resolution)
    mask = brain_mask(resolution) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} is not the {resolution:g} mm grid {shape}")
    if int(mask.sum()) != result.t.shape[0]:
        raise ValueError(f"result has {result.t.shape[0]} voxels, mask has {int(mask.sum())}")
    design = result.design
    label = _label(label or design.variable)
    descriptions = {
        "t": "t statistic of the contrast (OLS)",
        "p": "two-sided p value of the t statistic",
        "d": ("Cohen's d: adjusted mean difference / pooled residual SD"
              if design.kind == "two-group" else "Cohen's d from t: 2 t / sqrt(df)"),
        "q": "Benjamini-Hochberg FDR-adjusted p over the brain mask",
    }
    common: dict[str, Any] = {
        "Contrast": label,
        "ContrastVariable": design.variable,
        "ContrastType": design.kind,
        "ContrastVector": design.contrast.tolist(),
        "DesignColumns": design.columns,
        "Formula": design.formula,
        "N": design.n,
        "DegreesOfFreedom": design.df,
        "Space": TEMPLATE,
        "Resolution": resolution,
        "Software": f"bids_genbrain {__version__}",
    }
    if design.levels is not None:
        common["Levels"] = {"reference": design.levels[0], "active": design.levels[1]}
        common["GroupSizes"] = design.group_sizes
    common.update(metadata or {})
    written = {}
    for stat, values in result.maps().items():
        path = kind_path(out_dir, "statmap", resolution=resolution, contrast=label,
                         desc=_label(desc), stat=stat)
        sidecar = {"Statistic": stat, "Description": descriptions[stat], **common}
        written[stat] = write_image(masked_to_image(values, mask, resolution), path, sidecar)
    return written
