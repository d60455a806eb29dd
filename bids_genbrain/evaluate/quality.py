"""Image quality and distribution metrics for synthetic, enhanced or imputed images.

* :func:`rmse`, :func:`psnr` over brain voxels (MONAI's ``RMSEMetric``/``PSNRMetric``);
* :func:`ssim`, :func:`ms_ssim`: 3D SSIM and multi-scale SSIM on the voxel grid (MONAI's
  ``SSIMMetric``/``MultiScaleSSIMMetric``, Gaussian window 11, sigma 1.5);
* :func:`mmd`: maximum mean discrepancy between a real and a synthetic set of images, with a
  linear or Gaussian kernel, from Gram matrices accumulated over voxel chunks;
* :func:`ms_ssim_diversity`: mean MS-SSIM between random pairs of images of one set (higher
  means less diverse; a collapsed generator gives 1).

Volumes are 3D arrays on the grid; sets of images are ``(n_images, n_voxels)`` arrays (e.g.
:class:`numpy.memmap` cohort stores) with the 3D boolean mask their voxels come from.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, RMSEMetric, SSIMMetric
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from ..stats.glm import DEFAULT_MEMORY_MB

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Scale weights of Wang et al. (2003), finest first."""


def _pair(reference: ArrayLike, test: ArrayLike,
          mask: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(test, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"images differ in shape: {ref.shape} vs {out.shape}")
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != ref.shape:
            raise ValueError(f"mask shape {keep.shape} differs from image shape {ref.shape}")
        ref, out = ref[keep], out[keep]
    return ref.ravel(), out.ravel()


def _tensor(values: np.ndarray) -> torch.Tensor:
    """(batch, channel, *spatial) float tensor of one image."""
    return torch.as_tensor(values, dtype=torch.float64)[None, None]


def rmse(reference: ArrayLike, test: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Root mean squared error over the mask's voxels.

    Parameters
    ----------
    reference, test : array-like, same shape
        E.g. 3D volumes on the grid, or masked voxel vectors.
    mask : array-like of bool, same shape, optional
        Brain voxels (default: every element).

    Returns
    -------
    float
    """
    ref, out = _pair(reference, test, mask)
    return float(RMSEMetric(reduction="none")(_tensor(out), _tensor(ref)).item())


def psnr(reference: ArrayLike, test: ArrayLike, *, mask: ArrayLike | None = None,
         data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio ``20 log10(data_range) - 10 log10(MSE)`` in dB.

    Parameters
    ----------
    reference, test : array-like, same shape
    mask : array-like of bool, optional
        Brain voxels (default: every element).
    data_range : float, optional
        Dynamic range; default: ``max - min`` of the reference within the mask.

    Returns
    -------
    float
        ``inf`` for identical images.
    """
    ref, out = _pair(reference, test, mask)
    data_range = float(np.ptp(ref)) if data_range is None else float(data_range)
    if data_range <= 0:
        raise ValueError("data_range must be positive (is the reference constant?)")
    metric = PSNRMetric(max_val=data_range, reduction="none")
    return float(metric(_tensor(out), _tensor(ref)).item())


def _volumes(reference: ArrayLike, test: ArrayLike,
             data_range: float | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    ref = np.asarray(reference, dtype=np.float32)
    out = np.asarray(test, dtype=np.float32)
    if ref.ndim != 3 or ref.shape != out.shape:
        raise ValueError(f"need two 3D volumes of one shape, got {ref.shape} and {out.shape}")
    data_range = float(np.ptp(ref)) if data_range is None else float(data_range)
    if data_range <= 0:
        raise ValueError("data_range must be positive (is the reference constant?)")
    return (torch.from_numpy(np.ascontiguousarray(ref))[None, None],
            torch.from_numpy(np.ascontiguousarray(out))[None, None], data_range)


def ssim(reference: ArrayLike, test: ArrayLike, *, data_range: float | None = None,
         kernel_size: int = 11, kernel_sigma: float = 1.5) -> float:
    """3D structural similarity of two volumes on the grid (mean over the valid window).

    Parameters
    ----------
    reference, test : array-like, shape (X, Y, Z)
    data_range : float, optional
        Dynamic range; default ``max - min`` of the reference.
    kernel_size, kernel_sigma
        Gaussian window.

    Returns
    -------
    float
        1 for identical volumes.
    """
    ref, out, data_range = _volumes(reference, test, data_range)
    metric = SSIMMetric(spatial_dims=3, data_range=data_range, win_size=kernel_size,
                        kernel_sigma=kernel_sigma, reduction="none")
    return float(metric(out, ref).item())


def ms_ssim_weights(shape: tuple[int, ...], kernel_size: int = 11,
                    scales: int | None = None) -> tuple[float, ...]:
    """Scale weights for MS-SSIM on volumes of ``shape``.

    Brain grids are too small for the five scales of Wang et al. with an 11-voxel window
    (91 voxels at 2 mm), so the largest number of scales MONAI accepts for ``shape`` is used
    (or ``scales``), with the first weights renormalised to sum to 1.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape.
    kernel_size : int
        Window size.
    scales : int, optional
        Number of scales (1 to 5); default: as many as fit.

    Returns
    -------
    tuple of float
    """
    def fits(k: int) -> bool:
        return all(s // max(1, k - 1) ** 2 > kernel_size - 1 for s in shape)

    if scales is None:
        candidates = [k for k in range(1, len(MS_SSIM_WEIGHTS) + 1) if fits(k)]
        if not candidates:
            raise ValueError(f"volumes of shape {shape} are smaller than the window "
                             f"{kernel_size}")
        scales = max(candidates)
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS) or not fits(scales):
        raise ValueError(f"{scales} scales with window {kernel_size} do not fit shape {shape}")
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    return tuple(float(w) for w in weights / weights.sum())


def ms_ssim(reference: ArrayLike, test: ArrayLike, *, data_range: float | None = None,
            kernel_size: int = 11, kernel_sigma: float = 1.5,
            scales: int | None = None) -> float:
    """3D multi-scale SSIM of two volumes on the grid.

    Parameters
    ----------
    reference, test : array-like, shape (X, Y, Z)
    data_range : float, optional
        Dynamic range; default ``max - min`` of the reference.
    kernel_size, kernel_sigma
        Gaussian window.
    scales : int, optional
        Number of scales (see :func:`ms_ssim_weights`).

    Returns
    -------
    float
        1 for identical volumes.
    """
    ref, out, data_range = _volumes(reference, test, data_range)
    metric = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=data_range, kernel_size=kernel_size,
        kernel_sigma=kernel_sigma, weights=ms_ssim_weights(ref.shape[2:], kernel_size, scales),
        reduction="none")
    return float(metric(out, ref).item())


def _as_set(images: ArrayLike, name: str) -> np.ndarray:
    array = images if hasattr(images, "shape") and hasattr(images, "dtype") else \
        np.asarray(images)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n_images >= 2, n_voxels), got {array.shape}")
    return array  # type: ignore[return-value]


def gram_matrix(*sets: ArrayLike, chunk_size: int | None = None,
                memory_mb: float = DEFAULT_MEMORY_MB) -> np.ndarray:
    """Inner products of the pooled images after removing their mean image, by voxel chunks.

    Parameters
    ----------
    *sets : array-like, shape (n_k, n_voxels)
        One or more sets of images on the same voxels, pooled in order; each is read chunk
        by chunk (never concatenated whole).
    chunk_size : int, optional
        Voxels read at a time (default from ``memory_mb``).
    memory_mb : float
        Budget of one ``(n_images, chunk)`` float64 block.

    Returns
    -------
    ndarray, shape (sum n_k, sum n_k)
        ``(x_i - m) . (x_j - m)`` with ``m`` the pooled mean image; distances and MMD do not
        change with the centring, which avoids cancellation for large intensities.
    """
    arrays = [_as_set(s, "images") for s in sets]
    n_vox = arrays[0].shape[1]
    if any(a.shape[1] != n_vox for a in arrays):
        raise ValueError(f"sets differ in voxel count: {[a.shape[1] for a in arrays]}")
    n = sum(a.shape[0] for a in arrays)
    if chunk_size is None:
        chunk_size = max(1, int(memory_mb * 2**20 // (8 * 2 * n)))
    gram = np.zeros((n, n))
    for a in range(0, n_vox, chunk_size):
        block = np.vstack([np.asarray(x[:, a:a + chunk_size], dtype=np.float64)
                           for x in arrays])
        block -= block.mean(axis=0)
        gram += block @ block.T
    return gram


def mmd(real: ArrayLike, synthetic: ArrayLike, *, kernel: Literal["rbf", "linear"] = "rbf",
        bandwidth: float | None = None, unbiased: bool = True, chunk_size: int | None = None,
        memory_mb: float = DEFAULT_MEMORY_MB) -> float:
    """Squared maximum mean discrepancy between a real and a synthetic set of images.

    Parameters
    ----------
    real : array-like, shape (n_real, n_voxels)
    synthetic : array-like, shape (n_synthetic, n_voxels)
    kernel : {"rbf", "linear"}
        ``exp(-|x - y|^2 / (2 bandwidth^2))`` or ``x . y``.
    bandwidth : float, optional
        Gaussian kernel width; default: the median distance between distinct images of the
        pooled sets (median heuristic).
    unbiased : bool
        U-statistic (Gretton et al. 2012, eq. 3: diagonal terms left out; can be slightly
        negative) or the biased V-statistic (>= 0, 0 for identical sets).
    chunk_size, memory_mb
        Voxel chunking of the Gram matrix (:func:`gram_matrix`).

    Returns
    -------
    float
    """
    x, y = _as_set(real, "real"), _as_set(synthetic, "synthetic")
    m, n = x.shape[0], y.shape[0]
    gram = gram_matrix(x, y, chunk_size=chunk_size, memory_mb=memory_mb)
    if kernel == "linear":
        k = gram
    elif kernel == "rbf":
        sq = np.clip(np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram, 0, None)
        if bandwidth is None:
            bandwidth = float(np.median(np.sqrt(sq[np.triu_indices(m + n, 1)])))
        if not bandwidth > 0:
            raise ValueError("bandwidth must be positive (are all images identical?)")
        k = np.exp(-sq / (2.0 * bandwidth**2))
    else:
        raise ValueError(f"kernel must be 'rbf' or 'linear', got {kernel!r}")
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    if unbiased:
        xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return float(xx + yy - 2.0 * kxy.mean())


def _sample_pairs(n: int, n_pairs: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    total = n * (n - 1) // 2
    if n_pairs >= total:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n_pairs:
        i, j = sorted(rng.choice(n, size=2, replace=False).tolist())
        pairs.add((i, j))
    return sorted(pairs)


def ms_ssim_diversity(
    images: ArrayLike,
    mask: ArrayLike,
    *,
    n_pairs: int = 100,
    seed: int = 0,
    data_range: float | None = None,
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
    scales: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> float:
    """Mean MS-SSIM between random distinct pairs of images of one set.

    Parameters
    ----------
    images : array-like, shape (n_images, n_voxels)
        Masked images (e.g. a synthetic cohort store).
    mask : array-like of bool, shape (X, Y, Z)
        The grid mask the voxels come from (C order); volumes are zero outside it.
    n_pairs : int
        Pairs drawn without repetition (all pairs when there are fewer).
    seed : int
        Seed of the pair draw.
    data_range : float, optional
        Dynamic range; default ``max - min`` over all images.
    kernel_size, kernel_sigma, scales
        See :func:`ms_ssim`.
    batch_size : int
        Pairs evaluated together.
    progress : bool
        Show a progress bar.

    Returns
    -------
    float
        In [0, 1]; higher means less diverse.
    """
    data = _as_set(images, "images")
    keep = np.asarray(mask, dtype=bool)
    if keep.ndim != 3 or int(keep.sum()) != data.shape[1]:
        raise ValueError(f"mask must be 3D with {data.shape[1]} voxels, got {keep.shape} "
                         f"with {int(keep.sum())}")
    if data_range is None:
        lo = min(float(np.min(data[i])) for i in range(data.shape[0]))
        hi = max(float(np.max(data[i])) for i in range(data.shape[0]))
        data_range = max(hi, 0.0) - min(lo, 0.0)  # the background is 0
    if not data_range > 0:
        raise ValueError("data_range must be positive (are all images zero?)")
    metric = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=data_range, kernel_size=kernel_size,
        kernel_sigma=kernel_sigma, weights=ms_ssim_weights(keep.shape, kernel_size, scales),
        reduction="none")

    def volume(row: int) -> np.ndarray:
        vol = np.zeros(keep.shape, dtype=np.float32)
        vol[keep] = data[row]
        return vol

    pairs = _sample_pairs(data.shape[0], n_pairs, np.random.default_rng(seed))
    values = []
    for a in tqdm(range(0, len(pairs), batch_size), desc="MS-SSIM diversity", unit="batch",
                  disable=not progress, leave=False):
        batch = pairs[a:a + batch_size]
        first = torch.from_numpy(np.stack([volume(i) for i, _ in batch]))[:, None]
        second = torch.from_numpy(np.stack([volume(j) for _, j in batch]))[:, None]
        values.append(metric(second, first).reshape(-1).numpy())
    return float(np.concatenate(values).mean())
