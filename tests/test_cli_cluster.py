"""fMRIPrep's spellings and a cluster's habits, through the real command line.

fMRIPrep wrappers and SLURM arrays pass fMRIPrep's options, run one participant per job into
one OUTPUT_DIR, reload a run's settings from its TOML, and rebuild reports afterwards. Each
case runs the console script (a subprocess, or its ``main`` in-process where only parsing is
checked) on a tiny hand-built dataset with ``--check-only``, so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from _bids_factory import make_dataset

from bids_genbrain.cli import bids_app
from bids_genbrain.config import Config

SCRIPT = shutil.which("bids_genbrain") or str(Path(sys.executable).parent / "bids_genbrain")


def run_app(*args, cwd: Path, check_code: int | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)
    if check_code is not None:
        assert proc.returncode == check_code, proc.stdout + proc.stderr
    return proc


def parsed(argv, monkeypatch, capsys) -> Config:
    """The validated Config the command line builds (nothing is run)."""
    seen = {}
    monkeypatch.setattr(bids_app, "run", lambda config: seen.setdefault("c", config) and 0)
    with pytest.raises(SystemExit) as exc:
        bids_app.main([str(a) for a in argv])
    assert exc.value.code == 0, capsys.readouterr().err
    return seen["c"]


def error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        bids_app.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    return err[0]


@pytest.fixture()
def dataset(tmp_path):
    return make_dataset(tmp_path / "bids", subjects=("01", "02", "03", "04"),
                        modalities=("T1w",))


def test_fmriprep_wrapper_options_are_accepted(dataset, tmp_path, monkeypatch, capsys):
    config = parsed([dataset, tmp_path / "out", "participant", "group", "--contrast", "dx",
                     "--notrack",
                     "--fs-license-file", "/opt/freesurfer/license.txt", "--fs-no-reconall",
                     "--nthreads", "2", "--omp-nthreads", "1", "--mem_mb", "16000",
                     "--output-spaces", "MNI152NLin6Asym:res-2", "anat",
                     "--stop-on-first-crash", "--clean-workdir", "--skip_bids_validation"],
                    monkeypatch, capsys)
    assert config.analysis_level == ["participant", "group"]
    assert config.nprocs == 2 and config.omp_nthreads == 1
    assert config.mem_gb == pytest.approx(16000 / 1024) and config.resolution == 2.0
    assert config.stop_on_first_crash and config.clean_workdir and config.skip_bids_validation
    config = parsed([dataset, tmp_path / "out", "participant", "--mem", "8G",
                     "--output-spaces", "MNI152NLin6Asym:res-4"], monkeypatch, capsys)
    assert config.mem_gb == 8.0 and config.resolution == 4.0
    # default work dir: ./work of where the command runs (as fMRIPrep), not inside OUTPUT_DIR
    assert config.work_dir == Path.cwd().resolve() / "work"


def test_default_cpus_and_threads_follow_the_job(dataset, tmp_path, monkeypatch, capsys):
    """A cluster job bound to 3 of a node's CPUs gets 3 processes, not the node's count, and
    an OMP_NUM_THREADS budget is kept (torch on an oversubscribed core slows ~10x)."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {4, 5, 6}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    config = parsed([dataset, tmp_path / "out", "participant"], monkeypatch, capsys)
    assert config.nprocs == 3 and config.omp_nthreads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = parsed([dataset, tmp_path / "out", "participant"], monkeypatch, capsys)
    assert config.nprocs == 3 and config.omp_nthreads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # never more threads than processes
    config = parsed([dataset, tmp_path / "out", "participant"], monkeypatch, capsys)
    assert config.omp_nthreads == 3
    config = parsed([dataset, tmp_path / "out", "participant", "--omp-nthreads", "2"],
                    monkeypatch, capsys)
    assert config.omp_nthreads == 2  # an explicit option wins


@pytest.mark.parametrize("extra, fragment", [
    (["--output-spaces", "MNI152NLin2009cAsym"], "MNI152NLin2009cAsym: bids_genbrain writes"),
    (["--output-spaces", "fsaverage5"], "fsaverage5: bids_genbrain writes MNI152NLin6Asym"),
    (["--output-spaces", "MNI152NLin6Asym:res-0"], "res- of --output-spaces must be at least 0.5"),
    (["--output-spaces", "MNI152NLin6Asym:res-native"], "only a res-<mm> modifier"),
    (["--output-spaces", "MNI152NLin6Asym:res-1", "MNI152NLin6Asym:res-2"], "2 grids"),
    (["--resolution", "4", "--output-spaces", "MNI152NLin6Asym:res-2"], "disagree"),
    (["--mem_mb", "-4"], "--mem '-4': give MB"),
    (["--mem", "0.5G"], "--mem must be at least 1 GB"),
    (["--mem-gb", "4", "--mem", "16G"], "disagree"),
    (["--reports-only", "--boilerplate-only"], "not both"),
    (["--config-file", "missing.toml"], "--config-file not found"),
])
def test_fmriprep_spellings_with_values_that_cannot_work(dataset, tmp_path, capsys, extra,
                                                        fragment):
    line = error_line([dataset, tmp_path / "out", "participant", *extra], capsys)
    assert line.startswith("bids_genbrain: error: ") and fragment in line, line


def test_work_dir_inside_bids_dir_is_refused(dataset, tmp_path, capsys, monkeypatch):
    line = error_line([dataset, tmp_path / "out", "participant", "-w", dataset / "work"],
                      capsys)
    assert "must not be inside BIDS_DIR" in line
    monkeypatch.chdir(dataset)  # the default ./work would be inside the dataset
    line = error_line([dataset, tmp_path / "out", "participant"], capsys)
    assert "default ./work" in line and "give -w/--work-dir" in line


def test_config_file_is_written_by_every_run_and_reloads(dataset, tmp_path):
    out = tmp_path / "out"
    run_app(dataset, out, "participant", "--check-only", "--participant-label", "01",
            "--seed", "7", "--nprocs", "1", "--mem-gb", "3", cwd=tmp_path, check_code=0)
    (run_toml,) = (out / "logs").glob("participant-*.toml")
    (sub_toml,) = (out / "sub-01" / "log").glob("*/bids_genbrain.toml")
    assert run_toml.read_text() == sub_toml.read_text()
    settings = tomllib.loads(sub_toml.read_text())["settings"]
    assert settings["seed"] == 7 and settings["participant_label"] == ["01"]
    # reloaded into another OUTPUT_DIR; a command-line option overrides the file
    out2 = tmp_path / "out2"
    run_app(dataset, out2, "participant", "--config-file", sub_toml, "--participant-label", "02",
            cwd=tmp_path, check_code=0)
    (reloaded,) = (out2 / "logs").glob("participant-*.toml")
    again = tomllib.loads(reloaded.read_text())["settings"]
    assert again["participant_label"] == ["02"] and again["seed"] == 7
    assert again["mem_gb"] == 3.0 and again["check_only"] is True
    assert again["output_dir"] == str(out2)
    assert (out2 / "sub-02.html").is_file() and not (out2 / "sub-01.html").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('[settings]\nseed = "seven"\n')
    proc = run_app(dataset, out2, "participant", "--config-file", bad, cwd=tmp_path)
    assert proc.returncode == 2 and "setting 'seed'" in proc.stderr
    bad.write_text('[settings]\nsede = 1\n')
    proc = run_app(dataset, out2, "participant", "--config-file", bad, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown setting 'sede'" in proc.stderr


def _summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "participant_summary.tsv", sep="\t").set_index("participant_id")


def test_parallel_jobs_into_one_output_dir(dataset, tmp_path):
    """N participant jobs started at once on one OUTPUT_DIR (a SLURM array): all finish, every
    shared file is intact, each participant has its own log folder, and the merged summary
    (rebuilt by the last job, and again by --reports-only) holds every participant."""
    (dataset / "sub-03" / "anat" / "sub-03_T1w.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([SCRIPT, str(dataset), str(out), "participant", "--check-only",
                               "--participant-label", sub, "--nprocs", "1"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for sub in ("01", "02", "03", "04")]
    codes = {}
    for sub, proc in zip(("01", "02", "03", "04"), procs, strict=True):
        _, err = proc.communicate(timeout=600)
        codes[sub] = proc.returncode
        assert "Traceback" not in err, err
    assert codes == {"01": 0, "02": 0, "03": 1, "04": 0}
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "bids_genbrain"
    assert not list(out.rglob("*.part*")), "temporary files left behind"
    assert "sub-*/log/" in (out / ".bidsignore").read_text().splitlines()
    for sub in ("01", "02", "03", "04"):
        (log_dir,) = (out / f"sub-{sub}" / "log").iterdir()
        row = pd.read_csv(log_dir / "summary.tsv", sep="\t")
        assert list(row["participant_id"]) == [f"sub-{sub}"]
        assert (log_dir / "bids_genbrain.toml").is_file() and (log_dir / "run.log").is_file()
        assert (out / f"sub-{sub}.html").is_file()
    run_ids = {p.name for p in out.glob("sub-*/log/*")}
    assert len(run_ids) == 4, "jobs shared a run id"
    assert len(list((out / "logs").glob("participant-*.json"))) == 4
    summary = _summary(out)
    assert sorted(summary.index) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert summary.loc["sub-03", "status"] == "failed" and summary.loc["sub-01", "status"] == "ok"
    (out / "participant_summary.tsv").unlink()
    proc = run_app(dataset, out, "participant", "--reports-only", cwd=tmp_path, check_code=0)
    assert "reports of 4 participant(s) rebuilt" in proc.stdout
    rebuilt = _summary(out)
    assert rebuilt.loc["sub-03", "status"] == "failed" and len(rebuilt) == 4
    assert "failed" in (out / "sub-03.html").read_text()


def test_dataset_description_is_never_clobbered(dataset, tmp_path):
    out = tmp_path / "out"
    run_app(dataset, out, "participant", "--check-only", "--participant-label", "01",
            cwd=tmp_path, check_code=0)
    before = (out / "dataset_description.json").read_text()
    run_app(dataset, out, "participant", "--check-only", "--participant-label", "02",
            cwd=tmp_path, check_code=0)
    assert (out / "dataset_description.json").read_text() == before
    other = make_dataset(tmp_path / "other", subjects=("01",))
    proc = run_app(other, out, "participant", "--check-only", cwd=tmp_path)
    assert proc.returncode == 2 and "holds derivatives of" in proc.stderr
    assert (out / "dataset_description.json").read_text() == before


def test_stop_on_first_crash_and_clean_workdir(dataset, tmp_path):
    (dataset / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(b"not a nifti")
    out, work = tmp_path / "out", tmp_path / "work"
    stale = work / "sub_01" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("x")
    kept = work / "sub_010" / "other_job.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("x")
    proc = run_app(dataset, out, "participant", "group", "--contrast", "dx", "--check-only",
                   "--stop-on-first-crash", "--clean-workdir", "--participant-label", "01", "02", "03", "-w", work,
                   cwd=tmp_path, check_code=1)
    assert "stopping after sub-02" in proc.stderr and "group level not run" in proc.stderr
    assert not (out / "sub-03.html").exists(), "ran on after the first failure"
    assert not stale.exists() and kept.exists(), "--clean-workdir removed another job's folder"
    assert not list((out / "logs").glob("group-*"))


def test_boilerplate_only_writes_methods_and_nothing_else(dataset, tmp_path):
    out = tmp_path / "out"
    proc = run_app(dataset, out, "participant", "group", "--boilerplate-only", "--sloppy",
                   "--resolution", "4", "--contrast", "diagnosis", "--confound", "site_scanner",
                   "--steps", "321", cwd=tmp_path, check_code=0)
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "MNI152NLin6Asym at 4 mm" in citation and "N4" in citation
    assert "CITATION.md" in proc.stdout and "CITATION_group.md" in proc.stdout
    group = (out / "logs" / "CITATION_group.md").read_text()
    assert "trained from scratch" in group and "for 321 steps" in group, group
    assert "tested diagnosis with age and sex where recorded, site when there are several, " \
           "site_scanner as confound(s)" in group, group
    assert not list(out.glob("sub-*")), "--boilerplate-only processed participants"
    assert not (out / "group").exists() and not (out / "group.html").exists()
