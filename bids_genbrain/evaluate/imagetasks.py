"""Evaluation of enhanced and imputed images against the real ones (the paper's Figures 3-4).

* :func:`image_metrics`: PSNR and RMSE on brain voxels, 3D-SSIM and MS-SSIM on the grid, for
  images in [0, 1] (store space: each modality's robust range, see
  :func:`bids_genbrain.cohort.normalise`);
* :func:`mean_ci` and :func:`paired_test`: per-image metrics summarised with a t interval, and
  two methods compared on the same images (paired t-test and Wilcoxon signed-rank test);
* :func:`effect_similarity`: whether outputs carry the biology — cosine between the age (or
  sex) t-map of a method's outputs and that of the real images of the same participants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .quality import ms_ssim, psnr, rmse, ssim

METRICS = ("PSNR", "RMSE", "SSIM", "MS_SSIM")
"""Metric names of :func:`image_metrics` (higher is better except RMSE)."""


def _grid(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    vol = np.zeros(mask.shape, dtype=np.float32)
    vol[mask] = values
    return vol


def image_metrics(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Quality of one image against the real one.

    Parameters
    ----------
    reference, test : ndarray, shape (n_voxels,)
        Brain-mask voxels (mask order) in [0, 1].
    mask : ndarray of bool, shape (X, Y, Z)

    Returns
    -------
    dict
        ``PSNR`` (dB, data range 1) and ``RMSE`` over brain voxels; ``SSIM`` and ``MS_SSIM``
        of the volumes (zero outside the brain) with data range 1.
    """
    ref, out = _grid(reference, mask), _grid(test, mask)
    return {"PSNR": psnr(reference, test, data_range=1.0), "RMSE": rmse(reference, test),
            "SSIM": ssim(ref, out, data_range=1.0), "MS_SSIM": ms_ssim(ref, out, data_range=1.0)}


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean with its t confidence interval.

    Parameters
    ----------
    values : sequence of float
        One value per image (at least 2).
    level : float

    Returns
    -------
    mean, low, high : float
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError("need at least two values for an interval")
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def paired_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Compare two methods on the same images.

    Parameters
    ----------
    a, b : sequence of float
        A metric per image for each method, in the same image order.
    level : float

    Returns
    -------
    dict
        ``mean_diff`` (a - b) with ``ci_low``/``ci_high``, ``p_t`` (paired t-test) and
        ``p_wilcoxon`` (signed-rank; 1 when every difference is 0).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.shape} vs {y.shape}")
    diff = x - y
    mean, low, high = mean_ci(diff, level)
    if np.allclose(diff, 0):
        return {"mean_diff": mean, "ci_low": low, "ci_high": high, "p_t": 1.0,
                "p_wilcoxon": 1.0}
    return {"mean_diff": mean, "ci_low": low, "ci_high": high,
            "p_t": float(stats.ttest_rel(x, y).pvalue),
            "p_wilcoxon": float(stats.wilcoxon(x, y).pvalue)}


def effect_similarity(images: np.ndarray, reference: np.ndarray, table: pd.DataFrame,
                      contrast: str, confounds: Sequence[str] = ()) -> float:
    """Cosine between the t-map of ``contrast`` in ``images`` and in ``reference``.

    Parameters
    ----------
    images, reference : ndarray, shape (n_images, n_voxels)
        A method's outputs and the real images of the same participants, row for row.
    table : pandas.DataFrame
        One row per image with ``contrast`` and ``confounds`` columns (e.g. age, sex).
    contrast : str
    confounds : sequence of str

    Returns
    -------
    float
        In [-1, 1]; 1 when the outputs show the real images' effect pattern.
    """
    from ..stats.glm import fit_glm, make_design

    design = make_design(table.reset_index(drop=True), contrast, list(confounds))
    t_out = fit_glm(np.asarray(images), design).t
    t_ref = fit_glm(np.asarray(reference), design).t
    ok = np.isfinite(t_out) & np.isfinite(t_ref)
    a, b = t_out[ok], t_ref[ok]
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
