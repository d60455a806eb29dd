"""Preprocessed-like MNI-space maps written directly (``derivatives/mnimaps``).

For group-level and model tests that skip preprocessing: from a session's ground truth, what a
pipeline would have produced (the truth plus estimation noise and a site bias on GM), and maps
of other modalities that only exist here, each with planted effects:

* ``desc-preproc_<modality>``, ``label-{GM,WM,CSF}_probseg``,
  ``label-GM_desc-modulated_probseg`` (VBM), ``desc-brain_mask`` (naming contract);
* ``desc-FA_dwimap`` and ``desc-MD_dwimap`` (mm^2/s): tissue-driven diffusion maps, FA falls
  with age in white matter and in patients in ``Effects.fa_regions``, MD rises with age;
* ``task-rest_..._desc-FC_boldmap``: seed (posterior cingulate) correlation map of a
  default-mode-like network, lower in patients in ``Effects.fc_regions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from scipy.ndimage import gaussian_filter

from ..derivatives import derivative_path, kind_path, mni_entities, write_image
from ..templates import TISSUES
from .anatomy import region_weight
from .config import FC_NETWORK, FC_SEED, Effects
from .subject import SessionTruth

MNIMAPS_NAME = "mnimaps"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian noise smoothed by ``sigma_vox`` voxels, unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def diffusion_fc_maps(truth: SessionTruth, points_mm: np.ndarray, row: dict, effects: Effects,
                      rng: np.random.Generator, resolution: float) -> dict[str, np.ndarray]:
    """FA, MD and seed-FC maps of a session (unmasked).

    Parameters
    ----------
    truth : SessionTruth
    points_mm : ndarray, shape (3, X, Y, Z)
        MNI mm of the grid.
    row : dict
        The session's covariates (``age``, ``diagnosis``).
    effects : Effects
    rng : numpy.random.Generator
    resolution : float
        Grid spacing (mm), for the smoothness of individual variation.

    Returns
    -------
    dict
        ``FA``, ``MD``, ``FC``.
    """
    gm, wm, csf = (truth.tissue[t] for t in TISSUES)
    decades = (row["age"] - effects.age_reference) / 10.0
    patient = float(row["diagnosis"] == "patient")
    sigma = 6.0 / resolution
    shape = gm.shape
    fa = (0.12 + 0.55 * wm + 0.06 * gm + effects.fa_age_per_decade * decades * wm
          + effects.fa_diagnosis * patient * region_weight(points_mm, effects.fa_regions)
          + 0.02 * _smooth_noise(rng, shape, sigma) + 0.02 * rng.standard_normal(shape))
    md = ((0.72 * wm + 0.85 * gm + 3.0 * csf) * 1e-3
          * (1.0 + effects.md_age_per_decade * decades)
          * np.exp(0.03 * _smooth_noise(rng, shape, sigma))
          + 0.03e-3 * rng.standard_normal(shape))
    network = region_weight(points_mm, (FC_SEED, *FC_NETWORK))
    fc = (0.05 + 0.6 * network * (0.3 + 0.7 * gm)
          + effects.fc_diagnosis * patient * region_weight(points_mm, effects.fc_regions)
          + 0.05 * _smooth_noise(rng, shape, sigma) + 0.08 * rng.standard_normal(shape))
    return {"FA": np.clip(fa, 0.0, 1.0), "MD": np.maximum(md, 0.0), "FC": np.clip(fc, -0.99, 0.99)}


def write_session_mnimaps(root: Path, subject: str, session: str | None, truth: SessionTruth,
                          points_mm: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                          row: dict, effects: Effects, gm_bias: float, noise: float,
                          rng: np.random.Generator, resolution: float,
                          maps: tuple[str, ...] | None = None) -> list[Path]:
    """Write one session's maps under the ``mnimaps`` root.

    Every map is drawn whether it is written or not, so leaving maps out changes none of the
    others.

    Parameters
    ----------
    root : Path
        ``OUT_DIR/derivatives/mnimaps``.
    subject, session : str
    truth : SessionTruth
    points_mm : ndarray, shape (3, X, Y, Z)
    mask : ndarray of bool
        Brain mask on the grid.
    affine : ndarray
    row : dict
        Covariates of the session.
    effects : Effects
    gm_bias : float
        The site's multiplicative bias on GM estimates.
    noise : float
        The site's noise level (fraction of the brightest tissue).
    rng : numpy.random.Generator
    resolution : float
    maps : tuple of str, optional
        Names (:data:`~bids_genbrain.simulation.config.MNI_MAPS`) to write; None: all. The
        brain mask is always written.

    Returns
    -------
    list of Path
    """
    at = {"sub": subject, "ses": session, "resolution": resolution}
    mni = mni_entities(resolution, sub=subject, ses=session)
    shape = mask.shape
    sources = {"Description": "Simulated: ground truth plus estimation noise (bids_genbrain"
                              " simulate); not derived from the raw images."}
    written = []

    def save(name: str, data: np.ndarray, path: Path, sidecar: dict | None = None) -> None:
        if maps is not None and name not in maps:
            return
        img = nb.Nifti1Image(np.where(mask, data, 0).astype(np.float32), affine)
        write_image(img, path, {**sources, **(sidecar or {})})
        written.append(path)

    for modality, image in truth.images.items():
        scale = max(float(np.percentile(image[mask], 99)), 1e-6)
        noisy = image + noise * scale * 0.5 * rng.standard_normal(shape)
        save(modality, noisy, kind_path(root, "preproc", modality=modality, **at))
    tissues = {t: np.clip(truth.tissue[t] + 0.02 * rng.standard_normal(shape), 0, 1)
               for t in TISSUES}
    tissues["GM"] = np.clip(tissues["GM"] * gm_bias, 0, 1)
    for tissue, data in tissues.items():
        save(tissue, data, kind_path(root, tissue, **at))
    modulated = tissues["GM"] * np.exp(truth.log_jacobian)
    save("GMmod", modulated, kind_path(root, "GMmod", **at))
    mask_img = nb.Nifti1Image(mask.astype(np.uint8), affine)
    mask_path = kind_path(root, "mask", **at)
    write_image(mask_img, mask_path, sources)
    written.append(mask_path)
    other = diffusion_fc_maps(truth, points_mm, row, effects, rng, resolution)
    save("FA", other["FA"], derivative_path(root, {**mni, "desc": "FA"}, "dwimap", datatype="dwi"))
    save("MD", other["MD"], derivative_path(root, {**mni, "desc": "MD"}, "dwimap", datatype="dwi"),
         {"Units": "mm^2/s"})
    save("FC", other["FC"], derivative_path(root, {**mni, "task": "rest", "desc": "FC"}, "boldmap",
                                     datatype="func"),
         {"Seed": {"Name": FC_SEED.name, "CenterMM": list(FC_SEED.center_mm),
                   "RadiusMM": FC_SEED.radius_mm},
          "Units": "Pearson correlation"})
    return written
