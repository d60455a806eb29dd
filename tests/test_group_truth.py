"""Group level through the CLI on a simulated site, compared with the planted truth."""

from __future__ import annotations

import json
import subprocess

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from test_cli_bids_app import SCRIPT

from bids_genbrain.simulate import SimulationConfig, load_effect_map, simulate_dataset
from bids_genbrain.simulation.groundtruth import effect_path

RES = 8.0  # at 4 mm the tiny model's 1,000 steps took 15+ min (slow suite budget: 30 min)
N = 20


@pytest.mark.slow
def test_group_maps_against_planted_truth(tmp_path):
    """N=20 single site: both maps are written, compared with the truth, real map points right.

    The model is fitted to GM probability (``--modality GM``), the measure the planted effect
    is defined on (modulation by each subject's Jacobian dilutes it, see
    benchmarks/results/bench_bwas_truth_GMmod_real.md). The ``tiny`` model, trained from scratch
    at its default learning rate for 1,000 steps as in the benchmark (median largest r of a
    sample with a training image 0.91 there; 0.21 after 400 steps with 4 DDIM steps), must
    sample brain-like images that are not copies. The d maps are ``patient - CN`` (second
    sorted level minus the first) and the planted effect is the GM change of patients versus
    controls (negative in its regions), so a real map that finds the effect correlates
    positively with the truth and is negative there.
    """
    config = SimulationConfig.fast(n_subjects=N, n_sites=1, modalities=("T1w",), native=False,
                                   mnimaps=True, mni_resolution=RES, seed=1)
    sim = simulate_dataset(tmp_path / "bids", config)
    reference = effect_path(sim.groundtruth, "GM", "diagnosis", RES)
    out = tmp_path / "out"
    proc = subprocess.run(
        [SCRIPT, sim.root, out, "group", "--derivatives", sim.mnimaps, "--resolution", "8",
         "--modality", "GM", "--preset", "tiny", "--steps", "1000", "--batch-size", "8",
         "--n-synthetic", "8", "--sampling-steps", "15", "--condition", "age", "sex",
         "--contrast", "diagnosis", "--seed", "0", "--reference-map", reference],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    bwas = out / "group" / "bwas"
    d_maps = {}
    for desc in ("real", "synthetic"):
        for stat in ("t", "d"):
            path = bwas / (f"space-MNI152NLin6Asym_res-8_contrast-diagnosis_desc-{desc}"
                           f"_stat-{stat}_statmap.nii.gz")
            assert path.is_file(), path
        d_maps[desc] = np.asanyarray(nb.load(path).dataobj, dtype=np.float64)
        meta = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert meta["Levels"] == {"reference": "CN", "active": "patient"}

    table = pd.read_csv(bwas / "contrast-diagnosis_comparison.tsv", sep="\t").set_index("metric")
    assert np.isfinite(table["synthetic"]).all(), table
    truth, _ = load_effect_map(sim.groundtruth, "GM", "diagnosis", RES)
    region = truth <= 0.5 * truth.min()
    assert truth.min() < 0 and region.any()
    real = d_maps["real"]
    brain = np.isfinite(real) & (real != 0)
    assert real[brain & region].mean() < min(0.0, real[brain & ~region].mean())
    assert table.loc["r", "real"] > 0
    assert table.loc["r", "real_ci_low"] < table.loc["r", "real"] < table.loc["r", "real_ci_high"]
    # brain-like samples (a real image correlates ~0.9 with its site's mean), none a copy
    memo = pd.read_csv(bwas / "memorization.tsv", sep="\t")
    assert 0.6 < memo["max_r"].median() and not memo["flagged"].any(), memo["max_r"].describe()
    # conditional fidelity of every condition, in-sample at N = 20 (--holdout auto holds
    # nobody out), and the synthetic map's sidecar says what it says
    fidelity = pd.read_csv(bwas / "fidelity.tsv", sep="\t").set_index("condition")
    assert list(fidelity.index) == ["age", "sex", "diagnosis"], fidelity
    assert np.isfinite(fidelity["r_d"]).all() and np.isfinite(fidelity["cosine_t"]).all()
    meta = json.loads((bwas / ("space-MNI152NLin6Asym_res-8_contrast-diagnosis_desc-synthetic"
                               "_stat-d_statmap.json")).read_text())
    status = fidelity.loc["diagnosis", "status"]
    assert meta["ConditionalFidelity"]["Effects"][0]["Status"] == status
    assert ("Warning" in meta) == (status != "learned"), fidelity.loc["diagnosis"].to_dict()
