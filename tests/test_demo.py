"""``genbrain demo`` end to end, at the smallest settings (CI runs the default demo itself).

The demo's point is its report: a participant level on a small study, then a group level on an
MNI-only site whose real and synthetic d maps are held against the planted effect. At these
settings (8 mm grid, 10 training steps) the numbers are noise; what is checked is that every
stage ran through the real CLI path, that the printed agreement is the one computed from the
group level's outputs, and that the report names the planted effect and N per group.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_demo_runs_both_levels_and_states_agreement_with_the_truth(tmp_path):
    out = tmp_path / "demo"
    command = [shutil.which("genbrain") or str(BIN / "genbrain"), "demo", str(out),
               "--participants", "1", "--site-size", "16", "--population", "12",
               "--pretrain-steps", "5", "--steps", "10", "--n-synthetic", "8",
               "--sampling-steps", "2", "--resolution", "8", "--nprocs", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # participant level on the native study: a report and MNI outputs for the participant
    study = out / "study_outputs"
    assert (study / "sub-01.html").is_file()
    assert list(study.glob("sub-01/anat/*space-MNI152NLin6Asym_res-8_*label-GM_probseg.nii.gz"))

    # group level fine-tuned from the population checkpoint, which was pretrained here
    site = out / "site_outputs"
    assert (out / "population_model" / "model.safetensors").is_file()
    [d_real] = (site / "group" / "bwas").glob("*desc-real_stat-d_statmap.json")
    sidecar = json.loads(d_real.read_text())
    assert sidecar["TrainedFromScratch"] is False
    participants = pd.read_csv(out / "site" / "participants.tsv", sep="\t")
    assert sidecar["GroupSizes"] == participants["diagnosis"].value_counts().to_dict()

    # the printed agreement is the comparison table's, and the summary file holds the same
    comparison = pd.read_csv(site / "group" / "bwas" / "contrast-diagnosis_comparison.tsv",
                             sep="\t").set_index("metric")
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["real_r"] == pytest.approx(comparison.loc["r", "real"])
    assert summary["synthetic_r"] == pytest.approx(comparison.loc["r", "synthetic"])
    assert f"r = {comparison.loc['r', 'real']:.2f}" in proc.stdout
    assert f"synthetic map vs real site map:        r = {summary['synthetic_real_r']:.2f}" \
        in proc.stdout
    groups = " / ".join(f"{n} {level}" for level, n in sidecar["GroupSizes"].items())
    assert f"real site sample: {groups}, {sidecar['DegreesOfFreedom']} residual df" \
        in proc.stdout

    html = (site / "group.html").read_text()
    assert "Planted effect (simulated ground truth)" in html
    assert "Agreement with the reference map" in html
