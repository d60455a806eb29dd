"""Unit tests of the preprocessing interfaces on small images with known answers."""

from __future__ import annotations

import json
import logging

import nibabel as nb
import numpy as np
import pytest

from bids_genbrain.interfaces.ants import (
    ApplyTransforms,
    LogJacobian,
    Modulate,
    N4BiasFieldCorrection,
    RigidAverage,
)
from bids_genbrain.interfaces.bids import DerivativesSink
from bids_genbrain.interfaces.images import Conform
from bids_genbrain.interfaces.qc import dice, registration_metrics, tissue_volumes
from bids_genbrain.templates import get_template, mni_grid
from bids_genbrain.spaces import SpaceError
from bids_genbrain.workflows.precomputed import find_mni_derivatives, import_derivatives


def _blob(shape=(40, 44, 40), seed=0, texture=True) -> np.ndarray:
    """An ellipsoid 'head' with an inner bright 'brain' and noise."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    radius = np.sqrt((((grid - centre) / (np.array(shape)[:, None, None, None] / 2.6)) ** 2)
                     .sum(0))
    data = 400.0 * (radius < 1) + 600.0 * (radius < 0.6) + 150.0 * texture * np.cos(grid[1] / 4.0) * (
        radius < 1)
    return (data + rng.normal(0, 10, shape) * (radius < 1)).astype(np.float32)


def _world(img: nb.Nifti1Image, ijk: np.ndarray) -> np.ndarray:
    return img.affine[:3, :3] @ ijk + img.affine[:3, 3:4]


def test_conform_keeps_world_positions(tmp_path):
    data = _blob()
    affine = np.array([[-2.0, 0.3, 0, 40], [0.2, -2.5, 0, 50], [0, 0, 3.0, -30], [0, 0, 0, 1]])
    src = tmp_path / "lps.nii.gz"
    nb.Nifti1Image(data, affine).to_filename(src)
    res = Conform(in_file=str(src)).run(cwd=str(tmp_path))
    out = nb.load(res.outputs.out_file)
    assert "".join(nb.aff2axcodes(out.affine)) == "RAS"
    assert res.outputs.orientation == "LPS" and res.outputs.oblique
    # the brightest voxel sits at the same physical place before and after
    i_src = np.array(np.unravel_index(np.argmax(data), data.shape), float)[:, None]
    out_data = np.asanyarray(out.dataobj)
    i_out = np.array(np.unravel_index(np.argmax(out_data), out_data.shape), float)[:, None]
    np.testing.assert_allclose(_world(nb.load(src), i_src), _world(out, i_out), atol=1e-4)
    assert np.isclose(out_data.sum(), data.sum(), rtol=1e-5)


def test_n4_removes_a_smooth_bias(tmp_path):
    data = _blob(texture=False)
    bias = 1.0 + 0.4 * np.linspace(-1, 1, data.shape[0])[:, None, None]
    src = tmp_path / "biased.nii.gz"
    nb.Nifti1Image(data * bias, np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(src)
    res = N4BiasFieldCorrection(in_file=str(src), n_iterations=[50, 50]).run(cwd=str(tmp_path))
    corrected = np.asanyarray(nb.load(res.outputs.out_file).dataobj)
    core = data > 900  # the inner 'brain'

    def residual_bias(x):
        ratio = x[core] / data[core]
        return ratio.std() / ratio.mean()

    # the bias spreads the image/truth ratio inside the object by ~9 %; N4 removes most of it
    assert residual_bias(corrected) < 0.3 * residual_bias(data * bias)


def test_rigid_average_aligns_and_denoises(tmp_path):
    template = nb.load(get_template(4.0))
    clean = np.asanyarray(template.dataobj, dtype=np.float32)
    rng = np.random.default_rng(3)
    sigma = 0.1 * clean.max()
    run1 = clean + rng.normal(0, sigma, clean.shape)
    run2 = clean + rng.normal(0, sigma, clean.shape)
    # second run: same head on a grid shifted by 2 voxels (8 mm), scanner scaling 0.9
    moved = template.affine.copy()
    moved[:3, 3] += template.affine[:3, 0] * 2
    f1, f2 = tmp_path / "run-1.nii.gz", tmp_path / "run-2.nii.gz"
    nb.Nifti1Image(run1.astype(np.float32), template.affine).to_filename(f1)
    nb.Nifti1Image((np.roll(run2, -2, axis=0) * 0.9).astype(np.float32), moved).to_filename(f2)
    res = RigidAverage(in_files=[str(f1), str(f2)]).run(cwd=str(tmp_path))
    avg = np.asanyarray(nb.load(res.outputs.out_file).dataobj)
    assert res.outputs.n_runs == 2
    crop = (slice(4, -4),) * 3
    inner = (clean > 0.3 * clean.max())[crop]
    err_single = np.abs(run1[crop] - clean[crop])[inner].mean()
    err_avg = np.abs(avg[crop] - clean[crop])[inner].mean()
    # two aligned runs: noise / sqrt(2) (0.71); misalignment would add anatomy differences
    assert err_avg < 0.8 * err_single


def test_log_jacobian_of_a_known_scaling(tmp_path):
    import ants

    scale = 1.1
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=np.diag([scale] * 3), center=(0.0, -18.0, 18.0))
    tx_file = str(tmp_path / "scale.mat")
    ants.write_transform(tx, tx_file)
    grid = str(get_template(4.0))
    res = LogJacobian(reference=grid, transforms=[tx_file]).run(cwd=str(tmp_path))
    logjac = np.asanyarray(nb.load(res.outputs.out_file).dataobj)
    interior = (slice(3, -3),) * 3
    np.testing.assert_allclose(logjac[interior], 3 * np.log(scale), atol=1e-3)

    # modulation preserves the amount of tissue: a uniform map through a 1.1 scaling
    prob = tmp_path / "prob.nii.gz"
    shape, affine = mni_grid(4.0)
    nb.Nifti1Image(np.full(shape, 0.5, np.float32), affine).to_filename(prob)
    mod = Modulate(in_file=str(prob), log_jacobian=res.outputs.out_file).run(cwd=str(tmp_path))
    modulated = np.asanyarray(nb.load(mod.outputs.out_file).dataobj)
    np.testing.assert_allclose(modulated[interior], 0.5 * scale**3, rtol=1e-3)


def test_apply_transforms_binarizes_masks(tmp_path):
    import ants

    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    tx_file = str(tmp_path / "identity.mat")
    ants.write_transform(tx, tx_file)
    mask = str(get_template(4.0, suffix="mask"))
    res = ApplyTransforms(in_file=mask, reference=str(get_template(4.0)), transforms=[tx_file],
                          binarize=True).run(cwd=str(tmp_path))
    out = np.asanyarray(nb.load(res.outputs.out_file).dataobj)
    ref = np.asanyarray(nb.load(mask).dataobj) > 0.5
    assert set(np.unique(out)) <= {0, 1}
    assert dice(out > 0, ref) > 0.999


def test_qc_metrics_known_values(tmp_path):
    a = np.zeros((10, 10, 10), bool)
    a[2:6] = True
    b = np.zeros_like(a)
    b[4:8] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0

    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 ul voxels
    mask = tmp_path / "mask.nii.gz"
    nb.Nifti1Image(a.astype(np.uint8), affine).to_filename(mask)
    probs = []
    for k, value in enumerate((0.5, 0.3, 0.2)):
        p = tmp_path / f"p{k}.nii.gz"
        nb.Nifti1Image(np.full(a.shape, value, np.float32), affine).to_filename(p)
        probs.append(str(p))
    vols = tissue_volumes(probs, str(mask))
    n = a.sum()
    assert vols["gm_ml"] == pytest.approx(0.5 * n * 8 / 1000)
    assert vols["tiv_ml"] == pytest.approx(n * 8 / 1000)

    tpl, tmask = str(get_template(4.0)), str(get_template(4.0, suffix="mask"))
    fov = tmp_path / "fov.nii.gz"
    shape, grid = mni_grid(4.0)
    half = np.zeros(shape, np.uint8)
    half[:, :, : shape[2] // 2] = 1
    nb.Nifti1Image(half, grid).to_filename(fov)
    tmask_arr = np.asanyarray(nb.load(tmask).dataobj) > 0.5
    metrics = registration_metrics(tpl, str(fov), tpl, tmask, tmask)
    assert metrics["template_r"] == pytest.approx(1.0)
    assert metrics["mask_dice"] == pytest.approx(1.0)
    assert metrics["coverage"] == pytest.approx(tmask_arr[:, :, : shape[2] // 2].sum()
                                                / tmask_arr.sum())


def test_derivatives_sink_writes_atomically_with_sidecar(tmp_path):
    src = tmp_path / "x.nii.gz"
    nb.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)).to_filename(src)
    target = tmp_path / "out" / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz"
    DerivativesSink(in_file=str(src), out_path=str(target),
                    sidecar={"SkullStripped": False}).run(cwd=str(tmp_path))
    assert target.read_bytes() == src.read_bytes()
    assert json.loads(target.with_name("sub-01_desc-preproc_T1w.json").read_text()) == {
        "SkullStripped": False}
    assert not [p for p in target.parent.iterdir() if ".part" in p.name]


def _write(path, data, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(data, affine).to_filename(path)
    return path


def test_import_derivatives_copies_resamples_and_renames(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "no-templateflow"))
    root = tmp_path / "fmriprep"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "fmriprep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    anat = root / "sub-01" / "anat"
    shape4, aff4 = mni_grid(4.0)
    shape2, aff2 = mni_grid(2.0)
    tpl4 = np.asanyarray(nb.load(get_template(4.0)).dataobj).astype(np.float32)
    tpl2 = np.asanyarray(nb.load(get_template(2.0)).dataobj).astype(np.float32)
    on_grid = _write(anat / "sub-01_space-MNI152NLin6Asym_res-4_desc-preproc_T1w.nii.gz",
                     tpl4, aff4)
    _write(anat / "sub-01_space-MNI152NLin6Asym_res-2_label-GM_probseg.nii.gz", tpl2 / tpl2.max(),
           aff2)
    _write(anat / "sub-01_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz",
           (tpl2 > 0).astype(np.uint8), aff2)
    _write(root / "sub-01" / "dwi" / "sub-01_space-MNI152NLin6Asym_model-tensor_param-fa_dwimap"
           ".nii.gz", tpl4 / tpl4.max(), aff4)
    _write(root / "sub-01" / "func" / "sub-01_task-rest_space-MNI152NLin6Asym_res-4_desc-preproc"
           "_bold.nii.gz", np.zeros((*shape4, 3), np.float32), aff4)
    _write(anat / "sub-01_desc-preproc_T1w.nii.gz", tpl4, np.eye(4))  # native: ignored
    _write(root / "sub-02" / "anat" / "sub-02_space-MNI152NLin6Asym_res-4_desc-preproc_T1w"
           ".nii.gz", tpl4, aff4)

    found = find_mni_derivatives([root], "01")
    assert len(found) == 5  # four 3D maps and the bold series; not native, not sub-02
    # MNI152NLin2009cAsym without a template-to-template transform: refused, not relabelled
    with pytest.raises(SpaceError, match="MNI152NLin2009cAsym"):
        import_derivatives([root], tmp_path / "refused", subject_id="01", resolution=4.0)
    (anat / "sub-01_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz").unlink()
    _write(anat / "sub-01_space-MNI152NLin6Asym_res-2_desc-brain_mask.nii.gz",
           (tpl2 > 0).astype(np.uint8), aff2)
    assert all("space-MNI" in f.name and f.name.startswith("sub-01") for f in found)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        maps = import_derivatives([root], out, subject_id="01", resolution=4.0)
    names = sorted(m.target.name for m in maps)
    assert names == [
        "sub-01_space-MNI152NLin6Asym_res-4_desc-brain_mask.nii.gz",
        "sub-01_space-MNI152NLin6Asym_res-4_desc-preproc_T1w.nii.gz",
        "sub-01_space-MNI152NLin6Asym_res-4_desc-tensorfa_dwimap.nii.gz",
        "sub-01_space-MNI152NLin6Asym_res-4_label-GM_probseg.nii.gz",
    ]
    by_name = {m.target.name: m for m in maps}
    copied = by_name["sub-01_space-MNI152NLin6Asym_res-4_desc-preproc_T1w.nii.gz"]
    assert not copied.resampled and copied.target.read_bytes() == on_grid.read_bytes()
    assert copied.target.parent == out / "sub-01" / "anat"
    gm = by_name["sub-01_space-MNI152NLin6Asym_res-4_label-GM_probseg.nii.gz"]
    gm_img = nb.load(gm.target)
    assert gm.resampled and gm_img.shape == shape4 and np.allclose(gm_img.affine, aff4)
    # the resampled 2 mm template matches the 4 mm template it was built like
    gm_data = np.asanyarray(gm_img.dataobj)
    assert np.corrcoef(gm_data.ravel(), tpl4.ravel())[0, 1] > 0.95
    mask = np.asanyarray(nb.load(by_name[
        "sub-01_space-MNI152NLin6Asym_res-4_desc-brain_mask.nii.gz"].target).dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    assert "not on the 4 mm FSL grid: resampled" in caplog.text


def test_template_registration_is_reproducible_and_recovers_the_truth(tmp_path):
    """Same seed, one thread: identical transforms; the mapping matches the truth."""
    from _anat_synth import displacement_error, make_native, mni_to_scanner_map

    from bids_genbrain.interfaces.ants import RegisterToTemplate

    native = tmp_path / "native.nii.gz"
    truth = make_native(native, zooms=(3.0, 3.0, 3.5), seed=2)
    maps = []
    for k in range(2):
        (tmp_path / f"run{k}").mkdir()
        res = RegisterToTemplate(moving=str(native), template=str(get_template(4.0)),
                                 template_mask=str(get_template(4.0, suffix="mask")),
                                 preset="sloppy", seed=3).run(cwd=str(tmp_path / f"run{k}"))
        maps.append(mni_to_scanner_map([res.outputs.forward_transform], 4.0, tmp_path))
    np.testing.assert_array_equal(maps[0], maps[1])
    # 4 mm sloppy registration of a 3 mm image with a 3 mm warp: ~2.2 mm measured
    assert displacement_error([res.outputs.forward_transform], truth, 4.0, tmp_path).mean() < 3.0
    mask = np.asanyarray(nb.load(res.outputs.brain_mask).dataobj)
    assert (mask > 0).any() and set(np.unique(mask)) <= {0, 1}
