"""``genbrain augment`` end to end on a two-site study; bad input; no test participant leaks."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _study_factory import write_study

from bids_genbrain.bids import read_participants
from bids_genbrain.cli.tools import app

GENBRAIN = shutil.which("genbrain") or str(Path(sys.executable).parent / "genbrain")
QUICK = ["--resolution", "8", "--preset", "tiny", "--steps", "30", "--batch-size", "8",
         "--sampling-steps", "4", "--ratio-step", "1.0", "--draws", "2", "--bootstrap", "100",
         "--max-trees", "25", "--seed", "1", "--quiet"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("augment"), n_per_site=30, sites=("A", "B"))


@pytest.fixture(scope="module")
def augmented(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("augment_out") / "out"
    before = sorted(p.relative_to(study) for p in study.rglob("*"))
    result = CliRunner().invoke(app, [
        "augment", str(study / "deriv"), "--participants", str(study / "bids"), "--out",
        str(out), "--contrast", "diagnosis", "--train-site", "A", "--regress", "age",
        "--regress-ratio-step", "3", "--regress-epochs", "2", "--work-dir",
        str(out.parent / "work"), *QUICK])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before  # inputs untouched
    return out


def _table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name, sep="\t")


def test_outputs_and_metrics(augmented):
    out = augmented
    metrics = _table(out, "contrast-diagnosis_desc-augmentation_metrics.tsv")
    assert metrics["ratio"].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert set(metrics["test_set"]) == {"within-site test (A)", "cross-site test (B)"}
    assert metrics.groupby("ratio")["n_synthetic"].first().tolist() == [0, 18, 36, 54]
    for m in ("auroc", "accuracy"):
        assert ((metrics[f"{m}_ci_low"] <= metrics[m]) &
                (metrics[m] <= metrics[f"{m}_ci_high"])).all()
    # the planted diagnosis effect is found without synthetic images, also at the other site
    zero = metrics[metrics["ratio"] == 0].set_index("test_set")
    assert zero.loc["cross-site test (B)", "auroc"] > 0.75
    for ratio in ("0p0", "1p0", "2p0", "3p0"):
        per = _table(out, f"contrast-diagnosis_desc-ratio{ratio}_metrics.tsv")
        assert len(per) == 2 and json.loads(
            (out / f"contrast-diagnosis_desc-ratio{ratio}_metrics.json").read_text())["auroc"]
    draws = _table(out, "contrast-diagnosis_desc-hyperparameters_metrics.tsv")
    assert len(draws) == 8 and draws.groupby("ratio")["chosen"].sum().eq(1).all()
    assert draws["n_estimators"].max() <= 25
    sidecar = json.loads((out / "contrast-diagnosis_desc-hyperparameters_metrics.json")
                         .read_text())
    assert sidecar["Ranges"]["learning_rate"] == {"low": 0.01, "high": 0.3, "scale": "log"}
    regression = _table(out, "contrast-age_desc-regression_metrics.tsv")
    assert regression["ratio"].tolist() == [0.0, 0.0, 3.0, 3.0]
    assert (regression["mae"] > 0).all() and (regression["mae"] < 40).all()


def test_splits_atlas_and_report(augmented, study):
    out = augmented
    splits = _table(out, "contrast-diagnosis_desc-splits_metrics.tsv")
    at_a = splits[splits["site"] == "A"]
    assert at_a["split"].value_counts().to_dict() == {"train": 18, "validation": 6, "test": 6}
    assert (at_a.groupby("split")["label"].value_counts().unstack() ==
            at_a.groupby("split")["label"].value_counts().unstack().iloc[:, [0]].values).all(
                axis=None)  # balanced classes in every set
    assert (splits[splits["site"] == "B"]["split"] == "site").all()
    assert set(splits.loc[splits["generator"], "participant_id"]) == \
        set(at_a.loc[at_a["split"] == "train", "participant_id"])
    sources = _table(out, "contrast-diagnosis_desc-syntheticsources_metrics.tsv")
    assert len(sources) == 54
    assert set(sources["conditions_from"]) <= set(splits.loc[splits["generator"],
                                                             "participant_id"])
    labels = _table(out, "atlas-HarvardOxford_dseg.tsv")
    assert len(labels) == 113 and {"index", "name", "n_voxels"} <= set(labels.columns)
    atlas = json.loads((out / "atlas-HarvardOxford_dseg.json").read_text())["Atlas"]
    assert atlas["Name"] == "HarvardOxford" and atlas["Version"] and atlas["Licence"]
    assert nb.load(out / "space-MNI152NLin6Asym_res-8_atlas-HarvardOxford_dseg.nii.gz").shape \
        == (23, 28, 23)
    features = _table(out, "atlas-HarvardOxford_desc-features_metrics.tsv")
    assert (features["cohort"] == "synthetic").sum() == 54 and (features["cohort"] == "real").sum() == 60
    report = (out / "augment.html").read_text()
    for title in ("Summary", "Augmentation curves", "Study and splits", "Generator and leakage",
                  "Hyper-parameter search", "Atlas", "Regression of age"):
        assert title in report, title
    assert (out / "figures" / "contrast-diagnosis_desc-augmentationauroc.svg").is_file()
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"


def assert_one_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_one_line(study, tmp_path):
    proc = subprocess.run([GENBRAIN, "augment", str(study / "deriv"), "--participants",
                           str(study / "bids"), "--out", str(tmp_path / "o"), "--contrast",
                           "diagnosis", "--train-site", "Z", *QUICK],
                          capture_output=True, text=True, timeout=300)
    assert_one_line(proc, "--train-site 'Z'", "sites are ['A', 'B']")
    result = CliRunner().invoke(app, ["augment", str(study / "deriv"), "--participants",
                                      str(study / "bids"), "--out", str(tmp_path / "p"),
                                      "--contrast", "handedness", "--train-site", "A", *QUICK])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "handedness" in result.output


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_test_participant_reaches_the_generator(study, tmp_path):
    """Replace the image and the covariates of every participant outside the training split
    (validation, test, the other site) and run the generator stages again: its weights and
    every synthetic image are bit-identical, so nothing of those participants reached it."""
    from bids_genbrain.evaluate.augmentation import load_study, sample_synthetic, train_generator

    altered = tmp_path / "altered"
    shutil.copytree(study, altered)
    runs = {}
    for name, root in (("original", study), ("altered", altered)):
        participants = read_participants(root / "bids")
        kwargs = dict(modality="GMmod", contrast="diagnosis", site_column="site",
                      train_site="A", conditions=["age", "sex"], resolution=8.0, seed=1,
                      progress=False)
        first = load_study([root / "deriv"], participants, tmp_path / name / "work", **kwargs)
        if name == "altered":  # everything of the non-training participants changes
            others = [p for p in first.table.index if p not in first.ids("train")]
            rng = np.random.default_rng(9)
            for pid in others:
                path = next((root / "deriv" / pid).rglob("*.nii.gz"))
                img = nb.load(path)
                noise = rng.uniform(0, 1, img.shape).astype(np.float32)
                nb.save(nb.Nifti1Image(noise * (np.asanyarray(img.dataobj) > 0), img.affine),
                        path)
            table = pd.read_csv(root / "bids" / "participants.tsv", sep="\t")
            rows = table["participant_id"].isin(others)
            table.loc[rows, "age"] = 99.0
            table.loc[rows, "sex"] = np.where(table.loc[rows, "sex"] == "F", "M", "F")
            table.to_csv(root / "bids" / "participants.tsv", sep="\t", index=False)
            participants = read_participants(root / "bids")
            first = load_study([root / "deriv"], participants, tmp_path / name / "work2",
                               **kwargs)
        generator = train_generator(first, tmp_path / name / "generator",
                                    tmp_path / name / "work", model=None, preset="tiny",
                                    steps=20, batch_size=8, lr=None, seed=1, device="cpu",
                                    progress=False)
        synthetic = sample_synthetic(first, generator, 12, tmp_path / name / "synthetic",
                                     tmp_path / name / "work", seed=1, sampling_steps=3,
                                     cfg_scale=1.2, average=1, batch_size=8, device="cpu",
                                     progress=False)
        assert set(generator.store.table["participant_id"]) == set(first.ids("train"))
        runs[name] = (first, generator, synthetic)
    (a, ga, sa), (b, gb, sb) = runs["original"], runs["altered"]
    assert a.table["split"].equals(b.table["split"])
    assert not a.table["age"].equals(b.table["age"])  # the change did reach the study
    assert _sha(ga.directory / "model.safetensors") == _sha(gb.directory / "model.safetensors")
    assert sa.table.drop(columns=["row"]).equals(sb.table.drop(columns=["row"]))
    for pid in sa.table["participant_id"]:
        img_a = next((sa.directory / pid).rglob("*.nii.gz"))
        img_b = next((sb.directory / pid).rglob("*.nii.gz"))
        assert np.array_equal(np.asanyarray(nb.load(img_a).dataobj),
                              np.asanyarray(nb.load(img_b).dataobj))
