"""The CLI on layouts built to look like public datasets (OpenNeuro, HCP, MNE-BIDS MEG).

participants.tsv top-codes and bins ages, writes units and decimal commas, has columns no
level uses and a row for the MEG empty-room recording; some participants have no anatomical
image at all. The participant level (``--check-only``: only its own behaviour is tested)
finishes with exit 0 and skipped rows; the group level types what it models and names the
value it cannot read.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from _bids_factory import make_dataset, tree_digest, write_image
from test_cli_bids_app import assert_one_line_error, run_app

PARTICIPANTS = (
    "participant_id\tage\tsex\tgroup\thandedness\tweight\n"
    "sub-01\t89+\tmale\tpatient\tR\t70 kg\n"
    "sub-02\t26-30\tF\tcontrol\t??\t65,5\n"
    "sub-03\t\"26,9\"\tM\tcontrol\tL\tn/a\n"
    "sub-04\t31 years\tother\tpatient\tambidextrous (self-report)\t80\n"
    "sub-05\t40\tF\tcontrol\tR\t75\n"
    "sub-06\t52\tM\tcontrol\tR\t90\n"                  # withdrawn: no sub-06/ folder
    "sub-emptyroom\tn/a\tn/a\tn/a\tn/a\tn/a\n"
)


def public_like(root):
    """Four participants with a T1w, one with only func/, an MNE-BIDS empty-room recording."""
    make_dataset(root, subjects=("01", "02", "03", "04"), participants=PARTICIPANTS)
    (root / "participants.json").write_text(json.dumps({
        "age": {"Description": "age at scan", "Units": "years"},
        "sex": {"Levels": {"male": "male", "F": "female", "M": "male", "other": "other"}},
    }))
    return add_without_anatomy(root)


def add_without_anatomy(root):
    """sub-05 with only func/ and MNE-BIDS' sub-emptyroom (meg/), neither with anatomy."""
    func = root / "sub-05" / "func"
    write_image(func / "sub-05_task-rest_bold.nii.gz")
    (func / "sub-05_task-rest_bold.json").write_text(
        json.dumps({"RepetitionTime": 2.0, "TaskName": "rest"}))
    meg = root / "sub-emptyroom" / "ses-20200101" / "meg"
    meg.mkdir(parents=True)
    (meg / "sub-emptyroom_ses-20200101_task-noise_meg.fif").write_bytes(b"\0" * 64)
    (meg / "sub-emptyroom_ses-20200101_task-noise_meg.json").write_text(
        json.dumps({"SamplingFrequency": 1000, "PowerLineFrequency": 50}))
    return root


@pytest.fixture()
def dataset(tmp_path):
    return public_like(tmp_path / "bids")


def test_participant_level_skips_participants_without_anatomy(dataset, tmp_path):
    before = tree_digest(dataset)
    out = tmp_path / "out"
    proc = run_app(dataset, out, "participant", "--check-only", check_code=0)
    assert "4 of 4 participant(s) finished, 3 skipped (no anatomical image)" in proc.stdout
    assert "skipping 3 participant(s)" in proc.stderr and "Traceback" not in proc.stderr
    assert tree_digest(dataset) == before
    summary = pd.read_csv(out / "participant_summary.tsv", sep="\t").set_index("participant_id")
    assert summary["status"].to_dict() == {
        "sub-01": "ok", "sub-02": "ok", "sub-03": "ok", "sub-04": "ok",
        "sub-05": "skipped", "sub-06": "skipped", "sub-emptyroom": "skipped"}
    assert summary.loc["sub-05", "reason"] == "no T1w, T2w or FLAIR image, func data only"
    assert summary.loc["sub-emptyroom", "reason"] == "no T1w, T2w or FLAIR image, meg data only"
    assert summary.loc["sub-06", "reason"] == "listed in participants.tsv, no sub-06/ folder"
    assert (summary.loc[["sub-05", "sub-06", "sub-emptyroom"], "n_images"] == 0).all()
    assert not (out / "sub-05.html").exists() and not (out / "sub-emptyroom.html").exists()
    # recorded like any participant (parallel jobs' merged summaries keep the row)
    record = next((out / "sub-emptyroom" / "log").glob("*/summary.tsv"))
    assert "\tskipped\t" in record.read_text()
    record = json.loads(sorted((out / "logs").glob("participant-*.json"))[-1].read_text())
    assert record["outcomes"]["sub-emptyroom"]["status"] == "skipped"
    # covariates shown as typed, with what was written; columns no level uses as written
    report = (out / "sub-01.html").read_text()
    assert "89+ (read as 89 years, censored)" in report and "70 kg" in report
    assert "26-30 (read as 28 years, range)" in (out / "sub-02.html").read_text()
    assert "ambidextrous (self-report)" in (out / "sub-04.html").read_text()


def test_requested_participant_without_anatomy_is_an_error(dataset, tmp_path):
    proc = run_app(dataset, tmp_path / "out", "participant", "--check-only",
                   "--participant-label", "01", "emptyroom")
    assert_one_line_error(proc, "sub-emptyroom", "meg data only", "--participant-label")
    assert not (tmp_path / "out" / "sub-01.html").exists()
    proc = run_app(dataset, tmp_path / "out", "participant", "--check-only",
                   "--participant-label", "sub-05")
    assert_one_line_error(proc, "sub-05", "func data only")


def test_nobody_with_an_anatomical_image_is_an_error(tmp_path):
    root = public_like(tmp_path / "bids")
    for sub in ("01", "02", "03", "04"):
        for path in (root / f"sub-{sub}" / "anat").iterdir():
            path.unlink()
    proc = run_app(root, tmp_path / "out", "participant", "--check-only")
    assert_one_line_error(proc, "no participant has a T1w, T2w or FLAIR image")


@pytest.mark.parametrize("participants", [
    None,                                                       # RECOMMENDED, not REQUIRED
    "subject,age\nsub-01,30\n",                                 # not a TSV
    "participant_id\tage\tsex\nsub-01\tthirty\tX\nsub-02\t40\tF\n",   # values nobody types
])
def test_participant_level_never_fails_on_participants_tsv(tmp_path, participants):
    root = make_dataset(tmp_path / "bids", subjects=("01", "02"))
    if participants is None:
        (root / "participants.tsv").unlink()
    else:
        (root / "participants.tsv").write_text(participants)
    out = tmp_path / "out"
    proc = run_app(root, out, "participant", "--check-only", check_code=0)
    assert "2 of 2 participant(s) finished" in proc.stdout
    if participants is None or "," in participants:
        assert "participants.tsv" in proc.stderr and "goes on without it" in proc.stderr
    else:
        assert "thirty" in (out / "sub-01.html").read_text()


def test_group_level_ignores_columns_it_does_not_model(tmp_path):
    """An unreadable weight only matters when it is modelled: unmodelled, the run gets past
    typing (and stops at the missing derivatives); as a confound it is a one-line error naming
    file, column, line, participant and value (every kind of such error:
    test_covariates.test_unreadable_values_are_one_line_errors)."""
    tsv = ("participant_id\tage\tsex\tdiagnosis\tweight\nsub-01\t89+\tM\tAD\theavy\n"
           "sub-02\t40\tF\tCN\t70\n")
    root = make_dataset(tmp_path / "bids", subjects=("01", "02"), participants=tsv)
    proc = run_app(root, tmp_path / "out", "group", "--contrast", "diagnosis")
    assert_one_line_error(proc, "no GMmod images")
    assert "column 'age': 1 top-coded ('89+')" in proc.stderr
    proc = run_app(root, tmp_path / "out", "group", "--contrast", "diagnosis",
                   "--confound", "weight")
    assert_one_line_error(proc, "column 'weight', line 2 (sub-01)", "value 'heavy'")
