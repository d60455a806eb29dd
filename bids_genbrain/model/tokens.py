"""Brain-mask voxels <-> tokens.

GenBrain works on the vector of voxels inside the template brain mask (``x[mask]``, NumPy's
C order over the 3D grid: the "mask order"). The network cuts that vector into tokens of
``patch_size`` voxels (the paper: 256 at 2 mm, ~924 tokens), padding the tail token with zeros.
Which voxels share a token depends on the order the vector is read in:

``raster``
    The mask order itself. Consecutive voxels run along the last grid axis, so a token is a
    thin slab one or two voxels thick spanning the brain.
``morton``
    Z-order: voxels sorted by the interleaved bits of their (i, j, k) indices. Nearby voxels
    share long bit prefixes, so a token is a compact block of the grid.

:class:`TokenLayout` holds the permutation from mask order to token order, each token's
centroid (for the positional embedding) and a compactness measure used in the ablation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

ORDERS = ("raster", "morton")


def mask_sha256(mask: np.ndarray) -> str:
    """SHA-256 of a boolean mask (shape and packed bits), the checkpoint's mask reference.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)

    Returns
    -------
    str
        Hex digest; equal masks on equal grids give equal digests.
    """
    digest = hashlib.sha256()
    digest.update(np.asarray(mask.shape, dtype=np.int64).tobytes())
    digest.update(np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes())
    return digest.hexdigest()


def morton_codes(ijk: np.ndarray) -> np.ndarray:
    """Z-order (Morton) codes of integer 3D indices.

    Parameters
    ----------
    ijk : ndarray of int, shape (n, 3)
        Non-negative voxel indices below 2**21.

    Returns
    -------
    ndarray of uint64, shape (n,)
        Codes whose bit ``3 * b + (2 - axis)`` is bit ``b`` of the index on ``axis``.
    """
    ijk = np.asarray(ijk, dtype=np.uint64)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise ValueError(f"ijk must have shape (n, 3), got {ijk.shape}")
    codes = np.zeros(len(ijk), dtype=np.uint64)
    one = np.uint64(1)
    for bit in range(21):
        for axis in range(3):
            b = (ijk[:, axis] >> np.uint64(bit)) & one
            codes |= b << np.uint64(3 * bit + (2 - axis))
    return codes


@dataclass(frozen=True)
class TokenLayout:
    """How the masked voxel vector is cut into tokens.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask on the model grid.
    patch_size : int
        Voxels per token.
    order : {"raster", "morton"}
        Voxel order (see the module docstring).
    voxel_size : float
        Grid spacing in mm (centroids are returned in mm from the grid corner).

    Attributes
    ----------
    n_voxels : int
        Voxels in the mask.
    n_tokens : int
        ``ceil(n_voxels / patch_size)``.
    permutation : ndarray of int64, shape (n_voxels,)
        ``tokens_flat = x[permutation]`` for ``x`` in mask order.
    """

    mask: np.ndarray = field(repr=False)
    patch_size: int
    order: str = "morton"
    voxel_size: float = 1.0
    permutation: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"unknown token order {self.order!r}; choose one of {ORDERS}")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        mask = np.asarray(self.mask, dtype=bool)
        if mask.ndim != 3 or not mask.any():
            raise ValueError("mask must be a non-empty 3D boolean array")
        object.__setattr__(self, "mask", mask)
        ijk = np.argwhere(mask)  # mask (raster) order
        if self.order == "raster":
            perm = np.arange(len(ijk), dtype=np.int64)
        else:
            perm = np.argsort(morton_codes(ijk), kind="stable").astype(np.int64)
        object.__setattr__(self, "permutation", perm)

    @property
    def n_voxels(self) -> int:
        """Voxels in the mask."""
        return int(self.permutation.shape[0])

    @property
    def n_tokens(self) -> int:
        """Tokens after padding the tail."""
        return -(-self.n_voxels // self.patch_size)

    @property
    def padded_length(self) -> int:
        """``n_tokens * patch_size``."""
        return self.n_tokens * self.patch_size

    def mask_sha256(self) -> str:
        """:func:`mask_sha256` of the layout's mask."""
        return mask_sha256(self.mask)

    def token_coordinates(self) -> np.ndarray:
        """Voxel centres in token order, padded with NaN.

        Returns
        -------
        ndarray of float64, shape (n_tokens, patch_size, 3)
            Millimetres from the grid corner; NaN for the tail's padding slots.
        """
        ijk = np.argwhere(self.mask)[self.permutation].astype(np.float64) * self.voxel_size
        out = np.full((self.padded_length, 3), np.nan)
        out[: self.n_voxels] = ijk
        return out.reshape(self.n_tokens, self.patch_size, 3)

    def centroids(self) -> np.ndarray:
        """Centroid of each token's voxels.

        Returns
        -------
        ndarray of float64, shape (n_tokens, 3)
            Millimetres from the grid corner.
        """
        return np.nanmean(self.token_coordinates(), axis=1)

    def compactness(self) -> float:
        """Mean RMS distance (mm) of a token's voxels from its centroid; lower is more compact.

        Returns
        -------
        float
        """
        coords = self.token_coordinates()
        centred = coords - np.nanmean(coords, axis=1, keepdims=True)
        rms = np.sqrt(np.nanmean(np.nansum(centred**2, axis=2), axis=1))
        return float(np.mean(rms))

    def valid(self) -> np.ndarray:
        """Which padded slots hold a voxel.

        Returns
        -------
        ndarray of bool, shape (n_tokens, patch_size)
        """
        out = np.zeros(self.padded_length, dtype=bool)
        out[: self.n_voxels] = True
        return out.reshape(self.n_tokens, self.patch_size)
