"""Template-to-template transforms (bids_genbrain.spaces) against a known mapping.

The "other template" is the MNI152NLin6Asym template (here the offline fallback image) seen
through a known rigid + scaling + smooth warp, put in a TemplateFlow home as
tpl-MNI152NLin2009cAsym; the recovered transform is compared with that mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from _anat_synth import displacement_error
from _fmriprep_layout import OTHER, grid_points, other_template, write_itk_field_h5

from bids_genbrain.spaces import (
    SpaceError,
    _cached_registration,
    _inputs,
    _resolve,
    _template_images,
    apply_space_transform,
    space_transform,
)
from bids_genbrain.templates import get_template, mni_grid


@pytest.fixture
def tf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    monkeypatch.setenv("GENBRAIN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "tf"


@pytest.mark.slow
def test_registration_between_templates_recovers_the_mapping_and_is_cached(tf_home, tmp_path):
    truth = other_template(tf_home)
    xfm = space_transform(OTHER, 4.0)
    assert xfm.method == "registration" and len(xfm.transforms) == 1
    err = displacement_error(list(xfm.transforms), truth, 4.0, tmp_path)
    # the known mapping moves brain voxels by several mm; the registration undoes it to
    # well under a 4 mm voxel
    x = grid_points(*mni_grid(4.0))[np.asanyarray(nb.load(get_template(4.0, suffix="mask"))
                                                  .dataobj) > 0].T
    moved_by = np.linalg.norm(truth.scanner_to_mni(x) - x, axis=0)
    assert moved_by.mean() > 2.5
    print(f"template registration at 4 mm: mean error {err.mean():.3f} mm, p95"
          f" {np.percentile(err, 95):.3f} mm (mapping moves voxels by {moved_by.mean():.2f} mm)")
    assert err.mean() < 1.0 and np.percentile(err, 95) < 2.0, (err.mean(), moved_by.mean())
    acc = xfm.accuracy
    assert acc["After"]["BrainMaskDice"] > acc["Before"]["BrainMaskDice"]
    assert acc["After"]["T1wCorrelation"] > max(acc["Before"]["T1wCorrelation"], 0.95)
    sidecar = xfm.sidecar()
    assert sidecar["SourceSpace"] == OTHER
    assert sidecar["TemplateTransform"]["Method"] == "registration"
    # computed once: the second call reads the cache (same file, no new registration)
    cached = Path(xfm.transforms[0])
    assert tmp_path / "cache" in cached.parents
    stamp = cached.stat().st_mtime_ns
    _resolve.cache_clear()  # a new process: the transform comes from the disk cache
    again = space_transform(OTHER, 4.0)
    assert again.transforms == xfm.transforms and again.accuracy == acc
    assert cached.stat().st_mtime_ns == stamp
    record = json.loads((tmp_path / "cache" / "spaces" / f"from-{OTHER}_res-4"
                         / "xfm.json").read_text())
    assert record["registration"] == "antsRegistrationSyNRepro[s]"
    # a changed template invalidates the cache
    t1w = tf_home / f"tpl-{OTHER}" / f"tpl-{OTHER}_res-02_T1w.nii.gz"
    img = nb.load(t1w)
    nb.Nifti1Image(np.asanyarray(img.dataobj) * 1.01, img.affine).to_filename(t1w)
    assert _cached_registration(OTHER, 4.0, _inputs(_template_images(OTHER))) is None


def test_published_templateflow_transform_is_used_first(tf_home):
    folder = tf_home / "tpl-MNI152NLin6Asym"
    shape, affine = mni_grid(4.0)
    shift = np.array([8.0, 0.0, 0.0])
    published = write_itk_field_h5(
        folder / f"tpl-MNI152NLin6Asym_from-{OTHER}_mode-image_xfm.h5",
        grid_points(shape, affine) + shift, affine)
    xfm = space_transform(OTHER, 4.0)
    assert xfm.method == "templateflow" and xfm.transforms == (str(published),)
    assert xfm.sidecar()["TemplateTransform"]["File"] == [published.name]
    tpl = nb.load(get_template(4.0))
    moved = apply_space_transform(tpl, xfm.transforms, 4.0)
    data = np.asanyarray(tpl.dataobj)
    # +8 mm in RAS x is two voxels down the (flipped) first axis
    np.testing.assert_allclose(moved[4:-4, 4:-4, 4:-4], data[2:-6, 4:-4, 4:-4], atol=1e-2)


def test_space_without_transform_or_templates_is_a_clear_error(tf_home):
    with pytest.raises(SpaceError) as err:
        space_transform("MNIColin27", 4.0)
    message = str(err.value)
    assert "\n" not in message and "MNIColin27" in message and "fetch-templates" in message
    # 0-byte TemplateFlow skeleton files are not templates
    folder = tf_home / "tpl-MNIColin27"
    folder.mkdir(parents=True)
    (folder / "tpl-MNIColin27_res-01_T1w.nii.gz").touch()
    with pytest.raises(SpaceError):
        space_transform("MNIColin27", 4.0)
    assert space_transform("MNI152NLin6Asym", 4.0).method == "identity"
