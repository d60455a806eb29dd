"""MNI-space derivatives with a planted age effect, and a test-sized model (model/cohort tests).

Built directly as arrays on the template grid (independent of the simulator): each subject's
modulated GM map is the template GM prior, plus smooth subject noise, minus ``SLOPE`` per year of
age inside a ball (the planted region).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from bids_genbrain.derivatives import derivative_path, write_dataset_description
from bids_genbrain.model.presets import ModelConfig
from bids_genbrain.templates import TEMPLATE, brain_mask, load_template, mni_grid

RES = 8.0
"""Test grid (mm): 3840 brain voxels, tokens of 32 voxels."""
TEST_ARCH = ModelConfig("test", hidden_size=64, depth=2, num_heads=4, patch_size=32,
                        resolution=RES)
SLOPE = 0.005
"""GM lost per year of age inside the planted region (0.3 between ages 20 and 80)."""


def planted_region(resolution: float = RES) -> np.ndarray:
    """Boolean ball (radius 20 mm) in high-GM cortex of the template."""
    gm = np.asanyarray(load_template(resolution, suffix="probseg", label="GM").dataobj)
    mask = brain_mask(resolution)
    shape, _ = mni_grid(resolution)
    smooth = gaussian_filter(gm * mask, 1.5)
    centre = np.array(np.unravel_index(np.argmax(smooth), shape))
    dist = np.sqrt(((np.indices(shape) - centre[:, None, None, None]) ** 2).sum(0)) * resolution
    return (dist <= 20.0) & mask


def gm_map(age: float, seed: int, resolution: float = RES, noise: float = 0.03) -> np.ndarray:
    """A subject's modulated GM map with the planted effect."""
    gm = np.asanyarray(load_template(resolution, suffix="probseg", label="GM").dataobj)
    mask = brain_mask(resolution)
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=gm.shape), 1.0)
    field *= noise / field[mask].std()
    out = gm + field - SLOPE * (age - 50.0) * planted_region(resolution)
    return (np.clip(out, 0, 1) * mask).astype(np.float32)


_ENTITIES = {"GMmod": ({"label": "GM", "desc": "modulated"}, "probseg"),
             "GM": ({"label": "GM"}, "probseg"),
             "T1w": ({"desc": "preproc"}, "T1w")}


def write_maps(root: Path, maps: list[np.ndarray], *, resolution: float = RES,
               modality: str = "GMmod", sessions: bool = False, first: int = 1) -> list[Path]:
    """Write MNI-space maps as ``sub-<first + i>`` derivatives of ``modality``."""
    write_dataset_description(root, name="model test derivatives")
    _, affine = mni_grid(resolution)
    extra, suffix = _ENTITIES[modality]
    paths = []
    for i, data in enumerate(maps):
        ents = {"sub": f"{first + i:02d}", "ses": "1" if sessions else None, "space": TEMPLATE,
                "res": f"{resolution:g}", **extra}
        path = derivative_path(root, ents, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        nb.save(nb.Nifti1Image(np.asarray(data, dtype=np.float32), affine), path)
        paths.append(path)
    return paths


def write_cohort(root: Path, ages: list[float], *, resolution: float = RES,
                 sexes: list[str] | None = None, modality: str = "GMmod",
                 sessions: bool = False) -> pd.DataFrame:
    """Write GM maps with the planted effect; return the typed participants table."""
    maps = [gm_map(age, seed=i, resolution=resolution) for i, age in enumerate(ages)]
    if modality == "T1w":
        maps = [m * 3000.0 + 200.0 * brain_mask(resolution) for m in maps]
    write_maps(root, maps, resolution=resolution, modality=modality, sessions=sessions)
    sexes = sexes or ["F" if i % 2 else "M" for i in range(len(ages))]
    return pd.DataFrame({
        "participant_id": [f"sub-{i + 1:02d}" for i in range(len(ages))],
        "age": np.asarray(ages, dtype=float),
        "sex": pd.Categorical(sexes, categories=["F", "M"]),
    })


def write_site(root: Path, n: int = 24, resolution: float = RES) -> Path:
    """A two-site cohort for the group level: ``root/bids`` (participants.tsv: age written as
    public datasets do: ``89+``, ``66-70``, ``<age> years``, a decimal comma for the first four), sex,
    diagnosis, site, handedness), ``root/deriv`` (GMmod maps; patients lose GM in the planted region) and
    ``root/truth_d.nii.gz`` (the planted region: the d map of CN - AD is positive there)."""
    from _bids_factory import make_dataset

    rng = np.random.default_rng(0)
    ages = rng.uniform(40, 80, n)
    diagnosis = np.array(["AD" if i % 2 else "CN" for i in range(n)])
    region = planted_region(resolution)
    maps = [gm_map(50.0, seed=i, resolution=resolution) - 0.12 * region * (dx == "AD")
            for i, dx in enumerate(diagnosis)]
    write_maps(root / "deriv", maps, resolution=resolution)
    sexes = rng.permutation(np.array(["M", "F"] * (n // 2)))
    # ages as public datasets write them: top-coded, binned, with a unit, a decimal comma;
    # a column no level models, and MNE-BIDS' empty-room row
    written = [f"{a:.1f}" for a in ages]
    written[:4] = ["89+", "66-70", f"{ages[2]:.0f} years", f"{ages[3]:.1f}".replace(".", ",")]
    rows = [f"sub-{i + 1:02d}\t{a}\t{sx}\t{dx}\t{'AB'[i >= n // 2]}\t{'R?'[i % 2]}"
            for i, (a, sx, dx) in enumerate(zip(written, sexes, diagnosis, strict=True))]
    rows.append("sub-emptyroom\tn/a\tn/a\tn/a\tn/a\tn/a")
    make_dataset(root / "bids", subjects=[f"{i + 1:02d}" for i in range(n)],
                 participants="participant_id\tage\tsex\tdiagnosis\tsite\thandedness\n"
                 + "\n".join(rows) + "\n")
    _, affine = mni_grid(resolution)
    truth = np.where(region, 1.0, 0.0).astype(np.float32)
    nb.save(nb.Nifti1Image(truth, affine), root / "truth_d.nii.gz")
    return root
