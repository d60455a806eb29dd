"""Corruption model for enhancement training: k-space head motion and Gaussian/Rician noise.

An enhancement model learns ``corrupted scan -> clean scan`` from pairs made on the fly: every
training step corrupts each clean image afresh with a draw from this model (GenBrain's
parameters, below). Everything is seeded by a :class:`numpy.random.Generator`.

Motion (Shaw et al. 2019, as TorchIO's ``RandomMotion``)
    The head takes a sequence of rigid poses during the acquisition. The number of motion
    events is drawn uniformly from ``1 .. max_events`` and their times uniformly in the
    acquisition (0 = first k-space line, 1 = last); before the first event the head is in
    the reference pose. Each event's pose has, per axis, a rotation of ``s * min(R, 30)``
    degrees with ``R ~ Poisson(10)`` and a translation of ``s * min(T, 10)`` mm with
    ``T ~ Poisson(5)``, ``s`` a random sign (rotations about the centre of the field of
    view). The k-space of the corrupted image takes each segment of phase-encoding lines
    (along one axis, acquired from ``-k_max`` to ``+k_max``) from the Fourier transform of
    the image in the pose of that time. As in TorchIO, the segment holding the centre of
    k-space is taken from the reference pose, so the image keeps its position (a
    registered, MNI-space target stays aligned) and the motion shows as ghosting and blur.
Noise
    Gaussian (``x + sigma * n``) or Rician (``|x + sigma * (n1 + i n2)|``, the magnitude of
    complex Gaussian noise) with ``sigma`` drawn from ``{0, 5, ..., 50}`` in the image's raw
    intensity units (not normalised), the kind drawn with equal probability.

A corruption applies motion with probability ``motion_probability`` and then noise with
probability ``noise_probability`` (both 1/2 and 1 by default, so that the model sees clean,
noisy, moved and moved-and-noisy inputs; ``sigma = 0`` is part of the grid). These
probabilities and ``max_events`` are this project's choice; the paper gives the pose and
noise distributions above.

References
----------
Shaw, Sudre, Varsavsky, Ourselin, Modat, "MRI k-Space Motion Artefact Augmentation: Model
Robustness and Task-Specific Uncertainty", MIDL 2019.
Perez-Garcia, Sparks, Ourselin, "TorchIO", Comput. Methods Programs Biomed. 2021.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.fft
from scipy.ndimage import affine_transform

NOISE_KINDS = ("gaussian", "rician")


@dataclass(frozen=True)
class CorruptionConfig:
    """Distribution of corruptions (defaults: GenBrain's parameters).

    Parameters
    ----------
    max_rotation_deg, max_translation_mm : float
        Truncation of each axis's rotation (degrees) and translation (mm) per pose.
    rotation_poisson_mean, translation_poisson_mean : float
        Means of the Poisson draws of the magnitudes.
    max_events : int
        Motion events are ``1 .. max_events`` (uniform).
    motion_probability : float
        Probability that a corruption contains motion.
    noise_probability : float
        Probability that a corruption adds noise (then ``sigma`` from ``noise_sigmas``).
    noise_sigmas : tuple of float
        Noise levels in raw intensity units, drawn uniformly.
    noise_kinds : tuple of str
        Subset of ``("gaussian", "rician")``, drawn uniformly.
    """

    max_rotation_deg: float = 30.0
    max_translation_mm: float = 10.0
    rotation_poisson_mean: float = 10.0
    translation_poisson_mean: float = 5.0
    max_events: int = 4
    motion_probability: float = 0.5
    noise_probability: float = 1.0
    noise_sigmas: tuple[float, ...] = tuple(float(s) for s in range(0, 55, 5))
    noise_kinds: tuple[str, ...] = NOISE_KINDS

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError("max_events must be >= 1")
        for name in ("motion_probability", "noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if not self.noise_sigmas or min(self.noise_sigmas) < 0:
            raise ValueError("noise_sigmas must be non-negative and not empty")
        bad = set(self.noise_kinds) - set(NOISE_KINDS)
        if bad or not self.noise_kinds:
            raise ValueError(f"noise_kinds must be a subset of {NOISE_KINDS}, got "
                             f"{self.noise_kinds}")
        object.__setattr__(self, "noise_sigmas", tuple(float(s) for s in self.noise_sigmas))
        object.__setattr__(self, "noise_kinds", tuple(self.noise_kinds))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in task checkpoints and sidecars)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorruptionConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class MotionEvent:
    """The head moves at ``time`` (fraction of the acquisition) into a new rigid pose."""

    time: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]


@dataclass(frozen=True)
class Motion:
    """A motion history: phase-encoding axis and the events, in time order."""

    axis: int
    events: tuple[MotionEvent, ...] = ()


@dataclass(frozen=True)
class Corruption:
    """One drawn corruption (what :func:`apply_corruption` does to an image)."""

    motion: Motion | None = None
    noise_kind: str | None = None
    noise_sigma: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for sidecars and logs)."""
        return asdict(self)


def draw_motion(rng: np.random.Generator, config: CorruptionConfig = CorruptionConfig(),
                *, ndim: int = 3) -> Motion:
    """Draw a motion history from the model of the module docstring.

    Parameters
    ----------
    rng : numpy.random.Generator
    config : CorruptionConfig
    ndim : int
        Image dimensions (the phase-encoding axis is one of them).

    Returns
    -------
    Motion
    """
    axis = int(rng.integers(ndim))
    n_events = int(rng.integers(1, config.max_events + 1))
    times = np.sort(rng.uniform(0.0, 1.0, n_events))
    events = []
    for t in times:
        rot = np.minimum(rng.poisson(config.rotation_poisson_mean, 3), config.max_rotation_deg)
        trans = np.minimum(rng.poisson(config.translation_poisson_mean, 3),
                           config.max_translation_mm)
        rot = rot * rng.choice([-1.0, 1.0], 3)
        trans = trans * rng.choice([-1.0, 1.0], 3)
        events.append(MotionEvent(float(t), tuple(float(v) for v in rot),
                                  tuple(float(v) for v in trans)))
    return Motion(axis, tuple(events))


def draw_corruption(rng: np.random.Generator,
                    config: CorruptionConfig = CorruptionConfig()) -> Corruption:
    """Draw motion (with ``motion_probability``) and noise (kind and sigma).

    Parameters
    ----------
    rng : numpy.random.Generator
    config : CorruptionConfig

    Returns
    -------
    Corruption
    """
    motion = draw_motion(rng, config) if rng.uniform() < config.motion_probability else None
    kind, sigma = None, 0.0
    if rng.uniform() < config.noise_probability:
        kind = str(config.noise_kinds[int(rng.integers(len(config.noise_kinds)))])
        sigma = float(config.noise_sigmas[int(rng.integers(len(config.noise_sigmas)))])
    return Corruption(motion, kind, sigma)


def rotation_matrix(rotation_deg: Sequence[float]) -> np.ndarray:
    """Rotation about the x, then y, then z axis (degrees) as a 3x3 matrix ``Rz Ry Rx``."""
    ax, ay, az = np.radians(np.asarray(rotation_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def move(volume: np.ndarray, rotation_deg: Sequence[float], translation_mm: Sequence[float],
         voxel_size: Sequence[float] = (1.0, 1.0, 1.0), *, order: int = 1) -> np.ndarray:
    """The volume with the head rotated about the grid centre and translated (mm).

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
    rotation_deg : sequence of 3 float
        See :func:`rotation_matrix`.
    translation_mm : sequence of 3 float
    voxel_size : sequence of 3 float
        Voxel edges in mm along the array axes.
    order : int
        Spline order of the interpolation (1: linear).

    Returns
    -------
    ndarray of float32
        Zero where the moved head leaves the field of view.
    """
    vox = np.asarray(voxel_size, dtype=np.float64)
    rot = rotation_matrix(rotation_deg)
    centre = (np.asarray(volume.shape, dtype=np.float64) - 1) / 2 * vox
    shift = np.asarray(translation_mm, dtype=np.float64)
    # moved(p) = volume(R^T (p - c - t) + c), in voxel indices
    matrix = np.diag(1 / vox) @ rot.T @ np.diag(vox)
    offset = (centre - rot.T @ (centre + shift)) / vox
    return affine_transform(np.asarray(volume, dtype=np.float32), matrix, offset=offset,
                            order=order, mode="constant", cval=0.0)


def kspace_motion(volume: np.ndarray, motion: Motion,
                  voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Apply a motion history in k-space (module docstring).

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
        Magnitude image in the reference pose.
    motion : Motion
    voxel_size : sequence of 3 float

    Returns
    -------
    ndarray of float32
        Magnitude of the composed k-space's inverse transform; equal to ``volume`` (up to
        rounding) when every pose is the reference pose.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if not motion.events:
        return volume.copy()
    n = volume.shape[motion.axis]
    poses = [None, *motion.events]
    # segment k (acquisition order = fft-shifted index) is acquired in pose k
    bounds = [0, *(int(round(e.time * n)) for e in motion.events), n]
    centre = n // 2
    holder = next(k for k in range(len(poses)) if bounds[k] <= centre < bounds[k + 1])
    poses[0], poses[holder] = poses[holder], poses[0]  # the centre of k-space: reference pose
    kspace = np.zeros(volume.shape, dtype=np.complex64)
    index = [slice(None)] * volume.ndim
    for k, pose in enumerate(poses):
        lo, hi = bounds[k], bounds[k + 1]
        if hi <= lo:
            continue
        image = volume if pose is None else move(volume, pose.rotation_deg, pose.translation_mm,
                                                 voxel_size)
        spectrum = scipy.fft.fftshift(scipy.fft.fftn(image.astype(np.complex64)))
        index[motion.axis] = slice(lo, hi)
        kspace[tuple(index)] = spectrum[tuple(index)]
    return np.abs(scipy.fft.ifftn(scipy.fft.ifftshift(kspace))).astype(np.float32)


def add_noise(volume: np.ndarray, sigma: float, kind: str,
              rng: np.random.Generator) -> np.ndarray:
    """Gaussian or Rician noise of standard deviation ``sigma`` (raw intensity units).

    Parameters
    ----------
    volume : ndarray
    sigma : float
        Standard deviation of each (real/imaginary) Gaussian component.
    kind : {"gaussian", "rician"}
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float32
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    volume = np.asarray(volume, dtype=np.float32)
    if sigma <= 0:
        return volume.copy()
    s = np.float32(sigma)
    real = volume + s * rng.standard_normal(volume.shape, dtype=np.float32)
    if kind == "gaussian":
        return real
    imag = s * rng.standard_normal(volume.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def apply_corruption(volume: np.ndarray, corruption: Corruption, rng: np.random.Generator,
                     voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Apply a drawn corruption: motion first (the acquisition), then noise.

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
        Raw intensities.
    corruption : Corruption
    rng : numpy.random.Generator
        Draws the noise.
    voxel_size : sequence of 3 float

    Returns
    -------
    ndarray of float32
    """
    out = np.asarray(volume, dtype=np.float32)
    if corruption.motion is not None:
        out = kspace_motion(out, corruption.motion, voxel_size)
    if corruption.noise_kind is not None:
        out = add_noise(out, corruption.noise_sigma, corruption.noise_kind, rng)
    return out


def corrupt(volume: np.ndarray, rng: np.random.Generator,
            config: CorruptionConfig = CorruptionConfig(),
            voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, Corruption]:
    """Draw a corruption and apply it.

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
        Clean image, raw intensities.
    rng : numpy.random.Generator
    config : CorruptionConfig
    voxel_size : sequence of 3 float

    Returns
    -------
    corrupted : ndarray of float32
    corruption : Corruption
        What was applied.
    """
    corruption = draw_corruption(rng, config)
    return apply_corruption(volume, corruption, rng, voxel_size), corruption


__all__ = ["Corruption", "CorruptionConfig", "Motion", "MotionEvent", "add_noise",
           "apply_corruption", "corrupt", "draw_corruption", "draw_motion", "kspace_motion",
           "move", "rotation_matrix"]
