"""A multi-site study of MNI-space GM maps with planted age, diagnosis and site effects.

Built directly as arrays on a coarse template grid (8 mm: 3840 brain voxels), so that the
evaluate and augment commands run end to end in seconds: each participant's modulated GM map
is the template GM prior plus smooth individual noise, minus ``SLOPE`` per year of age in the
planted age region (``_model_factory``), minus ``DIAGNOSIS_LOSS`` in a second ball for
patients, times a site's multiplicative bias.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from _bids_factory import make_dataset
from _model_factory import RES, gm_map, write_maps

from bids_genbrain.templates import brain_mask, mni_grid

DIAGNOSIS_LOSS = 0.15
"""GM lost by patients in the diagnosis region."""
SITE_BIAS = {"A": 1.0, "B": 1.08, "C": 0.93}


def diagnosis_region(resolution: float = RES) -> np.ndarray:
    """A ball of 24 mm radius around MNI (0, -50, 30) (posterior cingulate / precuneus)."""
    shape, affine = mni_grid(resolution)
    ijk = np.indices(shape).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]).T
    dist = np.linalg.norm(xyz - np.array([0.0, -50.0, 30.0]), axis=1).reshape(shape)
    return (dist <= 24.0) & brain_mask(resolution)


def write_study(root: Path, n_per_site: int = 30, sites: tuple[str, ...] = ("A", "B"),
                resolution: float = RES, seed: int = 0) -> Path:
    """``root/bids`` (participants.tsv: age, sex, diagnosis, site; no images) and
    ``root/deriv`` (GMmod maps of every participant)."""
    rng = np.random.default_rng(seed)
    region = diagnosis_region(resolution)
    maps, rows = [], []
    for s, site in enumerate(sites):
        for i in range(n_per_site):
            k = s * n_per_site + i
            age = float(rng.uniform(40, 80))
            dx = "AD" if i % 2 else "CN"
            sex = "F" if rng.random() < 0.5 else "M"
            gm = gm_map(age, seed=seed * 1000 + k, resolution=resolution)
            gm = gm - DIAGNOSIS_LOSS * region * (dx == "AD")
            bias = SITE_BIAS.get(site, 1.0) * (1 + 0.02 * gaussian_filter(
                rng.normal(size=gm.shape), 2.0))
            maps.append(np.clip(gm * bias, 0, 1.2).astype(np.float32))
            rows.append(f"sub-{k + 1:02d}\t{age:.1f}\t{sex}\t{dx}\t{site}")
    write_maps(root / "deriv", maps, resolution=resolution)  # sub-01, sub-02 ...
    make_dataset(root / "bids", subjects=[], participants="participant_id\tage\tsex\t"
                 "diagnosis\tsite\n" + "\n".join(rows) + "\n")
    return root
