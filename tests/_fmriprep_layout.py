"""fMRIPrep-like derivatives built from the simulator's ground truth (tests of --derivatives).

fMRIPrep writes, per participant, T1w-space tissue probabilities
(``sub-<l>_label-GM_probseg.nii.gz``) and the T1w -> template transform as an ITK composite
HDF5 file (``sub-<l>_from-T1w_to-<space>_mode-image_xfm.h5``: an affine then a displacement
field, ANTs' ``--write-composite-transform`` format). Here both come from the truth: the
simulator's native T1w-grid tissue probabilities, and its true MNI -> scanner mapping
written as that HDF5 file. A second "template" (standing in for MNI152NLin2009cAsym) is the
MNI152NLin6Asym template seen through a known smooth mapping, put in a TemplateFlow home.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import nibabel as nb
import numpy as np
from _anat_synth import NativeTruth, make_native
from scipy.ndimage import map_coordinates

from bids_genbrain.templates import get_template

_LPS = np.array([-1.0, -1.0, 1.0])
OTHER = "MNI152NLin2009cAsym"
"""The template the tests' stand-in "other template" is named after."""


def write_itk_field_h5(path: Path | str, targets_ras: np.ndarray, affine: np.ndarray) -> Path:
    """Write an ITK composite transform (identity affine + displacement field) as ``.h5``.

    Parameters
    ----------
    path : path-like
        Output file.
    targets_ras : ndarray, shape (X, Y, Z, 3)
        For each voxel of the field's grid (the fixed space), the RAS mm point it maps to in
        the moving space (what ``antsApplyTransforms`` samples there).
    affine : ndarray, shape (4, 4)
        Voxel -> RAS mm of the field's grid (axis-aligned).

    Returns
    -------
    pathlib.Path
    """
    shape = targets_ras.shape[:3]
    ijk = np.moveaxis(np.indices(shape, dtype=np.float64), 0, -1)
    points = ijk @ affine[:3, :3].T + affine[:3, 3]
    displacement = ((targets_ras - points) * _LPS).astype(np.float32)
    zooms = np.abs(np.diag(affine)[:3])
    direction = np.diag(np.sign(np.diag(affine)[:3]) * _LPS)
    fixed = np.concatenate([np.array(shape, float), affine[:3, 3] * _LPS, zooms,
                            direction.ravel()])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        group = h5.create_group("TransformGroup")

        def put(index: int, kind: str, params: np.ndarray, fixed_params: np.ndarray) -> None:
            g = group.create_group(str(index))
            g.create_dataset("TransformType", data=[kind.encode()],
                             dtype=h5py.string_dtype("ascii"))
            g.create_dataset("TransformParameters", data=params)
            g.create_dataset("TransformFixedParameters", data=fixed_params)

        g0 = group.create_group("0")
        g0.create_dataset("TransformType", data=[b"CompositeTransform_float_3_3"],
                          dtype=h5py.string_dtype("ascii"))
        put(1, "AffineTransform_float_3_3",
            np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], np.float32), np.zeros(3))
        # ITK stores the field x-fastest with the 3 components interleaved
        put(2, "DisplacementFieldTransform_float_3_3",
            np.transpose(displacement, (2, 1, 0, 3)).ravel(), fixed)
    return path


def sample_at(img: nb.Nifti1Image, points_ras: np.ndarray) -> np.ndarray:
    """An image (3D, or 4D with components last) sampled at RAS points (..., 3), linear."""
    data = np.asanyarray(img.dataobj, dtype=np.float64)
    inv = np.linalg.inv(img.affine)
    flat = (points_ras @ inv[:3, :3].T + inv[:3, 3]).reshape(-1, 3).T
    comps = data[..., None] if data.ndim == 3 else data
    out = np.stack([map_coordinates(comps[..., k], flat, order=1, mode="nearest")
                    for k in range(comps.shape[-1])], axis=-1)
    return out.reshape(*points_ras.shape[:-1], comps.shape[-1]).squeeze(-1) \
        if data.ndim == 3 else out.reshape(points_ras.shape)


def grid_points(shape, affine) -> np.ndarray:
    """RAS mm of every voxel centre, shape (X, Y, Z, 3)."""
    ijk = np.moveaxis(np.indices(shape, dtype=np.float64), 0, -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def write_description(root: Path) -> None:
    """fMRIPrep's dataset_description.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.1"}]}))


def write_t1w_anatomy(root: Path, subject: str, t1w: Path, tissues: dict[str, Path],
                      coords: nb.Nifti1Image, space: str, to_truth=None) -> Path:
    """fMRIPrep's T1w-space outputs and its ``from-T1w_to-<space>`` transform, from the truth.

    Parameters
    ----------
    root : pathlib.Path
        fMRIPrep derivatives root.
    subject : str
        Bare label.
    t1w : pathlib.Path
        Native T1w (copied as ``desc-preproc_T1w``).
    tissues : dict
        Tissue -> true native probabilities.
    coords : nibabel image
        The truth's MNI -> scanner mapping (MNI152NLin6Asym grid).
    space : str
        Template the transform goes to.
    to_truth : callable, optional
        Maps ``space`` points (..., 3) to MNI152NLin6Asym points; None when ``space`` is
        MNI152NLin6Asym.

    Returns
    -------
    pathlib.Path
        The transform file.
    """
    anat = root / f"sub-{subject}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(t1w, anat / f"sub-{subject}_desc-preproc_T1w.nii.gz")
    for tissue, path in tissues.items():
        shutil.copyfile(path, anat / f"sub-{subject}_label-{tissue}_probseg.nii.gz")
    points = grid_points(coords.shape[:3], coords.affine)
    mni = points if to_truth is None else to_truth(points)
    return write_itk_field_h5(anat / f"sub-{subject}_from-T1w_to-{space}_mode-image_xfm.h5",
                              sample_at(coords, mni), coords.affine)


def other_template(home: Path, *, seed: int = 1) -> NativeTruth:
    """Write tpl-MNI152NLin6Asym (2 mm) and a warped copy as tpl-<OTHER> into ``home``.

    Returns
    -------
    NativeTruth
        ``scanner_to_mni`` maps <OTHER> points to MNI152NLin6Asym points.
    """
    six = home / "tpl-MNI152NLin6Asym"
    six.mkdir(parents=True)
    shutil.copyfile(get_template(2.0), six / "tpl-MNI152NLin6Asym_res-02_T1w.nii.gz")
    shutil.copyfile(get_template(2.0, suffix="mask"),
                    six / "tpl-MNI152NLin6Asym_res-02_desc-brain_mask.nii.gz")
    (six / "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz").touch()  # a TemplateFlow skeleton file
    other = home / f"tpl-{OTHER}"
    t1w = other / f"tpl-{OTHER}_res-02_T1w.nii.gz"
    truth = make_native(t1w, zooms=(2.0, 2.0, 2.0), rotation_deg=(2.0, -1.5, 1.0),
                        scale=(1.02, 0.98, 1.01), shift=(1.5, -2.0, 1.0), warp_mm=2.0,
                        oblique_deg=0.0, flip=False, noise=0.0, bias=0.0, seed=seed)
    img = nb.load(t1w)
    data = np.asanyarray(img.dataobj)
    nb.Nifti1Image((data > 0.05 * data.max()).astype(np.uint8), img.affine).to_filename(
        other / f"tpl-{OTHER}_res-02_desc-brain_mask.nii.gz")
    return truth


def write_published_transform(home: Path, truth: NativeTruth) -> Path:
    """TemplateFlow's ``tpl-MNI152NLin6Asym_from-<OTHER>`` transform, exact for ``truth``.

    It maps MNI152NLin6Asym points ``x`` to the <OTHER> points ``p`` with
    ``truth.scanner_to_mni(p) = x`` (the inverse of the smooth warp by fixed-point
    iteration), as a displacement field on the 2 mm grid.
    """
    from bids_genbrain.templates import mni_grid

    shape, affine = mni_grid(2.0)
    x = grid_points(shape, affine).reshape(-1, 3).T
    z = x.copy()
    for _ in range(30):
        z = x - truth.warp(z)
    p = truth.affine[:3, :3] @ z + truth.affine[:3, 3:4]
    name = f"tpl-MNI152NLin6Asym_from-{OTHER}_mode-image_xfm.h5"
    return write_itk_field_h5(home / "tpl-MNI152NLin6Asym" / name, p.T.reshape(*shape, 3),
                              affine)
