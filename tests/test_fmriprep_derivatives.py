"""fMRIPrep users: --derivatives with fMRIPrep's file names, through the CLI, against the truth.

The simulator's truth is written in fMRIPrep's layout: T1w-space tissue probabilities on the
native T1w grid and the true T1w -> template mapping as an ITK composite ``.h5``:

- sub-01: ``from-T1w_to-MNI152NLin6Asym`` (fMRIPrep run with that output space);
- sub-02: ``from-T1w_to-MNI152NLin2009cAsym`` (fMRIPrep's default); the test's TemplateFlow
  home holds a stand-in template pair related by a known mapping and, as TemplateFlow does,
  the published transform between them (the registration route, used when TemplateFlow has
  no transform, is measured in test_spaces.py);
- sub-03: only a ``space-MNI152NLin2009cAsym`` GM map (no T1w-space anatomy).

The participant level must write modulated GM (VBM) for sub-01 and sub-02 without
registering any participant, bring sub-03's map over with the template transform, and say
so in the sidecars; a space it cannot transform is a one-line error.
"""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest
from _fmriprep_layout import (
    OTHER,
    grid_points,
    other_template,
    sample_at,
    write_description,
    write_published_transform,
    write_t1w_anatomy,
)
from test_cli_bids_app import assert_one_line_error, run_app

from bids_genbrain.cohort import find_images
from bids_genbrain.simulate import SimulationConfig, load_ground_truth, simulate_dataset
from bids_genbrain.templates import TISSUES, mni_grid

RES = "space-MNI152NLin6Asym_res-4"


@pytest.fixture(scope="module")
def fmriprep_site(tmp_path_factory):
    """Simulated raw data, its truth in fMRIPrep's layout, and a TemplateFlow home."""
    root = tmp_path_factory.mktemp("fmriprep_site")
    sim = simulate_dataset(root / "bids", SimulationConfig.fast(
        n_subjects=3, n_sites=1, modalities=("T1w",), native_tissues=True, seed=4))
    truth_tpl = other_template(root / "tf")
    write_published_transform(root / "tf", truth_tpl)

    def to_six(points):  # OTHER points -> MNI152NLin6Asym points
        flat = points.reshape(-1, 3).T
        return truth_tpl.scanner_to_mni(flat).T.reshape(points.shape)

    deriv = root / "fmriprep"
    write_description(deriv)
    truths = {}
    for subject, space in (("01", "MNI152NLin6Asym"), ("02", OTHER), ("03", None)):
        truth = load_ground_truth(sim.groundtruth, subject)
        truths[subject] = truth
        coords = nb.load(sim.groundtruth / f"sub-{subject}" / "anat" / (
            f"sub-{subject}_from-MNI152NLin6Asym_to-T1w_mode-image_res-4_desc-coords_xfm.nii.gz"))
        if space is not None:
            tissues = {t: sim.groundtruth / f"sub-{subject}" / "anat" /
                       f"sub-{subject}_space-T1w_label-{t}_probseg.nii.gz" for t in TISSUES}
            write_t1w_anatomy(deriv, subject, truth.native_path, tissues, coords, space,
                              None if space == "MNI152NLin6Asym" else to_six)
        else:  # the GM map resampled into the other template, on a 2 mm grid
            shape, affine = mni_grid(2.0)
            values = sample_at(nb.Nifti1Image(truth.tissue["GM"], truth.affine),
                               to_six(grid_points(shape, affine)))
            anat = deriv / f"sub-{subject}" / "anat"
            anat.mkdir(parents=True)
            nb.Nifti1Image(values.astype(np.float32), affine).to_filename(
                anat / f"sub-{subject}_space-{OTHER}_res-2_label-GM_probseg.nii.gz")
    env = {"TEMPLATEFLOW_HOME": str(root / "tf"), "GENBRAIN_CACHE_DIR": str(root / "cache")}
    return sim, deriv, truths, env


def _corr(a, b, mask):
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def test_fmriprep_layout_gives_modulated_gm_without_registering(fmriprep_site, tmp_path,
                                                              monkeypatch):
    sim, deriv, truths, env = fmriprep_site
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    proc = run_app(sim.root, out, "participant", "--derivatives", deriv, "--resolution", "4",
                   check_code=0)
    assert "3 of 3 participant(s) finished" in proc.stdout, proc.stdout
    names = sorted(p.name for p in out.rglob("sub-*.nii.gz"))
    assert all(RES in n for n in names if "space-" in n), names
    assert not [n for n in names if OTHER in n]  # transformed, never relabelled

    measured = {}
    for subject in ("01", "02"):
        truth = truths[subject]
        anat = out / f"sub-{subject}" / "anat"
        mask = truth.brain_mask

        def load(name):
            return np.asanyarray(nb.load(anat / f"sub-{subject}_{RES}_{name}.nii.gz").dataobj,
                                 dtype=np.float64)

        gm, gmmod = load("label-GM_probseg"), load("label-GM_desc-modulated_probseg")
        logjac = load("desc-log_jacobian")
        voxel_ml = 4.0**3 / 1000.0
        measured[subject] = {
            "r_gm": _corr(gm, truth.tissue["GM"], mask),
            "r_gmmod": _corr(gmmod, truth.gm_modulated, mask),
            "r_logjac": _corr(logjac, truth.log_jacobian, mask),
            "logjac_err": float(np.abs(logjac - truth.log_jacobian)[mask].mean()),
            "volume_ratio": float(gmmod.sum() / truth.gm_modulated.sum()),
            "gm_ml": float(gmmod.sum() * voxel_ml),
        }
        side = json.loads((anat / f"sub-{subject}_{RES}_label-GM_desc-modulated_probseg.json")
                          .read_text())
        assert any(s.endswith("_label-GM_probseg.nii.gz") for s in side["Sources"])
        assert any(s.endswith("_xfm.h5") for s in side["Sources"])
        assert side["SpatialReference"] == "MNI152NLin6Asym"
        if subject == "02":
            assert side["SourceSpace"] == OTHER
            assert side["TemplateTransform"]["Method"] == "templateflow"
            assert side["TemplateTransform"]["File"] == [
                f"tpl-MNI152NLin6Asym_from-{OTHER}_mode-image_xfm.h5"]
        else:
            assert "TemplateTransform" not in side
    print(measured)
    for subject, m in measured.items():
        # warped then multiplied by the Jacobian determinant: the truth's VBM map
        # (measured: r 0.995-0.996, log Jacobian error 0.0003-0.006, volume ratio 0.9995-1.0005)
        assert m["r_gm"] > 0.98 and m["r_gmmod"] > 0.98, (subject, m)
        assert m["r_logjac"] > 0.99 and m["logjac_err"] < 0.02, (subject, m)
        assert abs(m["volume_ratio"] - 1.0) < 0.01, (subject, m)

    # sub-03: a template-space map only, brought over with the template transform
    gm3 = out / "sub-03" / "anat" / f"sub-03_{RES}_label-GM_probseg.nii.gz"
    side3 = json.loads(gm3.with_name(gm3.name.replace(".nii.gz", ".json")).read_text())
    assert side3["SourceSpace"] == OTHER and side3["TemplateTransform"]["Method"] == "templateflow"
    r3 = _corr(np.asanyarray(nb.load(gm3).dataobj), truths["03"].tissue["GM"],
               truths["03"].brain_mask)
    assert r3 > 0.9, r3
    assert not (gm3.parent / f"sub-03_{RES}_label-GM_desc-modulated_probseg.nii.gz").exists()

    # the group level's default modality (GMmod) finds the two VBM maps
    table = find_images([out], "GMmod", 4.0)
    assert list(table["participant_id"]) == ["sub-01", "sub-02"]


def test_untransformable_space_is_a_one_line_error(fmriprep_site, tmp_path, monkeypatch):
    sim, _, _, env = fmriprep_site
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    deriv = tmp_path / "other"
    write_description(deriv)
    anat = deriv / "sub-01" / "anat"
    anat.mkdir(parents=True)
    shape, affine = mni_grid(2.0)
    nb.Nifti1Image(np.zeros(shape, np.float32), affine).to_filename(
        anat / "sub-01_space-MNIColin27_label-GM_probseg.nii.gz")
    out = tmp_path / "out"
    proc = run_app(sim.root, out, "participant", "--derivatives", deriv, "--resolution", "4")
    assert_one_line_error(proc, "space-MNIColin27", "fetch-templates",
                          "sub-01_space-MNIColin27_label-GM_probseg.nii.gz")
    assert not list(out.rglob("sub-01_space-*"))
