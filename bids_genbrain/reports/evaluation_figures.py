"""Figures of the ``genbrain evaluate`` and ``genbrain augment`` reports (matplotlib, SVG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import _save, plt


def _error_bars(value: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Matplotlib's (2, n) error bars of an interval around ``value``, clipped at 0.

    An interval over identical draws (one synthetic set) has bounds that differ from its
    mean by rounding, which matplotlib refuses as negative error bars.
    """
    value = np.asarray(value, dtype=float)
    bars = np.stack([value - np.asarray(low, dtype=float), np.asarray(high, dtype=float) - value])
    return np.clip(bars, 0.0, None)


def plot_metric_vs_ratio(metrics: pd.DataFrame, metric: str, out: Path | str, *,
                         best_ratio: float | None = None, title: str = "",
                         ylabel: str | None = None) -> Path:
    """A metric against the synthetic:real ratio, one line with its 95 % CI band per test set.

    Parameters
    ----------
    metrics : pandas.DataFrame
        ``ratio``, ``test_set``, ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high``.
    metric : str
        ``auroc``, ``accuracy``, ``mae`` ...
    out : path-like
    best_ratio : float, optional
        Marked with a dotted line (the ratio chosen on validation).
    title, ylabel : str

    Returns
    -------
    pathlib.Path
    """
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, rows in metrics.groupby("test_set", sort=False):
        rows = rows.sort_values("ratio")
        line, = ax.plot(rows["ratio"], rows[metric], marker="o", ms=3, label=name)
        low, high = rows.get(f"{metric}_ci_low"), rows.get(f"{metric}_ci_high")
        if low is not None and high is not None:
            ax.fill_between(rows["ratio"], low, high, color=line.get_color(), alpha=0.15,
                            lw=0)
    if best_ratio is not None:
        ax.axvline(best_ratio, color="#555", ls=":", lw=1,
                   label=f"chosen on validation (ratio {best_ratio:g})")
    ax.set(xlabel="synthetic : real ratio of the training set", ylabel=ylabel or metric,
           title=title)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_similarity_curve(table: pd.DataFrame, out: Path | str, *, title: str = "") -> Path:
    """Cosine similarity of t maps against K (samples averaged), synthetic vs real samples.

    Parameters
    ----------
    table : pandas.DataFrame
        ``effect``, ``cohort`` (``synthetic`` / ``real``), ``average``, ``cosine_t``,
        ``ci_low``, ``ci_high``.
    out : path-like
    title : str
    """
    effects = list(dict.fromkeys(table["effect"]))
    fig, axes = plt.subplots(1, len(effects), figsize=(4.2 * len(effects), 3.4), squeeze=False)
    for ax, effect in zip(axes[0], effects, strict=True):
        rows = table[table["effect"] == effect]
        syn = rows[rows["cohort"] == "synthetic"].sort_values("average")
        ax.errorbar(syn["average"], syn["cosine_t"],
                    yerr=_error_bars(syn["cosine_t"], syn["ci_low"], syn["ci_high"]),
                    marker="o", capsize=3, label="synthetic (K samples averaged)")
        real = rows[rows["cohort"] == "real"]
        if len(real):
            value, low, high = (float(real[c].iloc[0]) for c in ("cosine_t", "ci_low", "ci_high"))
            ax.axhline(value, color="#c60", label=f"real sample, n = {int(real['n'].iloc[0])}")
            ax.axhspan(low, high, color="#c60", alpha=0.15, lw=0)
        ax.set(xlabel="K (samples averaged per image)", ylabel="cosine of t maps",
               title=effect)
        ax.set_xticks(sorted(syn["average"].unique()) or [1])
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def plot_regional_d(table: pd.DataFrame, out: Path | str, *, top: int = 40,
                    title: str = "") -> Path:
    """Cohen's d (synthetic - real) of the regions with the largest |d|, with 95 % CIs.

    Parameters
    ----------
    table : pandas.DataFrame
        ``region``, ``cohens_d``, ``d_ci_low``, ``d_ci_high``.
    out : path-like
    top : int
        Regions shown (largest |d| first).
    """
    rows = table.reindex(table["cohens_d"].abs().sort_values(ascending=False).index)[:top]
    rows = rows.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.18 * len(rows) + 1.2))
    colours = np.where(rows["cohens_d"] > 0, "#c44", "#46c")
    ax.barh(np.arange(len(rows)), rows["cohens_d"], color=colours, alpha=0.8,
            xerr=[rows["cohens_d"] - rows["d_ci_low"], rows["d_ci_high"] - rows["cohens_d"]],
            error_kw={"lw": 0.6})
    ax.set_yticks(np.arange(len(rows)), [str(r).replace("_", " ") for r in rows["region"]],
                  fontsize=6)
    for x in (-0.5, -0.2, 0.2, 0.5):
        ax.axvline(x, color="#999", lw=0.5, ls=":")
    ax.axvline(0, color="#333", lw=0.8)
    ax.set(xlabel="Cohen's d, synthetic - real", title=title)
    return _save(fig, out)


def plot_regional_map(values: np.ndarray, atlas, out: Path | str, *, title: str) -> Path:
    """A regional value painted into its atlas regions (glass brain).

    Parameters
    ----------
    values : ndarray, shape (n_regions,)
        One value per region of ``atlas.regions``.
    atlas : bids_genbrain.atlases.Atlas
    out : path-like
    title : str
    """
    import nibabel as nb
    from nilearn import plotting

    labels = np.asanyarray(atlas.image.dataobj).astype(np.int64)
    lookup = np.zeros(int(atlas.labels["index"].max()) + 1, dtype=np.float32)
    lookup[atlas.regions["index"].to_numpy()] = np.nan_to_num(np.asarray(values, dtype=float))
    img = nb.Nifti1Image(lookup[labels], atlas.image.affine)
    vmax = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    fig, ax = plt.subplots(figsize=(8, 3))
    plotting.plot_glass_brain(img, axes=ax, colorbar=True, plot_abs=False, title=title,
                              vmax=max(vmax, 1e-6), vmin=-max(vmax, 1e-6), cmap="RdBu_r",
                              threshold=None)
    return _save(fig, out)


def plot_age_slopes(table: pd.DataFrame, out: Path | str, *, unit: str, title: str = "") -> Path:
    """Each region's age slope in the synthetic against the real cohort.

    Parameters
    ----------
    table : pandas.DataFrame
        ``age_slope_real``, ``age_slope_synthetic`` and their ``_ci_low``/``_ci_high``.
    out : path-like
    unit : str
        Unit of the regional values.
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    x, y = table["age_slope_real"], table["age_slope_synthetic"]
    ax.errorbar(x, y, xerr=_error_bars(x, table["age_slope_real_ci_low"],
                                       table["age_slope_real_ci_high"]),
                yerr=_error_bars(y, table["age_slope_synthetic_ci_low"],
                                 table["age_slope_synthetic_ci_high"]),
                fmt="o", ms=3, lw=0.4, alpha=0.7)
    both = np.concatenate([x, y])
    lo, hi = float(np.nanmin(both)), float(np.nanmax(both))
    ax.plot([lo, hi], [lo, hi], color="#999", ls="--", lw=0.8, label="identity")
    ax.set(xlabel=f"real age slope ({unit} per decade)",
           ylabel=f"synthetic age slope ({unit} per decade)", title=title)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, out)


def plot_distances(values: Sequence[float], labels: Sequence[str], out: Path | str, *,
                   xlabel: str, title: str = "") -> Path:
    """Histograms of one measure for a few groups (e.g. memorization distances)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for data, label in zip(values, labels, strict=True):
        data = np.asarray(data, dtype=float)
        data = data[np.isfinite(data)]
        if data.size:
            ax.hist(data, bins=min(40, max(8, data.size // 4)), alpha=0.55, label=label)
    ax.set(xlabel=xlabel, ylabel="images", title=title)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, out)
