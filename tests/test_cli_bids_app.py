"""The BIDS-App command line, run as a user runs it: a subprocess of the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _bids_factory import make_dataset, tree_digest

from bids_genbrain import __version__

SCRIPT = shutil.which("bids_genbrain") or str(Path(sys.executable).parent / "bids_genbrain")


def run_app(*args, check_code: int | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check_code is not None:
        assert proc.returncode == check_code, proc.stdout + proc.stderr
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("bids_genbrain: error:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture()
def dataset(tmp_path):
    return make_dataset(tmp_path / "bids", subjects=("01", "02", "03"),
                        modalities=("T1w", "FLAIR"))


def test_version_and_help():
    proc = run_app("--version", check_code=0)
    assert proc.stdout.strip() == f"bids_genbrain {__version__}"
    helptext = run_app("--help", check_code=0).stdout
    for option in ("--participant-label", "--session-label", "--bids-filter-file",
                   "--skip-bids-validation", "--work-dir", "--nprocs", "--omp-nthreads",
                   "--mem-gb", "--seed", "--device", "--derivatives", "--model", "--modality",
                   "--condition", "--contrast", "--n-synthetic", "--reference-map"):
        assert option in helptext


def test_participant_level_writes_valid_derivatives_root(dataset, tmp_path):
    from bids import BIDSLayout

    before = tree_digest(dataset)
    out = tmp_path / "out"
    proc = run_app(dataset, out, "participant", "--participant_label", "01", "sub-02",
                   "--nprocs", "1", "--seed", "7", "--check-only", check_code=0)
    assert "2 of 2 participant(s) finished" in proc.stdout
    assert tree_digest(dataset) == before, "the input dataset was modified"

    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids_genbrain"
    assert desc["GeneratedBy"][0]["Version"] == __version__
    assert desc["SourceDatasets"][0]["URL"] == dataset.resolve().as_uri()
    # pybids accepts the root as a derivatives dataset
    BIDSLayout(out, validate=True, is_derivative=True)

    assert (out / "sub-01.html").is_file() and (out / "sub-02.html").is_file()
    assert not (out / "sub-03.html").exists()
    report = (out / "sub-01.html").read_text()
    assert "sub-01_FLAIR.nii.gz" in report and "sub-01_T1w.nii.gz" in report

    logs = sorted((out / "logs").glob("participant-*.json"))
    record = json.loads(logs[-1].read_text())
    assert record["seed"] == 7 and record["config"]["participant_label"] == ["01", "sub-02"]
    assert record["versions"]["bids_genbrain"] == __version__
    assert record["outcomes"]["sub-02"]["status"] == "ok"


def test_broken_participant_does_not_sink_others(dataset, tmp_path):
    broken = dataset / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    broken.write_bytes(b"this is not a nifti file")
    out = tmp_path / "out"
    proc = run_app(dataset, out, "participant", "--check-only", check_code=1)
    assert "sub-02" in proc.stderr and "sub-02_T1w.nii.gz" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "sub-01.html").is_file() and (out / "sub-03.html").is_file()
    summary = (out / "participant_summary.tsv").read_text()
    assert "sub-02\tfailed" in summary and "sub-01\tok" in summary


def test_sessions_and_filter_file(tmp_path):
    ds = make_dataset(tmp_path / "bids", subjects=("01",), sessions=("pre", "post"))
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"t1w": {"session": "post"}}))
    out = tmp_path / "out"
    run_app(ds, out, "participant", "--bids-filter-file", filt, "--check-only", check_code=0)
    report = (out / "sub-01.html").read_text()
    assert "sub-01_ses-post_T1w.nii.gz" in report
    assert "sub-01_ses-pre_T1w.nii.gz" not in report
    out2 = tmp_path / "out2"
    run_app(ds, out2, "participant", "--session-label", "ses-pre", "--check-only", check_code=0)
    report = (out2 / "sub-01.html").read_text()
    assert "sub-01_ses-pre_T1w.nii.gz" in report and "ses-post" not in report


@pytest.mark.parametrize(
    "breakage, fragments",
    [
        ("no_description", ["dataset_description.json", "missing"]),
        ("empty", ["no subjects found"]),
        ("unknown_label", ["sub-99", "available: sub-01"]),
        ("output_is_input", ["OUTPUT_DIR must differ from BIDS_DIR"]),
        ("output_inside_input", ["inside BIDS_DIR must be under"]),
        ("bad_filter_file", ["filter.json", "unknown image kind"]),
        ("missing_bids_dir", ["BIDS_DIR does not exist"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, breakage, fragments):
    ds = make_dataset(tmp_path / "bids", subjects=("01", "02"))
    out = tmp_path / "out"
    extra: list[str] = []
    if breakage == "no_description":
        (ds / "dataset_description.json").unlink()
    elif breakage == "empty":
        for sub in ds.glob("sub-*"):
            shutil.rmtree(sub)
    elif breakage == "unknown_label":
        extra = ["--participant-label", "99"]
    elif breakage == "output_is_input":
        out = ds
    elif breakage == "output_inside_input":
        out = ds / "sub-01" / "out"
    elif breakage == "bad_filter_file":
        filt = tmp_path / "filter.json"
        filt.write_text(json.dumps({"dwi": {"session": "01"}}))
        extra = ["--bids-filter-file", str(filt)]
    elif breakage == "missing_bids_dir":
        ds = tmp_path / "nowhere"
    before = tree_digest(ds) if ds.exists() else {}
    proc = run_app(ds, out, "participant", "--check-only", *extra)
    assert_one_line_error(proc, *fragments)
    if ds.exists():
        assert tree_digest(ds) == before


def test_usage_error_exits_2():
    proc = run_app("a", "b", "sideways")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
