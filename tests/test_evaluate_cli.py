"""``genbrain evaluate`` end to end: a checkpoint sampled for K = 1, 2; known answers with
"synthetic" cohorts made of copies of the real images and of new simulated people."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _study_factory import write_study
from test_augment_cli import GENBRAIN, assert_one_line

from bids_genbrain.cli.tools import app

QUICK = ["--draws", "4", "--max-images", "24", "--diversity-pairs", "6", "--seed", "2",
         "--quiet"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = write_study(tmp_path_factory.mktemp("evaluate"), n_per_site=20, sites=("A", "B"))
    shutil.copy(root / "bids" / "participants.tsv", root / "deriv" / "participants.tsv")
    return root


def _evaluate(study: Path, out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(app, ["evaluate", str(study / "deriv"), "--out", str(out),
                                      "--work-dir", str(out.parent / f"{out.name}_work"),
                                      *extra, *QUICK])
    assert result.exit_code == 0, result.output
    return out


def _tsv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name, sep="\t")


def test_evaluate_a_checkpoint(study, tmp_path):
    ckpt = tmp_path / "ckpt"
    result = CliRunner().invoke(app, ["pretrain", str(study / "deriv"), "--out", str(ckpt),
                                      "--preset", "tiny", "--resolution", "8", "--steps", "20",
                                      "--batch-size", "8", "--seed", "1"])
    assert result.exit_code == 0, result.output
    out = _evaluate(study, tmp_path / "out", "--model", str(ckpt), "--max-average", "2",
                    "--sampling-steps", "3")
    similarity = _tsv(out, "desc-similarity_metrics.tsv")
    assert set(similarity["effect"]) == {"age (continuous)", "sex: M - F"}
    for effect, rows in similarity.groupby("effect"):
        assert sorted(rows["cohort"]) == ["real", "synthetic", "synthetic"]
        assert sorted(rows["average"].dropna()) == [1.0, 2.0]
        assert (rows["n"] == 20).all() and (rows["n_draws"] == 4).all()
        assert ((rows["ci_low"] <= rows["cosine_t"]) & (rows["cosine_t"] <= rows["ci_high"])).all()
    # the real sample finds the planted age effect of the reference half
    real_age = similarity[(similarity["cohort"] == "real") &
                          (similarity["effect"] == "age (continuous)")].iloc[0]
    assert real_age["cosine_t"] > 0.3
    for k in (1, 2):
        folder = out / "synthetic" / f"average-{k}"
        sidecar = next(folder.rglob("sub-synth0001_*.json"))
        assert json.loads(sidecar.read_text())["Average"] == k
        assert len(pd.read_csv(folder / "participants.tsv", sep="\t")) == 40
    distribution = _tsv(out, "desc-distribution_metrics.tsv")
    assert distribution["set"].tolist() == ["real", "synthetic", "synthetic"]
    assert distribution["ms_ssim_diversity"].between(0, 1).all()
    memo = _tsv(out, "desc-memorization_metrics.tsv")
    assert len(memo) == 40 and {"dcr", "residual_r", "max_r", "flagged"} <= set(memo.columns)
    regional = _tsv(out, "atlas-HarvardOxford_desc-regional_metrics.tsv")
    assert len(regional) > 80 and {"cohens_d", "age_slope_real",
                                   "age_slope_synthetic"} <= set(regional.columns)
    meta = json.loads((out / "atlas-HarvardOxford_desc-regional_metrics.json").read_text())
    assert meta["Atlas"]["Name"] == "HarvardOxford" and "median_abs_d" in meta["Summary"]
    report = (out / "evaluate.html").read_text()
    for title in ("Summary", "Age and sex similarity", "Memorization",
                  "Distribution and diversity", "Regional plausibility", "Example images"):
        assert title in report, title
    for figure in ("desc-similarity_curve.svg", "desc-regionald_bar.svg",
                   "desc-regionald_glass.svg", "desc-examples.png"):
        assert (out / "figures" / figure).is_file(), figure
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == \
        "derivative"
    assert list((out / "logs").glob("evaluate-*.json"))


def test_copies_are_flagged_and_new_people_are_not(study, tmp_path):
    """Known answers: a 'synthetic' cohort of copies of the real images is flagged whole and
    has the real regional distribution (|d| ~ 0); new simulated people with the same effects
    are not copies, and carry the age effect about as well as real samples do."""
    copies = tmp_path / "copies"
    shutil.copytree(study / "deriv", copies)
    out = _evaluate(study, tmp_path / "copies_out", "--synthetic", str(copies))
    memo = _tsv(out, "desc-memorization_metrics.tsv")
    assert memo["flagged"].all()
    regional = _tsv(out, "atlas-HarvardOxford_desc-regional_metrics.tsv")
    assert regional["cohens_d"].abs().max() < 1e-6

    people = write_study(tmp_path / "people", n_per_site=20, sites=("A", "B"), seed=7)
    shutil.copy(people / "bids" / "participants.tsv", people / "deriv" / "participants.tsv")
    out = _evaluate(study, tmp_path / "people_out", "--synthetic", str(people / "deriv"))
    memo = _tsv(out, "desc-memorization_metrics.tsv")
    assert memo["flagged"].mean() < 0.1
    similarity = _tsv(out, "desc-similarity_metrics.tsv").set_index(["effect", "cohort"])
    age_syn = similarity.loc[("age (continuous)", "synthetic")]
    age_real = similarity.loc[("age (continuous)", "real")]
    assert age_syn["cosine_t"] > 0.3 and abs(age_syn["cosine_t"] - age_real["cosine_t"]) < 0.25
    assert 0.0 < age_syn["fraction_ge_real"] <= 1.0
    regional = _tsv(out, "atlas-HarvardOxford_desc-regional_metrics.tsv")
    assert np.median(regional["cohens_d"].abs()) < 0.5
    distribution = _tsv(out, "desc-distribution_metrics.tsv").set_index("set")
    copies_mmd = _tsv(tmp_path / "copies_out", "desc-distribution_metrics.tsv") \
        .set_index("set").loc["synthetic", "mmd_rbf"]
    assert copies_mmd < distribution.loc["synthetic", "mmd_rbf"] + 0.05


def test_bad_input_is_one_line(study, tmp_path):
    deriv = str(study / "deriv")
    proc = subprocess.run([GENBRAIN, "evaluate", deriv, "--out", str(tmp_path / "o"),
                           "--synthetic", deriv, "--model", deriv, *QUICK],
                          capture_output=True, text=True, timeout=300)
    assert_one_line(proc, "not both")
    result = CliRunner().invoke(app, ["evaluate", deriv, "--out", str(tmp_path / "p"),
                                      "--synthetic", deriv, "--condition", "handedness",
                                      *QUICK])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "handedness" in result.output
