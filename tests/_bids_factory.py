"""Hand-built minimal BIDS datasets for shell tests (independent of the simulator)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np


def write_image(path: Path, shape=(24, 28, 24), zooms=(2.0, 2.0, 2.0), seed=0) -> Path:
    """A small blob-shaped 3D image with a RAS affine."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    radius = np.sqrt((((grid - centre) / (np.array(shape)[:, None, None, None] / 3)) ** 2).sum(0))
    data = (1000 * (radius < 1) + rng.normal(0, 10, shape)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.save(nb.Nifti1Image(data, np.diag([*zooms, 1.0])), path)
    return path


def make_dataset(root: Path, subjects=("01", "02"), sessions=(None,),
                 modalities=("T1w",), participants: str | None = None) -> Path:
    """A raw BIDS dataset with one image per modality, subject and session."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "shell test", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    if participants is None:
        rows = [f"sub-{s}\t{30 + i}\t{'MF'[i % 2]}\t{'CN' if i % 2 else 'AD'}"
                for i, s in enumerate(subjects)]
        participants = "participant_id\tage\tsex\tdiagnosis\n" + "\n".join(rows) + "\n"
    (root / "participants.tsv").write_text(participants)
    for i, sub in enumerate(subjects):
        for ses in sessions:
            folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
            prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            for j, mod in enumerate(modalities):
                write_image(folder / f"{prefix}_{mod}.nii.gz", seed=10 * i + j)
    return root


def tree_digest(root: Path) -> dict[str, tuple[int, float]]:
    """Size and mtime of every file under root (to prove nothing was written)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
            for p in sorted(root.rglob("*")) if p.is_file()}
