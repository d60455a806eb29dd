"""One output folder, many writers: the group-level lock, and a disk that fills up mid-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import pytest

from test_cli_bids_app import SCRIPT, assert_one_line_error
from test_group_cli import RES, run_group, site  # noqa: F401 - the site fixture

from bids_genbrain.locking import LockError, exclusive_lock

HOLD = """
import sys, time
from bids_genbrain.locking import exclusive_lock
with exclusive_lock(sys.argv[1], "a test holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_refuses_a_second_holder_and_survives_sigkill(tmp_path):
    lock = tmp_path / "group" / ".lock"
    holder = _holder(lock)
    try:
        with pytest.raises(LockError) as err:
            with exclusive_lock(lock, "a group-level run"):
                pass
        message = str(err.value)
        assert str(lock) in message and f"pid {holder.pid}" in message
        assert "delete" in message and "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the killed holder's lock: the rerun takes it without any clearing
    assert lock.exists()
    with exclusive_lock(lock, "a group-level run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # a clean release removes the file


def test_lock_cleared_by_hand_is_not_shared(tmp_path):
    """Deleting a (believed stale) lock lets a new run in; the old holder's inode is ignored."""
    lock = tmp_path / ".lock"
    holder = _holder(lock)
    try:
        lock.unlink()
        with exclusive_lock(lock, "x"):
            with pytest.raises(LockError):
                with exclusive_lock(lock, "x"):
                    pass
    finally:
        holder.kill()
        holder.wait()


def test_two_group_runs_on_one_output_dir(site, tmp_path):  # noqa: F811
    """The second group level on the same OUTPUT_DIR refuses in one line naming the lock."""
    out = tmp_path / "out"
    args = [SCRIPT, site / "bids", out, "group", "--derivatives", site / "deriv",
            "--resolution", str(RES), "--preset", "tiny", "--steps", "100000", "--batch-size",
            "8", "--n-synthetic", "16", "--sampling-steps", "5", "--condition", "age", "sex",
            "--contrast", "diagnosis", "--seed", "3"]  # run_group's, but far longer
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / "group" / ".lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.stat().st_size) and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.2)
        second = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert_one_line_error(second, str(lock), f"pid {first.pid}", "delete")
        # another OUTPUT_DIR, but the same work dir (the default ./work of one folder)
        other = [tmp_path / "other" if a == out else a for a in args]
        third = subprocess.run(other, capture_output=True, text=True, timeout=300)
        assert_one_line_error(third, "work dir", f"pid {first.pid}", "delete")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed mid-run, the holder released the lock (the file stays, unlocked)
    with exclusive_lock(lock, "x"):
        pass


def _tmpfs(path: Path, size_kb: int, remount: bool = False) -> None:
    opts = f"{'remount,' if remount else ''}size={size_kb}k"
    args = ["mount", "-o", opts, str(path)] if remount else \
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)]
    subprocess.run(args, check=True, capture_output=True)


def _can_mount() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0 and shutil.which("mount") is not None


def _assert_no_corrupt_output(out: Path) -> None:
    """Every file under a final name is complete: images load whole, JSON and TSV parse."""
    for path in out.rglob("*"):
        if not path.is_file() or "work" in path.relative_to(out).parts[:1]:
            continue
        assert ".part" not in path.name, f"temporary file left behind: {path}"
        if path.name.endswith(".nii.gz"):
            nb.load(path).get_fdata()
        elif path.suffix == ".json" and path.parent.name != "logs":
            json.loads(path.read_text())
        elif path.suffix == ".tsv":
            assert path.read_text().endswith("\n"), path


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a small tmpfs")
def test_full_disk_one_line_error_then_rerun_completes(site, tmp_path):  # noqa: F811
    def run(out: Path) -> subprocess.CompletedProcess:
        return run_group(site, out, "--steps", "4", "--n-synthetic", "8", "--sampling-steps", "2")

    reference = tmp_path / "reference"
    assert run(reference).returncode == 0
    total_kb = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file()) // 1024
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    _tmpfs(mnt, max(64, total_kb // 2))  # half of what a full run writes
    try:
        out = mnt / "out"
        proc = run(out)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("bids_genbrain: error")]
        assert len(errors) == 1 and "no space left" in errors[0], proc.stderr[-2000:]
        _assert_no_corrupt_output(out)
        _tmpfs(mnt, 4 * total_kb + 1024, remount=True)  # space freed
        proc = run(out)
        assert proc.returncode == 0, proc.stderr[-2000:]
        _assert_no_corrupt_output(out)
        names = {p.relative_to(out) for p in out.rglob("*") if p.is_file()
                 and p.relative_to(out).parts[0] not in ("logs", "work")}
        wanted = {p.relative_to(reference) for p in reference.rglob("*") if p.is_file()
                  and p.relative_to(reference).parts[0] not in ("logs", "work")}
        assert names == wanted
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
