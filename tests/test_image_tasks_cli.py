"""Image tasks end to end through the real CLIs on a simulated dataset.

``genbrain finetune`` trains (tiny preset, 4 mm grid, a few steps), then the participant level
applies the model (``--enhance`` / ``--impute``) on the simulator's MNI maps given as
``--derivatives``: BIDS-Derivatives outputs that pybids reads, sidecars, report panels, and a
participant without the model's sources failing alone (exit 2) while the others finish.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from bids import BIDSLayout

from test_cli_bids_app import assert_one_line_error, run_app

from bids_genbrain.cohort import build_cohort
from bids_genbrain.model.presets import get_preset
from bids_genbrain.model.train import TrainConfig, fit
from bids_genbrain.templates import brain_mask

GENBRAIN = shutil.which("genbrain") or str(Path(sys.executable).parent / "genbrain")
SPACE = "space-MNI152NLin6Asym_res-4"
TRAIN = ["--preset", "tiny", "--resolution", "4", "--batch-size", "4", "--seed", "2"]
SAMPLE = ["--average", "2", "--sampling-steps", "4"]


def genbrain(*args) -> subprocess.CompletedProcess:
    return subprocess.run([GENBRAIN, *map(str, args)], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def site(sim_small, tmp_path_factory):
    """sim_small with its MNI maps as derivatives; sub-05 has no T1w/FLAIR map, sub-06 no
    FLAIR map (its raw FLAIR exists: only the preprocessed one is missing)."""
    root = tmp_path_factory.mktemp("tasks")
    maps = root / "maps"
    shutil.copytree(sim_small.mnimaps, maps)
    for path in [*maps.glob("sub-05/anat/*desc-preproc_*"),
                 *maps.glob("sub-06/anat/*desc-preproc_FLAIR*")]:
        path.unlink()
    return root


@pytest.fixture(scope="module")
def synthesis_model(site):
    out = site / "ckpt_syn"
    proc = genbrain("finetune", site / "maps", "--task", "synthesize", "--source", "T1w",
                    "--target", "FLAIR", "--out", out, "--steps", "10", "--participant_label",
                    "01", "02", "03", "04", *TRAIN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def participant(sim_small, site, out, *args, code):
    return run_app(sim_small.root, out, "participant", "--derivatives", site / "maps",
                   "--resolution", "4", "--nprocs", "1", "--skip-bids-validation", *SAMPLE,
                   *args, check_code=code)


def test_impute_flair_end_to_end(sim_small, site, synthesis_model):
    config = json.loads((synthesis_model / "config.json").read_text())
    assert config["task"] == {"name": "synthesize", "modalities": [], "sources": ["T1w"],
                              "target": "FLAIR", "corruption": {}}
    # n_images counts training targets: 4 participants' FLAIR maps (their T1w maps condition)
    assert config["image_conditions"] == ["T1w"] and config["provenance"]["n_images"] == 4
    out = site / "out_syn"
    proc = participant(sim_small, site, out, "--participant-label", "01", "05", "06",
                       "--model", synthesis_model, "--impute", "FLAIR", code=2)
    # sub-05 has no T1w: it alone fails, with a one-line reason naming what it lacks
    assert "sub-05: --impute FLAIR needs T1w" in proc.stderr and "Traceback" not in proc.stderr
    assert "2 of 3 participant(s) finished" in proc.stdout
    name = f"sub-06_{SPACE}_desc-synthetic_FLAIR"
    image = out / "sub-06" / "anat" / f"{name}.nii.gz"
    data = np.asanyarray(nb.load(image).dataobj)
    mask = brain_mask(4)
    assert np.isfinite(data).all() and np.all(data[~mask] == 0) and data[mask].std() > 0
    side = json.loads((out / "sub-06" / "anat" / f"{name}.json").read_text())
    assert side["Sources"] == [f"bids::sub-06/anat/sub-06_{SPACE}_desc-preproc_T1w.nii.gz"]
    assert side["ModelSHA256"] == config["weights_sha256"] and side["Average"] == 2
    assert len(side["Seeds"]) == 2 and side["Task"] == "synthesize" and "Quality" not in side
    # sub-01 has a FLAIR: not imputed without --impute-existing
    assert not list((out / "sub-01").rglob("*desc-synthetic*"))
    assert "not imputed" in (out / "sub-01.html").read_text()
    report = (out / "sub-06.html").read_text()
    assert "Imputed images" in report and report.count("<svg") >= 1
    assert (out / "sub-06" / "figures" / "sub-06_desc-synthetic_FLAIR.svg").is_file()
    layout = BIDSLayout(out, validate=True, is_derivative=True)
    assert layout.get(desc="synthetic", suffix="FLAIR", extension=".nii.gz",
                      return_type="file") == [str(image)]

    # --impute-existing imputes sub-01's FLAIR too and compares it with the real one
    participant(sim_small, site, out, "--participant-label", "01", "06", "--model",
                synthesis_model, "--impute", "FLAIR", "--impute-existing", code=0)
    side = json.loads((out / "sub-01" / "anat" / f"sub-01_{SPACE}_desc-synthetic_FLAIR.json")
                      .read_text())
    assert side["ComparedWith"].endswith(f"sub-01_{SPACE}_desc-preproc_FLAIR.nii.gz")
    assert set(side["Quality"]) == {"PSNR", "RMSE", "SSIM", "MS_SSIM"}
    assert np.isfinite(list(side["Quality"].values())).all()
    # sub-06's image was finished by the first run with the same settings: reused as is
    assert np.array_equal(np.asanyarray(nb.load(image).dataobj), data)

    # --reports-only (no model) re-draws the panels from the outputs' sidecars: input, output
    # and, for sub-01, the real FLAIR side by side (3 columns of 3 slices, 2 for sub-06)
    figures = {s: out / f"sub-{s}" / "figures" / f"sub-{s}_desc-synthetic_FLAIR.svg"
               for s in ("01", "06")}
    for figure in figures.values():
        figure.unlink()
    (out / "sub-06.html").unlink()
    participant(sim_small, site, out, "--participant-label", "01", "06", "--reports-only",
                code=0)
    assert [figures[s].read_text().count("<image") for s in ("01", "06")] == [9, 6]
    report = (out / "sub-01.html").read_text()
    assert "Imputed images" in report and "--reports-only" in report
    assert f"{side['Quality']['PSNR']:.4g}" in report  # the table's quality, from the sidecar
    assert "Imputed images" in (out / "sub-06.html").read_text()

    # a model for another task: one line, exit 2, before any participant is processed (the
    # other mismatches are tests/test_image_tasks.py's: check_model_for, Config)
    proc = run_app(sim_small.root, site / "out_wrong", "participant", "--derivatives",
                   site / "maps", "--resolution", "4", "--model", synthesis_model, "--enhance")
    assert_one_line_error(proc, "not enhancement")
    assert not list((site / "out_wrong").rglob("sub-*"))


def test_enhance_end_to_end_from_a_pretrained_checkpoint(sim_small, site):
    pre, tuned = site / "ckpt_pre", site / "ckpt_enh"
    # a "population" checkpoint: unconditional T1w + FLAIR (genbrain pretrain's library path)
    store = build_cohort([site / "maps"], site / "pre_store", modalities=["T1w", "FLAIR"],
                         resolution=4.0, progress=False)
    fit(store, pre, TrainConfig(steps=4, batch_size=4, lr=1e-3, device="cpu", progress=False),
        arch=get_preset("tiny"))
    proc = genbrain("finetune", site / "maps", "--task", "enhance", "--modality", "T1w",
                    "FLAIR", "--model", pre, "--out", tuned, "--steps", "6", "--batch-size",
                    "4", "--seed", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fine-tuned from" in proc.stdout
    config = json.loads((tuned / "config.json").read_text())
    assert config["task"]["name"] == "enhance" and config["task"]["modalities"] == ["T1w",
                                                                                    "FLAIR"]
    assert config["provenance"]["parent"]["path"] == str(pre.resolve())
    assert config["architecture"]["in_channels"] == 2
    out = site / "out_enh"
    proc = participant(sim_small, site, out, "--participant-label", "01", "05", "--model",
                       tuned, "--enhance", code=2)
    assert "sub-05: --enhance: the model enhances T1w, FLAIR" in proc.stderr
    for modality in ("T1w", "FLAIR"):
        name = f"sub-01_{SPACE}_desc-enhanced_{modality}"
        data = np.asanyarray(nb.load(out / "sub-01" / "anat" / f"{name}.nii.gz").dataobj)
        assert np.isfinite(data).all() and np.all(data[~brain_mask(4)] == 0)
        side = json.loads((out / "sub-01" / "anat" / f"{name}.json").read_text())
        assert side["Sources"] == [f"bids::sub-01/anat/sub-01_{SPACE}_desc-preproc_"
                                   f"{modality}.nii.gz"]
        assert side["Task"] == "enhance" and side["ModelSHA256"] == config["weights_sha256"]
    layout = BIDSLayout(out, validate=True, is_derivative=True)
    assert len(layout.get(subject="01", desc="enhanced", extension=".nii.gz")) == 2
    assert "Enhanced images" in (out / "sub-01.html").read_text()


@pytest.mark.parametrize("args, fragment", [
    (["--task", "synthesize", "--source", "T1w"], "--target"),
    (["--task", "enhance", "--modality", "GM"], "scans"),
    (["--task", "denoise"], "unknown task"),
])
def test_finetune_bad_input_exits_2(site, tmp_path, args, fragment):
    """Checked before torch is imported: a few seconds each."""
    proc = genbrain("finetune", site / "maps", "--out", tmp_path / "ck", *args, *TRAIN)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("genbrain finetune: error:")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
