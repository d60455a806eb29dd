"""Group level through the real CLI on MNI-space maps with a planted diagnosis effect."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from _model_factory import planted_region, write_site
from test_cli_bids_app import SCRIPT, assert_one_line_error

from bids_genbrain.templates import brain_mask

RES = 8.0
N = 24


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A two-site cohort: patients lose GM in the planted region; the truth map is written."""
    return write_site(tmp_path_factory.mktemp("group"), N, RES)


def run_group(site: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, site / "bids", out, "group", "--derivatives", site / "deriv",
         "--resolution", str(RES), "--preset", "tiny", "--steps", "30", "--batch-size", "8",
         "--n-synthetic", "16", "--sampling-steps", "5", "--condition", "age", "sex",
         "--contrast", "diagnosis", "--seed", "3", *extra],
        capture_output=True, text=True, timeout=900)


def test_group_level_end_to_end(site, tmp_path):
    out = tmp_path / "out"
    proc = run_group(site, out, "--reference-map", str(site / "truth_d.nii.gz"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    bwas = out / "group" / "bwas"
    for desc in ("real", "synthetic"):
        for stat in ("t", "p", "d", "q"):
            path = bwas / (f"space-MNI152NLin6Asym_res-8_contrast-diagnosis_desc-{desc}"
                           f"_stat-{stat}_statmap.nii.gz")
            assert path.is_file(), path
            meta = json.loads(path.with_name(path.name.replace(".nii.gz", ".json"))
                              .read_text())
            assert meta
    # the real map finds the planted effect (patients lower in the region)
    d_real = np.asanyarray(nb.load(bwas / ("space-MNI152NLin6Asym_res-8_contrast-diagnosis"
                                           "_desc-real_stat-d_statmap.nii.gz")).dataobj)
    region = planted_region(RES)
    mask = brain_mask(RES)
    sign = np.sign(np.mean(d_real[region]))
    assert abs(np.mean(d_real[region])) > 3 * abs(np.mean(d_real[mask & ~region]))
    # comparison with the reference (truth) for both maps, with a bootstrap CI for the real one
    table = pd.read_csv(bwas / "contrast-diagnosis_comparison.tsv", sep="\t")
    r_real = table.set_index("metric").loc["r"]
    assert sign > 0 and r_real["real"] > 0.3
    assert r_real["real_ci_low"] < r_real["real"] < r_real["real_ci_high"]
    assert np.isfinite(table["synthetic"]).all()
    # synthetic cohort: its own derivatives dataset, balanced over diagnosis
    synth = pd.read_csv(out / "synthetic" / "participants.tsv", sep="\t")
    assert len(synth) == 16 and synth["diagnosis"].value_counts().to_dict() == {"AD": 8, "CN": 8}
    desc = json.loads((out / "synthetic" / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    memo = pd.read_csv(bwas / "memorization.tsv", sep="\t")
    assert len(memo) == 16 and memo["max_r"].between(-1, 1).all()
    model = out / "group" / "model"
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()
    provenance = json.loads((model / "config.json").read_text())["provenance"]
    assert provenance["train_config"]["lr"] == 1e-3  # tiny from scratch (presets.default_lr)
    report = (out / "group.html").read_text()
    assert "Trained from scratch" in report and "Memorization check" in report
    assert "Agreement with the reference map" in report
    # covariates typed as written by public datasets, flagged in the cohort table and report
    cohort = pd.read_csv(tmp_path / "work" / "group" / "cohort" / "table.tsv", sep="\t")
    first = cohort.set_index("participant_id").loc[["sub-01", "sub-02", "sub-03", "sub-04"]]
    assert first["age"].tolist()[:2] == [89.0, 68.0] and first["age"].notna().all()
    assert first["age_flag"].fillna("").tolist() == ["censored", "range", "", ""]
    assert "Covariates" in report and "1 top-coded (" in report and "89+" in report
    assert "flagged censored" in report and "1 range(s) (" in report and "66-70" in report
    # ... and in the outputs: the cohort's typed covariates beside what was written
    typed = pd.read_csv(out / "group" / "covariates.tsv", sep="\t", keep_default_na=False)
    assert len(typed) == N and "sub-emptyroom" not in set(typed["participant_id"])
    assert typed["age_written"].tolist()[:2] == ["89+", "66-70"]
    assert typed["age_flag"].tolist()[:3] == ["censored", "range", "n/a"]
    assert json.loads((out / "group" / "covariates.json").read_text())["age"]["Units"] == "years"
    (record,) = (out / "logs").glob("group-*.json")
    typing = {c["column"]: c for c in json.loads(record.read_text())["covariates"]}
    assert "1 top-coded ('89+')" in typing["age"]["what was done"]
    assert_run_narrated(out, proc.stdout)
    assert_fidelity_and_gate(out, report)
    assert_reports_only_rebuilds(site, out, tmp_path)


def assert_run_narrated(out: Path, stdout: str) -> None:
    """The terminal gets one summary line; the run's log file every stage and its result."""
    fidelity = pd.read_csv(out / "group" / "bwas" / "fidelity.tsv", sep="\t")
    (row,) = fidelity[fidelity["condition"] == "diagnosis"].itertuples()
    (line,) = [x for x in stdout.splitlines() if x.startswith("group level:")]
    assert f"synthetic vs real {row.contrast} (r of d maps {row.r_d:.2f}, {row.status})" in line
    assert str(out / "group.html") in line and "synthetic image(s) kept of 16" in line
    (log,) = (out / "logs").glob("group-*.log")
    text = log.read_text()
    for step in ("cohort", "model", "synthesis", "privacy", "fidelity", "bwas", "comparison"):
        assert f"{step}: started" in text and f"{step}: finished after" in text, step
    assert "the model trains on" in text and "trained from scratch, 30 step(s)" in text
    assert f"fidelity of diagnosis ({row.contrast}): r of d maps {row.r_d:.3f}" in text
    assert "against " in text and " r real " in text and "report: " in text


def assert_reports_only_rebuilds(site: Path, out: Path, tmp_path: Path) -> None:
    """``--reports-only`` rebuilds group.html and its methods from the finished run, training
    and sampling nothing; without a finished run of these settings it is a one-line error."""
    reference = ("--reference-map", str(site / "truth_d.nii.gz"))
    kept = [out / "group" / "model" / "model.safetensors",
            *sorted((out / "synthetic").rglob("*.nii.gz"))]
    before = {p: p.stat().st_mtime_ns for p in kept}
    (out / "group.html").unlink()
    (out / "logs" / "CITATION_group.md").unlink()
    proc = run_group(site, out, *reference, "--reports-only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "group.html rebuilt" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == before, "--reports-only trained or sampled"
    report = (out / "group.html").read_text()
    assert "Conditional fidelity" in report and "Agreement with the reference map" in report
    methods = (out / "logs" / "CITATION_group.md").read_text()
    assert f"on {N} of the site's {N} participants' GMmod maps" in methods, methods
    assert "16 synthetic images remained" in methods
    for other in (run_group(site, tmp_path / "fresh", "--reports-only"),  # no run
                  run_group(site, out, "--seed", "4", "--reports-only")):  # another run's
        assert_one_line_error(other, "group/model")


def assert_fidelity_and_gate(out: Path, report: str) -> None:
    """Conditional fidelity, the copy gate and the df warning of a 30-step model on 24 people.

    Nothing is held out at this size (--holdout auto), so fidelity is in-sample. 30 steps
    learn no diagnosis effect: the synthetic map must be reported as not to be trusted.
    """
    bwas = out / "group" / "bwas"
    fidelity = pd.read_csv(bwas / "fidelity.tsv", sep="\t")
    assert fidelity["condition"].tolist() == ["age", "sex", "diagnosis"]
    assert fidelity["contrast"].tolist()[1:] == ["sex: M - F", "diagnosis: CN - AD"]
    assert (fidelity["real_cohort"] == "real participants (the training set: in-sample)").all()
    assert np.isfinite(fidelity[["r_d", "cosine_t"]].to_numpy()).all()
    assert set(fidelity["status"]) <= {"learned", "not learned", "not measured"}
    # the site has no age or sex effect: where the real map is noise, nothing is measured
    quiet = fidelity["r_d_ceiling"] < 0.3
    assert (fidelity.loc[quiet, "status"] != "learned").all()
    assert (fidelity.loc[quiet & (fidelity["r_d"] < 0.3), "status"] == "not measured").all()
    dx = fidelity.set_index("condition").loc["diagnosis"]
    assert dx["r_d_ceiling"] > 0.5, dx.to_dict()  # the planted effect shows in the real map
    assert dx["status"] == "not learned" and dx["r_d"] < 0.3, dx.to_dict()
    assert dx["n_real"] == N and dx["n_synthetic"] == 16
    assert "Conditional fidelity" in report and "cosine" in report
    assert "The synthetic BWAS map of diagnosis is not to be trusted" in report
    for stat in ("d", "t"):
        meta = json.loads((bwas / ("space-MNI152NLin6Asym_res-8_contrast-diagnosis_desc-"
                                   f"synthetic_stat-{stat}_statmap.json")).read_text())
        assert meta["Warning"].startswith("Do not trust this synthetic BWAS map")
        assert meta["ConditionalFidelity"]["Effects"][0]["Status"] == "not learned"
        assert "residual degrees of freedom" in meta["StabilityWarning"]  # 16 images, 12 df
    real_meta = json.loads((bwas / ("space-MNI152NLin6Asym_res-8_contrast-diagnosis_desc-"
                                    "real_stat-d_statmap.json")).read_text())
    assert "Warning" not in real_meta and real_meta["DegreesOfFreedom"] == 19
    assert "19 residual degrees of freedom (fewer than 20)" in real_meta["StabilityWarning"]
    # N per group of both cohorts, and the df warning, in the report
    assert "12 AD, 12 CN" in report and "8 AD, 8 CN" in report
    assert "fewer than 20" in report
    # the copy gate: new columns, a baseline of the other training participants, no copies
    memo = pd.read_csv(bwas / "memorization.tsv", sep="\t")
    for column in ("max_r", "raw_r_copy", "dcr", "dcr_training_id", "residual_r",
                   "max_residual_r", "flagged"):
        assert column in memo.columns, column
    assert (memo["dcr"] > 0).all() and not memo["flagged"].any()
    baseline = pd.read_csv(bwas / "memorization_baseline.tsv", sep="\t")
    assert len(baseline) == N and set(baseline["source"]) == {"training (other participants)"}
    assert (baseline["image_id"] != baseline["dcr_training_id"]).all()
    split = pd.read_csv(out / "group" / "split.tsv", sep="\t")
    assert len(split) == N and (split["split"] == "training").all()


@pytest.mark.parametrize("extra, fragments", [
    (["--contrast", "handedness"], ["handedness"]),
    (["--contrast", "diagnosis", "--confound", "weight"], ["weight"]),
    (["--contrast", "diagnosis", "--modality", "T1w"], ["T1w"]),
    (["--contrast", "diagnosis", "--holdout", "0.9"], ["--holdout", "(0, 0.5]"]),
])
def test_group_bad_input_exits_2(site, tmp_path, extra, fragments):
    proc = subprocess.run(
        [SCRIPT, site / "bids", tmp_path / "out", "group", "--derivatives", site / "deriv",
         "--resolution", str(RES), "--preset", "tiny", "--steps", "2", *extra],
        capture_output=True, text=True, timeout=600)
    assert_one_line_error(proc, *fragments)


def test_group_needs_contrast(site, tmp_path):
    proc = subprocess.run([SCRIPT, site / "bids", tmp_path / "out", "group"],
                          capture_output=True, text=True, timeout=600)
    assert_one_line_error(proc, "--contrast")


def test_synthetic_conditions_from_tsv(site, tmp_path):
    tsv = tmp_path / "wanted.tsv"
    tsv.write_text("age\tsex\tdiagnosis\n45\tF\tAD\n72\tM\tCN\n60\tF\tCN\n"
                   "50\tM\tAD\n66\tF\tAD\n58\tM\tCN\n")
    proc = subprocess.run(
        [SCRIPT, site / "bids", tmp_path / "out", "group", "--derivatives", site / "deriv",
         "--resolution", str(RES), "--preset", "tiny", "--steps", "2", "--sampling-steps", "2",
         "--condition", "age", "sex", "--contrast", "diagnosis",
         "--synthetic-conditions", tsv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    synth = pd.read_csv(tmp_path / "out" / "synthetic" / "participants.tsv", sep="\t")
    assert list(synth["age"]) == [45, 72, 60, 50, 66, 58]
    assert list(synth["diagnosis"]) == ["AD", "CN", "CN", "AD", "AD", "CN"]


@pytest.mark.slow  # two group levels (~200 s); --model fine-tuning is also in the default
# suite through test_population and test_model_fetch
def test_group_level_fine_tunes_a_checkpoint(site, tmp_path):
    """--model: the site's checkpoint of a first run is fine-tuned (at its tiny preset's
    fine-tuning rate 1e-3, parent recorded).

    The first run holds half of the participants out (--holdout 0.5; a quarter, 3 per group,
    leaves the held-out design age + sex + site + diagnosis rank-deficient here): they are
    recorded, never reach training, and are what fidelity and the copy gate's baseline use.
    """
    first = tmp_path / "first"
    proc = run_group(site, first, "--holdout", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_heldout_never_trained(first)
    parent = first / "group" / "model"
    out = tmp_path / "tuned"
    proc = run_group(site, out, "--model", str(parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    provenance = json.loads((out / "group" / "model" / "config.json").read_text())["provenance"]
    assert provenance["parent"]["path"] == str(parent.resolve())
    assert provenance["train_config"]["lr"] == 1e-3  # presets.FINE_TUNING_LR["tiny"]
    report = (out / "group.html").read_text()
    assert f"Fine-tuned from {parent}" in report and "Trained from scratch" not in report


def test_group_level_on_a_subset(site, tmp_path):
    """--participant-label and an exclusion TSV (failed QC) select the cohort; the report and
    the statmaps' N say so; a file without participant_id is a one-line error."""
    out = tmp_path / "out"
    qc = tmp_path / "failed_qc.tsv"
    qc.write_text("participant_id\treason\nsub-03\tmotion\n04\tbad registration\n")
    labels = [f"{i:02d}" for i in range(1, 21)]
    proc = run_group(site, out, "--participant-label", *labels, "--exclude-participants", str(qc))
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "group" / "bwas" / ("space-MNI152NLin6Asym_res-8_contrast-"
                       "diagnosis_desc-real_stat-d_statmap.json")).read_text())
    assert meta["N"] == 18
    report = (out / "group.html").read_text()
    assert "Participants left out" in report
    for text in ("sub-03", "motion", "sub-04", "bad registration", "sub-21",
                 "not in --participant-label"):
        assert text in report, text
    (record,) = (out / "logs").glob("group-*.json")
    kept = json.loads(record.read_text())["cohort_selection"]["kept"]
    assert len(kept) == 18 and "sub-03" not in kept and "sub-22" not in kept
    bad = tmp_path / "bad.tsv"
    bad.write_text("subject\tage\nsub-01\t3\n")
    proc = run_group(site, tmp_path / "out2", "--exclude-participants", str(bad))
    assert_one_line_error(proc, "needs a participant_id column")


def assert_heldout_never_trained(out: Path) -> None:
    split = pd.read_csv(out / "group" / "split.tsv", sep="\t")
    heldout = split.loc[split["split"] == "held-out", "participant_id"].tolist()
    assert len(heldout) == N // 2 and len(split) == N
    meta = json.loads((out / "group" / "split.json").read_text())
    assert meta["Rule"] == ("50% held out (--holdout 0.5), stratified by diagnosis: 6 of 12 AD, "
                            "6 of 12 CN")
    assert meta["TrainingImages"] == N // 2 and meta["HeldOutImages"] == N // 2
    # the model saw the training participants only
    provenance = json.loads((out / "group" / "model" / "config.json").read_text())["provenance"]
    assert provenance["n_images"] == N // 2
    bwas = out / "group" / "bwas"
    memo = pd.read_csv(bwas / "memorization.tsv", sep="\t")
    trained = set(split.loc[split["split"] == "training", "participant_id"])
    for column in ("nearest_training_id", "dcr_training_id", "max_residual_training_id"):
        assert set(memo[column]) <= trained, column
    baseline = pd.read_csv(bwas / "memorization_baseline.tsv", sep="\t")
    held = baseline[baseline["source"] == "held-out"]
    assert sorted(held["image_id"]) == sorted(heldout)
    assert set(baseline["dcr_training_id"]) <= trained
    fidelity = pd.read_csv(bwas / "fidelity.tsv", sep="\t").set_index("condition")
    assert (fidelity["real_cohort"] == "held-out real participants").all()
    assert fidelity.loc["diagnosis", "n_real"] == N // 2
    dx = fidelity.loc["diagnosis"]
    quiet = dx["r_d"] < 0.3 and dx["r_d_ceiling"] < 0.3  # the held-out map is noise
    assert dx["status"] == ("not measured" if quiet else
                            "learned" if dx["r_d"] >= 0.3 else "not learned"), dx.to_dict()
    # the training participants' real map is the second reference, and the two real maps agree
    # on the planted effect (a 12-participant map against another)
    assert np.isfinite(fidelity.loc["diagnosis", "r_d_second"])
    assert fidelity.loc["diagnosis", "r_d_real_split"] > 0.2
    report = (out / "group.html").read_text()
    assert "50% held out" in report and "held-out real participants" in report
