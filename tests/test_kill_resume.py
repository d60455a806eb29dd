"""Kill anywhere, rerun, same result, through the real CLI (tests/_kill_harness.py; the full
measurement with more kills is benchmarks/bench_kill.py)."""

from __future__ import annotations

import pytest
from _kill_harness import (comparable, invalid, kill_sequence, output_files, run_watched,
                           snapshot)
from test_cli_bids_app import SCRIPT
from test_group_cli import RES, site  # noqa: F401 - the site fixture

BY_HASH = (".nii.gz", ".h5", "model.safetensors")
"""Outputs compared by sha256 (deterministic on one thread; transforms by content, see
_kill_harness.digest); the rest by name."""


def _ignore(name: str) -> bool:
    """Run logs (logs/, sub-<l>/log/) are named by run id: not compared."""
    return name.startswith("logs/") or name.split("/")[1:2] == ["log"]


def _hashed(reference: dict[str, str]) -> set[str]:
    return {n for n in reference if n.endswith(BY_HASH) and not _ignore(n)}


def _group_command(site, out):  # noqa: F811
    return [SCRIPT, site / "bids", out, "group", "--derivatives", site / "deriv",
            "--resolution", str(RES), "--preset", "tiny", "--steps", "60", "--batch-size", "8",
            "--n-synthetic", "16", "--sampling-steps", "5", "--condition", "age", "sex",
            "--contrast", "diagnosis", "--seed", "3", "--omp-nthreads", "1", "--nprocs", "1",
            "-w", out.parent / f"{out.name}-work", "--reference-map", site / "truth_d.nii.gz"]


def test_truncated_files_are_found(tmp_path):
    """The harness's completeness check fails every kind of output cut short."""
    import nibabel as nb
    import numpy as np
    from safetensors.numpy import save_file

    nb.save(nb.Nifti1Image(np.random.default_rng(0).random((20, 20, 20)), np.eye(4)),
            tmp_path / "a.nii.gz")
    (tmp_path / "b.json").write_text('{"a": 1}')
    (tmp_path / "c.tsv").write_text("x\ty\n1\t2\n")
    save_file({"w": np.ones(1000, np.float32)}, str(tmp_path / "d.safetensors"))
    (tmp_path / "e.html").write_text("<html><body>report</body></html>\n")
    assert [p.name for p in output_files(tmp_path) if invalid(p)] == []
    for path in output_files(tmp_path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    assert [p.name for p in output_files(tmp_path) if invalid(p)] == [
        "a.nii.gz", "b.json", "c.tsv", "d.safetensors", "e.html"]
    (tmp_path / ".a.nii.gz.host-1.x.part.nii.gz").write_bytes(b"half")  # a temporary
    assert ".a.nii.gz.host-1.x.part.nii.gz" not in [p.name for p in output_files(tmp_path)]


def test_two_references_differ_only_in_ignored_names():
    """Run logs are named by run id, so two uninterrupted runs never share them: they are not
    compared; any other file one run wrote and the other did not is an error."""
    a = {"logs/group-1.log": "x", "model.safetensors": "w", "group.html": "1"}
    b = {"logs/group-2.log": "y", "model.safetensors": "w", "group.html": "2"}
    assert comparable(a, b, _ignore) == ({"model.safetensors"}, {"group.html"})
    with pytest.raises(AssertionError, match="extra.tsv"):
        comparable(a, {**b, "extra.tsv": "z"}, _ignore)


def test_a_run_log_never_exists_empty(tmp_path):
    """A run killed before its first log record left an empty run log (bench_kill: 1 kill of
    23): the log now appears holding its first record, the run's command line."""
    from bids_genbrain.runlog import participant_log, run_log

    with run_log(tmp_path, "group", {}, 0, run_id="r1"), \
            participant_log(tmp_path, "01", "r1") as folder:
        logs = [tmp_path / "logs" / "group-r1.log", folder / "run.log"]
        assert [invalid(p) for p in logs] == [None, None]
        assert all("started: " in p.read_text() for p in logs)


@pytest.mark.slow
def test_group_level_killed_in_training_and_while_writing_statmaps(site, tmp_path):  # noqa: F811
    phases = ("training", "synthetic", "statmaps")
    ref = tmp_path / "reference"
    code, timeline, stderr = run_watched(_group_command(site, ref), ref,
                                         tmp_path / "reference-work", phases)
    assert code == 0, stderr
    reference = snapshot(ref)
    assert all(invalid(p) is None for p in output_files(ref))
    points = [("training", timeline.window("training") / 2), ("synthetic", 0.0),
              ("statmaps", 0.0)]
    out = tmp_path / "killed"
    result = kill_sequence("group", _group_command(site, out), out, tmp_path / "killed-work",
                           reference, _hashed(reference), phases, points, ignore=_ignore)
    assert sum(k.killed for k in result.kills) >= 2, result.kills
    assert not [k.partial_files for k in result.kills if k.partial_files]
    assert result.equal, (result.missing, result.extra, result.hash_differs,
                          result.invalid_after, result.rerun_stderr)
    assert result.n_hashed >= 9  # 8 statmaps + model weights at least


@pytest.mark.slow
def test_group_level_resumes_a_half_written_synthetic_batch(site, tmp_path):  # noqa: F811
    """A run killed after 5 of the 8 images of the first sampling batch (the case the kill
    above hits when it lands mid-batch): the rerun keeps those 5 and samples the 11 others,
    which no longer fill batches of 8 from row 0, and its outputs are still the
    uninterrupted run's, bit for bit."""
    import shutil

    out, work = tmp_path / "out", tmp_path / "work"
    code, _, stderr = run_watched(_group_command(site, out), out, work, ())
    assert code == 0, stderr
    reference = snapshot(out)
    subjects = sorted((out / "synthetic").glob("sub-synth*"))
    for folder in [*subjects[5:], out / "group" / "bwas"]:
        shutil.rmtree(folder)
    kept = {p: p.stat().st_mtime_ns for s in subjects[:5] for p in s.rglob("*.nii.gz")}
    code, _, stderr = run_watched(_group_command(site, out), out, work, ())
    assert code == 0, stderr
    assert len(kept) == 5 and all(p.stat().st_mtime_ns == t for p, t in kept.items())
    after, hashed = snapshot(out), _hashed(reference)
    assert sorted(n for n in hashed if after.get(n) != reference[n]) == []
    assert sum(n.startswith("synthetic/sub-synth") for n in hashed) == 16


@pytest.mark.slow
def test_participant_level_killed_during_registration(sim_small, tmp_path):
    phases = ("registration", "derivatives")

    def command(out):
        return [SCRIPT, sim_small.root, out, "participant", "--participant-label", "01",
                "--sloppy", "--resolution", "4", "--nprocs", "1", "--omp-nthreads", "1",
                "-w", out.parent / f"{out.name}-work"]

    ref = tmp_path / "reference"
    code, timeline, stderr = run_watched(command(ref), ref, tmp_path / "reference-work", phases)
    assert code == 0, stderr
    assert "registration" in timeline.starts, timeline
    reference = snapshot(ref)
    out = tmp_path / "killed"
    result = kill_sequence("participant", command(out), out, tmp_path / "killed-work",
                           reference, _hashed(reference), phases,
                           [("registration", timeline.window("registration") / 2)],
                           ignore=_ignore)
    assert result.kills[0].killed and not result.kills[0].partial_files
    assert result.equal, (result.missing, result.extra, result.hash_differs,
                          result.invalid_after, result.rerun_stderr)
    assert result.n_hashed >= 10  # the subject's MNI-space images and transforms
