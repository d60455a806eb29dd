"""Scanner artefacts of native images: bias field, Rician noise, k-space motion ghosting."""

from __future__ import annotations

import numpy as np
import scipy.fft


def _legendre2(n: int) -> np.ndarray:
    """Legendre polynomials of degree 0..2 on n points in [-1, 1], shape (n, 3)."""
    t = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return np.stack([np.ones_like(t), t, 1.5 * t**2 - 0.5], axis=1)


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator,
               strength: float) -> np.ndarray:
    """A smooth multiplicative bias over the field of view.

    ``exp(b)`` with ``b`` a random polynomial of total degree <= 2 in the voxel coordinates
    (scaled to [-1, 1]), normalised so that ``max |b| = strength``.

    Parameters
    ----------
    shape : tuple of int
    rng : numpy.random.Generator
    strength : float
        Half span of the log intensity (0.2: about +-20 %).

    Returns
    -------
    ndarray, shape ``shape``, float32
    """
    degree = np.add.outer(np.add.outer(np.arange(3), np.arange(3)), np.arange(3))
    coef = rng.standard_normal((3, 3, 3)) * (degree <= 2) * (degree > 0)
    bases = [_legendre2(n) for n in shape]
    log_bias = np.einsum("abc,ia,jb,kc->ijk", coef, *bases, optimize=True)
    peak = float(np.abs(log_bias).max())
    if peak > 0:
        log_bias *= strength / peak
    return np.exp(log_bias).astype(np.float32)


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)


def motion_ghosting(image: np.ndarray, rng: np.random.Generator, *, max_shift_mm: float,
                    voxel_size: tuple[float, float, float]) -> tuple[np.ndarray, dict]:
    """Ghosting from a head movement during the acquisition (k-space).

    The k-space lines acquired after a random time (along a random phase-encoding axis) see
    the head translated by a random shift, i.e. get a linear phase ramp.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
    rng : numpy.random.Generator
    max_shift_mm : float
        Largest translation.
    voxel_size : tuple of float

    Returns
    -------
    image : ndarray, float32
    info : dict
        ``PhaseEncodingAxis``, ``MovedFraction``, ``ShiftMM`` (for sidecars).
    """
    axis = int(rng.integers(2))
    moved_fraction = float(rng.uniform(0.2, 0.5))
    shift_mm = rng.uniform(-1, 1, 3) * max_shift_mm
    kspace = scipy.fft.fftn(image.astype(np.complex64))
    freqs = [scipy.fft.fftfreq(n).astype(np.float32) for n in image.shape]
    phase = np.zeros(image.shape, dtype=np.float32)
    for d in range(3):
        shape = [1, 1, 1]
        shape[d] = image.shape[d]
        phase = phase + (freqs[d] * np.float32(shift_mm[d] / voxel_size[d])).reshape(shape)
    order = np.argsort(np.argsort(freqs[axis]))  # acquisition order: -kmax .. +kmax
    late = order >= int(round((1 - moved_fraction) * image.shape[axis]))
    mask_shape = [1, 1, 1]
    mask_shape[axis] = image.shape[axis]
    late = late.reshape(mask_shape)
    kspace = np.where(late, kspace * np.exp(-2j * np.pi * phase).astype(np.complex64), kspace)
    out = np.abs(scipy.fft.ifftn(kspace)).astype(np.float32)
    info = {"PhaseEncodingAxis": axis, "MovedFraction": round(moved_fraction, 4),
            "ShiftMM": [round(float(s), 4) for s in shift_mm]}
    return out, info
