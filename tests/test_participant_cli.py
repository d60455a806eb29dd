"""Participant level through the CLI on a simulated dataset: derivatives, report, resume."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
from bids import BIDSLayout

from _bids_factory import tree_digest
from test_cli_bids_app import run_app
from test_public_layouts import add_without_anatomy

from bids_genbrain.simulate import load_ground_truth
from bids_genbrain.templates import brain_mask, mni_grid

EXPECTED = [
    "space-MNI152NLin6Asym_res-4_desc-preproc_T1w.nii.gz",
    "space-MNI152NLin6Asym_res-4_desc-preproc_FLAIR.nii.gz",
    "space-MNI152NLin6Asym_res-4_desc-brain_mask.nii.gz",
    "space-MNI152NLin6Asym_res-4_label-GM_probseg.nii.gz",
    "space-MNI152NLin6Asym_res-4_label-WM_probseg.nii.gz",
    "space-MNI152NLin6Asym_res-4_label-CSF_probseg.nii.gz",
    "space-MNI152NLin6Asym_res-4_label-GM_desc-modulated_probseg.nii.gz",
    "space-MNI152NLin6Asym_res-4_desc-log_jacobian.nii.gz",
    "from-T1w_to-MNI152NLin6Asym_mode-image_xfm.h5",
    "from-MNI152NLin6Asym_to-T1w_mode-image_xfm.h5",
]


def test_participant_level_preprocesses_simulated_dataset(sim_small, tmp_path):
    before = tree_digest(sim_small.root)
    out, work = tmp_path / "out", tmp_path / "work"
    args = [sim_small.root, out, "participant", "--participant-label", "01", "--sloppy",
            "--resolution", "4", "--nprocs", "2", "--omp-nthreads", "1", "-w", work]
    proc = run_app(*args, check_code=0)
    assert "1 of 1 participant(s) finished" in proc.stdout
    # nipype's node-by-node INFO lines (also from MultiProc workers) go to the log file only
    assert "nipype.workflow INFO" not in proc.stdout + proc.stderr
    (pypeline,) = (out / "sub-01" / "log").glob("*/pypeline.log")
    assert "nipype.workflow INFO" in pypeline.read_text()
    assert "T1w" in (out / "logs" / "CITATION.md").read_text()
    assert tree_digest(sim_small.root) == before, "the input dataset was modified"
    anat = out / "sub-01" / "anat"
    for name in EXPECTED:
        assert (anat / f"sub-01_{name}").is_file(), name
    side = json.loads((anat / "sub-01_space-MNI152NLin6Asym_res-4_desc-preproc_T1w.json")
                      .read_text())
    assert side["Sources"]
    report = (out / "sub-01.html").read_text()
    assert "Quality control" in report and "<svg" in report
    # valid derivatives root, indexed by pybids with our entities
    layout = BIDSLayout(out, validate=True, is_derivative=True)
    found = layout.get(subject="01", space="MNI152NLin6Asym", suffix="probseg", label="GM",
                       extension=".nii.gz", return_type="file")
    assert len(found) == 2  # probseg and modulated
    qc = pd.read_csv(out / "participants_qc_summary.tsv", sep="\t")
    assert set(qc["participant_id"]) == {"sub-01"}
    # the preprocessed GM map agrees with the simulator's truth on brain voxels
    truth = load_ground_truth(sim_small.groundtruth, "01", None, "T1w")
    ours = np.asanyarray(nb.load(out / "sub-01" / "anat" /
                                 "sub-01_space-MNI152NLin6Asym_res-4_label-GM_probseg.nii.gz"
                                 ).dataobj)
    mask = brain_mask(4)
    assert ours.shape == mni_grid(4)[0]
    r = np.corrcoef(ours[mask], truth.tissue["GM"][mask])[0, 1]
    assert r > 0.7, r

    # a rerun with the same work dir resumes: nothing is recomputed, outputs unchanged
    stamp = (out / "sub-01" / "anat" / f"sub-01_{EXPECTED[0]}").stat().st_mtime_ns
    proc = run_app(*args, check_code=0)
    assert (out / "sub-01" / "anat" / f"sub-01_{EXPECTED[0]}").stat().st_mtime_ns >= stamp


def test_multisession_dataset_with_a_broken_participant(tmp_path):
    """One subject with two sessions, and a second whose only T1w is a truncated file: the
    sessions are processed separately into ses- folders, each close to its own truth; the
    broken participant fails alone (exit 1, named on stderr and in the summary); participants
    without anatomy are skipped, and ages written as 89+ or 26-30 stop nothing."""
    import shutil

    from bids_genbrain.simulate import SimulationConfig, simulate_dataset

    sim = simulate_dataset(tmp_path / "bids", SimulationConfig.fast(
        n_subjects=2, n_sessions=2, modalities=("T1w",), seed=4))
    broken = sim.root / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_T1w.nii.gz"
    broken.write_bytes(broken.read_bytes()[:2000])  # a download cut short
    shutil.rmtree(sim.root / "sub-02" / "ses-1")
    # as public datasets are: ages top-coded and binned, an MNE-BIDS empty-room recording
    # and a participant with only func/ (skipped, not failed)
    tsv = pd.read_csv(sim.root / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    tsv.loc[tsv["participant_id"] == "sub-01", "age"] = "89+"
    tsv.loc[tsv["participant_id"] == "sub-02", "age"] = "26-30"
    tsv.to_csv(sim.root / "participants.tsv", sep="\t", index=False)
    add_without_anatomy(sim.root)
    before = tree_digest(sim.root)
    out = tmp_path / "out"
    proc = run_app(sim.root, out, "participant", "--sloppy", "--resolution", "4", "--nprocs",
                   "2", "--omp-nthreads", "1", "-w", tmp_path / "work", check_code=1)
    assert "sub-02" in proc.stderr and "sub-02_ses-2_T1w.nii.gz" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_digest(sim.root) == before, "the input dataset was modified"
    summary = pd.read_csv(out / "participant_summary.tsv", sep="\t").set_index("participant_id")
    assert summary.loc["sub-02", "status"] == "failed"
    assert summary.loc["sub-01", "status"] == "ok"
    assert (summary.loc[["sub-05", "sub-emptyroom"], "status"] == "skipped").all()
    assert "1 of 2 participant(s) finished, 2 skipped (no anatomical image)" in proc.stdout
    assert "89+ (read as 89 years, censored)" in (out / "sub-01.html").read_text()

    layout = BIDSLayout(out, validate=True, is_derivative=True)
    assert layout.get_sessions(subject="01") == ["1", "2"]
    mask = brain_mask(4)
    report = (out / "sub-01.html").read_text()
    for ses in ("1", "2"):
        anat = out / "sub-01" / f"ses-{ses}" / "anat"
        for name in EXPECTED:
            if "FLAIR" not in name:
                assert (anat / f"sub-01_ses-{ses}_{name}").is_file(), name
        assert f"ses-{ses}" in report
        gm = np.asanyarray(nb.load(
            anat / f"sub-01_ses-{ses}_space-MNI152NLin6Asym_res-4_label-GM_probseg.nii.gz"
        ).dataobj)[mask]
        truth = load_ground_truth(sim.groundtruth, "01", ses, "T1w").tissue["GM"][mask]
        r = np.corrcoef(gm, truth)[0, 1]
        assert r > 0.7, (ses, r)
    assert not (out / "sub-01" / "anat").exists()
