"""Figures of the group report (nilearn plotting and matplotlib, written as SVG/PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402

from ..utils import atomic_path  # noqa: E402


def _save(fig, out: Path | str) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip("."), bbox_inches="tight", dpi=110)
    plt.close(fig)
    return out


def plot_statmap(img: nb.Nifti1Image | Path | str, out: Path | str, *, title: str,
                 threshold: float | None = None) -> Path:
    """Glass brain and orthogonal slices of a statistical map.

    Parameters
    ----------
    img : nibabel image or path
        A map on the MNI grid (t, d ...).
    out : path-like
        ``.png`` or ``.svg``.
    title : str
    threshold : float, optional
        Absolute value below which voxels are transparent (default: the 80th percentile of
        |value| over non-zero voxels).

    Returns
    -------
    pathlib.Path
    """
    from nilearn import plotting

    img = nb.load(img) if not isinstance(img, nb.Nifti1Image) else img
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    nonzero = np.abs(data[np.isfinite(data) & (data != 0)])
    if threshold is None:
        threshold = float(np.percentile(nonzero, 80)) if nonzero.size else 0.0
    vmax = float(nonzero.max()) if nonzero.size else 1.0
    from ..templates import load_template

    background = load_template(float(abs(img.affine[0, 0])), suffix="T1w")
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.4))
    plotting.plot_glass_brain(img, threshold=threshold, colorbar=True, plot_abs=False,
                              vmax=vmax, axes=axes[0], title=title, symmetric_cbar=True)
    plotting.plot_stat_map(img, threshold=threshold, display_mode="z", cut_coords=6,
                           axes=axes[1], colorbar=False, vmax=vmax, draw_cross=False,
                           bg_img=background, black_bg=False)
    return _save(fig, out)


def plot_memorization(check, raw_threshold: float, out: Path | str) -> Path:
    """The privacy gate: the paper's raw r, and distance to the closest record vs residual r.

    Parameters
    ----------
    check : bids_genbrain.evaluate.privacy.MemorizationCheck
    raw_threshold : float
        The paper's raw-r threshold, drawn as a line.
    out : path-like
    """
    table, base = check.table, check.baseline
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    max_r = table["max_r"].to_numpy(dtype=float)
    left.hist(max_r[np.isfinite(max_r)], bins=min(50, max(10, len(max_r) // 5)), color="#557",
              alpha=0.85)
    left.axvline(raw_threshold, color="#c00", ls="--", label=f"paper's r = {raw_threshold:g}")
    left.set(xlabel="highest raw Pearson r with a training image", ylabel="synthetic images",
             title="Raw r (reported, not gating)")
    left.legend(frameon=False, fontsize=8)
    right.scatter(base["dcr"], base["residual_r"], s=14, color="#999",
                  label="real new people (baseline)")
    flagged = table["flagged"].to_numpy(dtype=bool)
    right.scatter(table.loc[~flagged, "dcr"], table.loc[~flagged, "residual_r"], s=14,
                  color="#557", label="synthetic")
    if flagged.any():
        right.scatter(table.loc[flagged, "dcr"], table.loc[flagged, "residual_r"], s=24,
                      color="#c00", label="synthetic, excluded as copies")
    right.axvline(check.dcr_cut, color="#c00", ls="--", lw=1)
    right.axhline(check.residual_r_cut, color="#c00", ls="--", lw=1)
    right.set(xlabel="distance to the closest training record (RMS)",
              ylabel="mean-removed r with that record")
    right.set_title(f"Gate: {int(flagged.sum())} of {len(table)} excluded (copies: upper left)")
    right.legend(frameon=False, fontsize=8)
    return _save(fig, out)


def plot_examples(real_mean: nb.Nifti1Image, synthetic: Sequence[nb.Nifti1Image],
                  out: Path | str, *, labels: Sequence[str] = ()) -> Path:
    """Axial mid-slices: the real cohort's mean beside synthetic examples.

    Parameters
    ----------
    real_mean : nibabel image
    synthetic : sequence of nibabel images
        A few synthetic images (same grid).
    out : path-like
    labels : sequence of str
        Caption of each synthetic image (e.g. its conditions).
    """
    images = [real_mean, *synthetic]
    captions = ["real mean", *(labels or [f"synthetic {i + 1}" for i in range(len(synthetic))])]
    data = [np.asanyarray(img.dataobj, dtype=np.float32) for img in images]
    vmax = float(np.percentile(np.concatenate([d[d > 0].ravel() for d in data if (d > 0).any()]),
                               99.5)) if any((d > 0).any() for d in data) else 1.0
    z = data[0].shape[2] // 2 + data[0].shape[2] // 10
    fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.8))
    for ax, arr, caption in zip(np.atleast_1d(axes), data, captions, strict=True):
        ax.imshow(np.rot90(arr[:, :, z]), cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    return _save(fig, out)
