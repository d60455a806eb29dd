"""The SyN stage on a cropped template grid (``RegistrationSettings.syn_crop_mm``).

The fast preset runs SyN on the template grid cut to the brain mask's bounding box plus a
margin. These tests check what that relies on: the crop's box and placement, and that the
resulting maps cover the whole template grid, equal to the linear stages alone outside the
crop and continuous at its faces (SyN holds its field's boundary at zero; ITK's displacement
field transform adds nothing outside its field), with the registration still accurate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _anat_synth import displacement_error, make_native

from bids_genbrain.interfaces.ants import (
    REGISTRATION_PRESETS,
    N4BiasFieldCorrection,
    crop_to_mask,
    register_to_template,
)
from bids_genbrain.interfaces.images import Conform
from bids_genbrain.templates import get_template

RES = 4.0


def test_crop_to_mask_box_margin_clip_and_placement():
    import ants

    arr = np.zeros((20, 30, 40), np.float32)
    arr[5:9, 10:21, 1:39] = 1.0
    mask = ants.from_numpy(arr, origin=(10.0, -20.0, 5.0), spacing=(2.0, 2.0, 3.0))
    image = mask.new_image_like(np.arange(arr.size, dtype=np.float32).reshape(arr.shape))
    cropped_image, cropped_mask = crop_to_mask(mask, 4.0, image, mask)
    # 4 mm = 2 voxels along x and y, ceil(4 / 3) = 2 along z (clipped at both z ends)
    assert cropped_image.shape == (8, 15, 40)
    assert cropped_mask.numpy().sum() == arr.sum()
    assert np.allclose(cropped_image.origin, (10.0 + 3 * 2.0, -20.0 + 8 * 2.0, 5.0))
    assert cropped_image.numpy()[0, 0, 0] == image.numpy()[3, 8, 0]
    # the same physical point on both grids
    point = ants.transform_index_to_physical_point(cropped_image, (2, 3, 4))
    assert np.allclose(point, ants.transform_index_to_physical_point(image, (5, 11, 4)))


@pytest.fixture(scope="module")
def cropped_registration(tmp_path_factory):
    """The sloppy preset (SyN down to 8 mm here) with its SyN stage separate and cropped."""
    import ants.config

    ants.config.set_ants_deterministic(on=False, seed_value=1)
    tmp = tmp_path_factory.mktemp("crop")
    native = tmp / "sub-01_T1w.nii.gz"
    truth = make_native(native, zooms=(3.0, 3.0, 3.5), seed=1)
    for step in ("conform", "n4", "reg"):
        (tmp / step).mkdir()
    conformed = Conform(in_file=str(native)).run(cwd=str(tmp / "conform")).outputs.out_file
    n4 = N4BiasFieldCorrection(in_file=conformed).run(cwd=str(tmp / "n4")).outputs.out_file
    settings = dataclasses.replace(REGISTRATION_PRESETS["fast"], name="test",
                                   syn_iterations=(40, 20), syn_radius=1, syn_crop_mm=10.0)
    out = register_to_template(n4, str(get_template(RES)), str(get_template(RES, suffix="mask")),
                               outprefix=str(tmp / "reg" / "reg_"), preset=settings)
    return tmp, truth, out


def test_cropped_syn_covers_the_grid_without_seam(cropped_registration):
    import ants

    tmp, truth, out = cropped_registration
    tpl = ants.image_read(str(get_template(RES))).clone("float")
    tmask = ants.threshold_image(ants.image_read(str(get_template(RES, suffix="mask"))),
                                 0.5, 1e9)
    full = ants.image_read(ants.apply_transforms(
        tpl, tpl, [out["forward_transform"]], compose=str(tmp / "full_"))).numpy()
    linear = ants.image_read(ants.apply_transforms(
        tpl, tpl, [str(tmp / "reg" / "reg_linear_Composite.h5")],
        compose=str(tmp / "linear_"))).numpy()
    syn = np.linalg.norm(full - linear, axis=-1)  # what SyN adds, mm
    (box,) = crop_to_mask(tmask, 10.0, tpl.new_image_like(np.ones(tpl.shape, np.float32)))
    lower = np.rint(ants.transform_physical_point_to_index(tpl, box.origin)).astype(int)
    inside = np.zeros(tpl.shape, bool)
    inside[tuple(slice(lo, lo + n) for lo, n in zip(lower, box.shape, strict=True))] = True
    inner = np.zeros(tpl.shape, bool)
    inner[tuple(slice(lo + 1, lo + n - 1) for lo, n in zip(lower, box.shape, strict=True))] = True
    assert inside.sum() < 0.9 * inside.size  # the crop is a real one on this grid
    assert syn[~inside].max() < 1e-3  # outside: the linear stages alone
    assert syn[inside & ~inner].max() < 1e-3  # the crop's faces: no jump
    assert syn[tmask.numpy() > 0].mean() > 0.3  # inside the brain SyN did move points
    assert ants.image_read(out["warped"]).shape == tpl.shape
    err = displacement_error([out["forward_transform"]], truth, RES, tmp)
    assert err.mean() < 3.0, err.mean()
