"""Regional features of images (atlas region volumes or means) and their plausibility.

:func:`regional_features` turns every image of a cohort store into one value per atlas region
(:mod:`bids_genbrain.atlases`), streaming the store in blocks of rows:

* probability maps (``GM``, ``WM``, ``CSF``, ``GMmod`` ...: the ``probseg`` kinds) give the
  region's **volume** in mL, ``sum_v p_v * voxel volume``; on modulated GM (VBM) this is the
  native grey-matter volume of the region, on unmodulated GM the template-space GM volume;
* other maps (``T1w``, ``FLAIR``, ``FA`` ...) give the region's **mean** value.

Values are in the images' original units: the store's [0, 1] values are mapped back with its
per-modality normalisation (:func:`bids_genbrain.cohort.denormalise`; the store clips the
0.5 % most extreme voxel values of non-probability maps, as the model saw them).

:func:`regional_plausibility` holds a synthetic cohort's regional features against a real
cohort's, as BrainSynth does: per region, Cohen's d of synthetic against real (the mean
difference over the pooled SD, with a large-sample 95 % CI), and the age slope of the region
in each cohort (OLS with the other covariates, per decade, with its 95 % CI). The fits use the
project's voxel-wise GLM (:mod:`bids_genbrain.stats.glm`) on the ``(n_images, n_regions)``
feature array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse, stats

from ..arrays import iter_row_blocks
from ..atlases import Atlas
from ..cohort import CohortStore
from ..derivatives import modality_entities
from ..stats.glm import DesignError, fit_glm, make_design

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class RegionalFeatures:
    """One value per image and atlas region.

    Attributes
    ----------
    values : pandas.DataFrame, shape (n_images, n_regions)
        Columns: region names (regions with voxels on the grid), rows in the order asked.
    kind : {"volume", "mean"}
    unit : str
        ``mL`` for volumes, else the modality's own unit (``a.u.``).
    modality : str
    atlas : Atlas
    """

    values: pd.DataFrame
    kind: str
    unit: str
    modality: str
    atlas: Atlas

    @property
    def regions(self) -> pd.DataFrame:
        """``index``, ``name``, ``n_voxels`` of the columns, in column order."""
        return self.atlas.regions


def feature_kind(modality: str) -> str:
    """``volume`` for a probability map (``probseg``), ``mean`` for any other map."""
    return "volume" if modality_entities(modality)["suffix"] == "probseg" else "mean"


def region_matrix(atlas: Atlas, mask: np.ndarray) -> sparse.csr_matrix:
    """One-hot ``(n_voxels, n_regions)`` matrix of the mask's voxels (store order).

    Parameters
    ----------
    atlas : Atlas
    mask : ndarray of bool
        The store's brain mask.

    Returns
    -------
    scipy.sparse.csr_matrix
        Column ``j`` marks the voxels of ``atlas.regions.iloc[j]``.
    """
    labels = atlas.in_mask(mask)
    column = {int(index): j for j, index in enumerate(atlas.regions["index"])}
    voxels = np.flatnonzero(np.isin(labels, list(column)))
    cols = np.array([column[int(v)] for v in labels[voxels]], dtype=np.int64)
    return sparse.csr_matrix((np.ones(voxels.size), (voxels, cols)),
                             shape=(labels.size, len(column)))


def regional_features(store: CohortStore, atlas: Atlas, *, rows: Sequence[int] | None = None,
                      progress: bool = False) -> RegionalFeatures:
    """Volumes (probability maps) or means (other maps) of every atlas region, per image.

    Parameters
    ----------
    store : CohortStore
        Images of one modality.
    atlas : Atlas
        On the store's grid.
    rows : sequence of int, optional
        Store rows (default all), in the order wanted.
    progress : bool
        Show a progress bar.

    Returns
    -------
    RegionalFeatures

    Raises
    ------
    ValueError
        The store holds several modalities, or the atlas is on another grid.
    """
    if len(store.modalities) != 1:
        raise ValueError(f"regional features need a store of one modality, got "
                         f"{store.modalities}")
    if atlas.resolution != store.resolution:
        raise ValueError(f"atlas grid {atlas.resolution:g} mm differs from the store's "
                         f"{store.resolution:g} mm")
    modality = store.modalities[0]
    matrix = region_matrix(atlas, store.mask())
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    index = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.intp)
    sums = np.zeros((index.size, matrix.shape[1]))
    blocks = iter_row_blocks(store.data, index, n_rows=256)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, total=-(-index.size // 256), desc="regional features",
                      unit="block", leave=False)
    for positions, block in blocks:
        sums[positions] = np.asarray(matrix.T @ np.asarray(block, dtype=np.float64).T).T
    norm = store.normalisation[modality]
    raw = norm["lo"] * counts + (norm["hi"] - norm["lo"]) * sums  # sum of original values
    kind = feature_kind(modality)
    if kind == "volume":
        values, unit = raw * store.resolution**3 / 1000.0, "mL"
    else:
        values, unit = raw / counts, "a.u."
    table = pd.DataFrame(values, columns=list(atlas.regions["name"]))
    return RegionalFeatures(values=table, kind=kind, unit=unit, modality=modality, atlas=atlas)


def _slopes(values: np.ndarray, table: pd.DataFrame, age: str,
            covariates: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column age slope (per decade) with its 95 % CI, adjusted for ``covariates``."""
    usable = [c for c in covariates if c in table.columns and table[c].nunique() > 1]
    design = make_design(table.reset_index(drop=True), age, usable)
    fit = fit_glm(values, design)
    slope = fit.effect * 10.0
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(fit.t != 0, np.abs(slope / fit.t), 0.0)
    half = float(stats.t.ppf(0.975, design.df)) * se
    return slope, slope - half, slope + half


def regional_plausibility(real: RegionalFeatures, real_table: pd.DataFrame,
                          synthetic: RegionalFeatures, synthetic_table: pd.DataFrame, *,
                          age: str = "age", covariates: Sequence[str] = ("sex",)
                          ) -> pd.DataFrame:
    """Per region: Cohen's d of synthetic vs real, and the age slope in both cohorts.

    Parameters
    ----------
    real, synthetic : RegionalFeatures
        Same atlas, grid and modality.
    real_table, synthetic_table : pandas.DataFrame
        One row per image (in the features' order) with ``age`` and the covariates
        (categorical columns as strings).
    age : str
        The continuous column whose slope is reported (skipped when absent or constant).
    covariates : sequence of str
        Adjusted for in the slopes (those present and varying).

    Returns
    -------
    pandas.DataFrame
        One row per region: ``index``, ``region``, ``n_voxels``, ``unit``, ``mean_real``,
        ``sd_real``, ``mean_synthetic``, ``sd_synthetic``, ``cohens_d`` (synthetic - real,
        pooled SD), ``d_ci_low``, ``d_ci_high``, then ``age_slope_real``,
        ``age_slope_real_ci_low``, ``age_slope_real_ci_high`` and the same for synthetic
        (units per decade) when ``age`` varies in both.

    Raises
    ------
    ValueError
        Features on different atlases or of different kinds.
    """
    if list(real.values.columns) != list(synthetic.values.columns) or \
            real.kind != synthetic.kind or real.atlas.name != synthetic.atlas.name:
        raise ValueError("real and synthetic features differ in atlas, regions or kind")
    x, y = real.values.to_numpy(), synthetic.values.to_numpy()
    n_r, n_s = x.shape[0], y.shape[0]
    if n_r < 2 or n_s < 2:
        raise ValueError(f"need at least 2 images in each cohort, got {n_r} and {n_s}")
    pooled = pd.DataFrame({"cohort": ["real"] * n_r + ["synthetic"] * n_s})
    fit = fit_glm(np.vstack([x, y]), make_design(pooled, "cohort", levels=("real", "synthetic")))
    d = fit.d
    se_d = np.sqrt((n_r + n_s) / (n_r * n_s) + d**2 / (2.0 * (n_r + n_s)))
    out = pd.DataFrame({
        "index": real.regions["index"].to_numpy(),
        "region": real.values.columns,
        "n_voxels": real.regions["n_voxels"].to_numpy(),
        "unit": real.unit,
        "mean_real": x.mean(axis=0), "sd_real": x.std(axis=0, ddof=1),
        "mean_synthetic": y.mean(axis=0), "sd_synthetic": y.std(axis=0, ddof=1),
        "cohens_d": d, "d_ci_low": d - Z95 * se_d, "d_ci_high": d + Z95 * se_d,
    })
    for name, values, table in (("real", x, real_table), ("synthetic", y, synthetic_table)):
        if age not in table.columns or pd.to_numeric(table[age], errors="coerce").nunique() < 3:
            continue
        try:
            slope, low, high = _slopes(values, table, age, covariates)
        except DesignError:
            continue
        out[f"age_slope_{name}"] = slope
        out[f"age_slope_{name}_ci_low"] = low
        out[f"age_slope_{name}_ci_high"] = high
    return out


def plausibility_summary(table: pd.DataFrame) -> dict[str, float]:
    """Numbers that sum up :func:`regional_plausibility` over regions.

    Returns
    -------
    dict
        ``median_abs_d``; ``fraction_abs_d_below_0.2`` and ``..._0.5`` (regions whose
        synthetic mean is within a small / medium effect of the real one); when both slopes
        are present, ``r_age_slopes`` (Pearson r of the synthetic and real slopes over
        regions) and ``fraction_slope_in_real_ci`` (regions whose synthetic slope lies in the
        real slope's 95 % CI).
    """
    d = table["cohens_d"].abs()
    summary = {"median_abs_d": float(d.median()),
               "fraction_abs_d_below_0.2": float((d < 0.2).mean()),
               "fraction_abs_d_below_0.5": float((d < 0.5).mean())}
    if "age_slope_real" in table and "age_slope_synthetic" in table:
        a, b = table["age_slope_real"].to_numpy(), table["age_slope_synthetic"].to_numpy()
        ok = np.isfinite(a) & np.isfinite(b)
        summary["r_age_slopes"] = (float(np.corrcoef(a[ok], b[ok])[0, 1])
                                   if ok.sum() > 2 and a[ok].std() > 0 and b[ok].std() > 0
                                   else float("nan"))
        inside = (b >= table["age_slope_real_ci_low"]) & (b <= table["age_slope_real_ci_high"])
        summary["fraction_slope_in_real_ci"] = float(inside.mean())
    return summary
