"""Template grid and fallback, derivative names and atomic writes."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from bids_genbrain import templates
from bids_genbrain.derivatives import (bids_name, derivative_path, sidecar_path,
                                       write_dataset_description, write_image)
from bids_genbrain.utils import atomic_path


def test_fsl_grid():
    shape, affine = templates.mni_grid(2)
    assert shape == (91, 109, 91)
    np.testing.assert_array_equal(affine, [[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72],
                                           [0, 0, 0, 1]])
    # voxel (45, 63, 36) is the MNI origin, as in FSL's MNI152_T1_2mm
    np.testing.assert_allclose(affine @ [45, 63, 36, 1], [0, 0, 0, 1])
    assert templates.mni_grid(1)[0] == (182, 218, 182)


def test_fallback_templates_on_grid():
    shape, affine = templates.mni_grid(2)
    mask = templates.brain_mask(2)
    assert mask.shape == shape and 200_000 < mask.sum() < 260_000  # FSL's mask: ~228k
    t1 = templates.load_template(2, suffix="T1w")
    np.testing.assert_allclose(t1.affine, affine)
    probs = [np.asanyarray(templates.load_template(2, suffix="probseg", label=t).dataobj)
             for t in templates.TISSUES]
    total = sum(probs)
    np.testing.assert_allclose(total[mask], 1.0, atol=1e-4)
    gm, wm = probs[0], probs[1]
    # tissue contrast: T1w brighter in WM than in GM
    data = np.asanyarray(t1.dataobj)
    assert data[wm > 0.9].mean() > 1.2 * data[gm > 0.9].mean()
    # the origin (anterior commissure) lies inside the brain
    assert mask[45, 63, 36]


def test_coarse_grid_for_tests():
    mask = templates.brain_mask(4)
    assert mask.shape == (46, 55, 46)
    assert 0.9 < mask.sum() * 8 / templates.brain_mask(2).sum() < 1.1


def test_bids_names():
    assert bids_name({"sub": "sub-01", "ses": "1", "space": "MNI152NLin6Asym", "res": 2,
                      "label": "GM", "desc": "modulated"}, "probseg") == (
        "sub-01_ses-1_space-MNI152NLin6Asym_res-2_label-GM_desc-modulated_probseg.nii.gz")
    assert bids_name({"sub": "01", "from": "T1w", "to": "MNI152NLin6Asym", "mode": "image"},
                     "xfm", ".h5") == "sub-01_from-T1w_to-MNI152NLin6Asym_mode-image_xfm.h5"
    assert bids_name({"contrast": "diagnosis", "desc": "synthetic", "stat": "t"}, "statmap") == (
        "contrast-diagnosis_desc-synthetic_stat-t_statmap.nii.gz")
    with pytest.raises(ValueError, match="alphanumeric"):
        bids_name({"sub": "0_1"}, "T1w")
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        bids_name({"subject": "01"}, "T1w")
    path = derivative_path("/d", {"sub": "01", "ses": "a", "desc": "preproc"}, "T1w")
    assert str(path) == "/d/sub-01/ses-a/anat/sub-01_ses-a_desc-preproc_T1w.nii.gz"
    assert sidecar_path(path).name == "sub-01_ses-a_desc-preproc_T1w.json"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    img = nb.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4))
    write_image(img, target, {"Sources": ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]})
    assert nb.load(target).shape == (3, 3, 3)
    assert json.loads((tmp_path / "x.json").read_text())["Sources"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.nii.gz"]


def test_dataset_description_in_container(tmp_path, monkeypatch):
    monkeypatch.setenv("SINGULARITY_NAME", "genbrain_0.1.0.sif")
    write_dataset_description(tmp_path, source_datasets=[{"URL": "file:///data"}])
    desc = json.loads((tmp_path / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Container"] == {"Type": "singularity",
                                                    "Tag": "genbrain_0.1.0.sif"}
    assert desc["SourceDatasets"] == [{"URL": "file:///data"}]
