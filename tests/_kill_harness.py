"""Kill anywhere, rerun, same result: SIGKILL a BIDS-App run at a chosen point, rerun it, and
compare every output with an uninterrupted run's (used by tests and benchmarks/bench_kill.py).

A run is started in its own process group and killed the way a scheduler kills a job: SIGKILL
to the whole group (nipype's worker processes included). Kill points are phases recognised from
what the run has written (a nipype node folder without its result file: the node is running;
the model folder; the first synthetic image; the first statmap), plus a random delay drawn
within the phase's duration in the reference run, or a uniform random time over the whole run.

After each kill, every file under a final name in OUTPUT_DIR must be complete (images load
whole, JSON/TSV/HTML/safetensors/HDF5/PNG parse); temporaries (dot-files) are allowed. The rerun
must succeed, and its outputs must equal the reference: byte-identical where two uninterrupted
runs are byte-identical, else the same names, each valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SKIP_TOP = ("work",)
"""Top-level folders of OUTPUT_DIR that hold intermediate files, not outputs."""

POLL_S = 0.05


def _running_node(work: Path, node: str) -> bool:
    """A nipype node folder named ``node`` exists without its result file: it is running."""
    for folder in work.rglob(node):
        if folder.is_dir() and not (folder / f"result_{node}.pklz").exists():
            return True
    return False


def _first(out: Path, pattern: str) -> bool:
    return any(p for p in out.glob(pattern) if not p.name.startswith("."))


PHASES: dict[str, Callable[[Path, Path], bool]] = {
    # participant level
    "registration": lambda out, work: _running_node(work, "register"),
    "segmentation": lambda out, work: _running_node(work, "segment"),
    "derivatives": lambda out, work: _first(out, "sub-*/anat/*_desc-preproc_T1w.nii.gz"),
    # group level
    "cohort": lambda out, work: (work / "group").is_dir(),
    "training": lambda out, work: (out / "group" / "model").is_dir(),
    "synthetic": lambda out, work: _first(out, "synthetic/sub-*/anat/*.nii.gz"),
    "statmaps": lambda out, work: _first(out, "group/bwas/*_statmap.nii.gz"),
    "report": lambda out, work: (out / "group.html").exists(),
}
"""Recognisable phases: ``(output_dir, work_dir) -> bool``, true once the phase has begun."""


@dataclass
class Timeline:
    """When each phase began in a run (seconds from its start), and how long it took."""

    seconds: float
    starts: dict[str, float] = field(default_factory=dict)

    def window(self, phase: str) -> float:
        """Duration of ``phase``: until the next phase began, or the run ended."""
        begin = self.starts[phase]
        later = [t for t in self.starts.values() if t > begin]
        return max(POLL_S, min(later, default=self.seconds) - begin)


def run_watched(command: Sequence[str], out: Path, work: Path, phases: Sequence[str],
                *, kill_phase: str | None = None, delay: float = 0.0,
                timeout: float = 1800.0, env: dict[str, str] | None = None,
                ) -> tuple[int | None, Timeline, str]:
    """Run ``command``; record phase starts; SIGKILL its process group ``delay`` s after
    ``kill_phase`` began (``"random"``: ``delay`` s after the start).

    Returns
    -------
    returncode : int or None
        None when the run was killed (it was alive at the kill).
    timeline : Timeline
    stderr : str
        The tail of its standard error.
    """
    log = out.parent / f".{out.name}.stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, env=env)
        t0 = time.monotonic()
        timeline = Timeline(seconds=0.0)
        kill_at = t0 + delay if kill_phase == "random" else None
        killed = False
        try:
            while proc.poll() is None:
                now = time.monotonic()
                for phase in phases:
                    if phase not in timeline.starts and PHASES[phase](out, work):
                        timeline.starts[phase] = now - t0
                        if phase == kill_phase:
                            kill_at = now + delay
                if kill_at is not None and now >= kill_at:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = True
                    break
                if now - t0 > timeout:
                    raise TimeoutError(f"{command[0]} ran over {timeout} s")
                time.sleep(POLL_S)
        except BaseException:  # a timeout, or this process stopped: take the run with it
            _reap_group(proc.pid)
            proc.wait()
            raise
        timeline.seconds = time.monotonic() - t0
    stderr = log.read_text(errors="replace")[-3000:]
    log.unlink()
    _reap_group(proc.pid)
    return (None if killed else proc.returncode), timeline, stderr


def _reap_group(pgid: int) -> None:
    """SIGKILL whatever of the run's process group outlived it (forkserver workers)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def output_files(out: Path) -> list[Path]:
    """Files under final names (no dot-file temporaries, no work folder)."""
    files = []
    for path in out.rglob("*"):
        rel = path.relative_to(out)
        if rel.parts[0] in SKIP_TOP or any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            files.append(path)
    return sorted(files)


def invalid(path: Path) -> str | None:
    """Why ``path`` is not a complete file of its kind, or None."""
    name = path.name
    try:
        if name.endswith((".nii.gz", ".nii")):
            import nibabel as nb
            import numpy as np

            np.asanyarray(nb.load(path).dataobj)
        elif name.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith(".tsv"):
            import pandas as pd

            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                return "TSV without a final newline (truncated)"
            pd.read_csv(path, sep="\t")
        elif name.endswith(".safetensors"):
            from safetensors.numpy import load_file

            load_file(str(path))
        elif name.endswith(".h5"):
            import h5py

            with h5py.File(path, "r") as fh:
                fh.visit(lambda _: None)
        elif name.endswith(".html"):
            if "</html>" not in path.read_text(encoding="utf-8", errors="replace")[-4096:]:
                return "HTML without </html> (truncated)"
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as img:
                img.load()
        elif name.endswith(".svg"):
            import xml.etree.ElementTree as ET

            ET.parse(path)
        elif path.stat().st_size == 0 and name not in (".bidsignore",):
            return "empty"
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def digest(path: Path) -> str:
    """sha256 of a file's bytes; of an HDF5 file's datasets (ITK transforms), by their path in
    the file: HDF5 records object times, so two identical transforms differ in bytes. A file
    HDF5 cannot read is hashed by its bytes (:func:`invalid` reports it)."""
    if path.name.endswith(".h5"):
        import h5py
        import numpy as np

        h = hashlib.sha256()

        def add(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                value = np.asarray(obj[()])  # strings (ITK's version fields) read as objects
                h.update(name.encode())
                h.update(repr(value.tolist()).encode() if value.dtype == object
                         else value.tobytes())

        try:
            with h5py.File(path, "r") as fh:
                fh.visititems(add)
            return h.hexdigest()
        except OSError:
            pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def snapshot(out: Path) -> dict[str, str]:
    """Relative name -> sha256 of every output (HDF5 by content, see :func:`digest`)."""
    return {p.relative_to(out).as_posix(): digest(p) for p in output_files(out)}


def comparable(a: dict[str, str], b: dict[str, str], ignore: Callable[[str], bool]
               ) -> tuple[set[str], set[str]]:
    """Names compared by hash (same bytes in two uninterrupted runs) and by name only."""
    names, other = ({n for n in snap if not ignore(n)} for snap in (a, b))
    if names != other:
        raise AssertionError(f"two uninterrupted runs wrote different files: "
                             f"{sorted(names ^ other)[:10]}")
    same = {n for n in names if a[n] == b[n]}
    return same, names - same


@dataclass
class Kill:
    """One SIGKILL: where it was aimed, whether the run was still alive, what it left."""

    phase: str
    delay_s: float
    killed: bool
    partial_files: list[str]


@dataclass
class KillSequence:
    """Kills on one output folder, each followed by a rerun of the same command; the last
    rerun runs to the end and its outputs are compared with the reference."""

    level: str
    kills: list[Kill]
    rerun_code: int | None
    missing: list[str]
    extra: list[str]
    hash_differs: list[str]
    invalid_after: list[str]
    n_hashed: int
    rerun_stderr: str = ""

    @property
    def equal(self) -> bool:
        return self.rerun_code == 0 and not (self.missing or self.extra or self.hash_differs
                                             or self.invalid_after)

    def rows(self) -> list[dict[str, object]]:
        detail = "; ".join((self.missing + self.extra + self.hash_differs
                            + self.invalid_after)[:4])
        return [{"level": self.level, "kill": i + 1, "phase": k.phase,
                 "delay_s": round(k.delay_s, 3), "killed": k.killed,
                 "partial_files": len(k.partial_files), "rerun_code": self.rerun_code,
                 "outputs_equal": self.equal, "hashed_outputs": self.n_hashed,
                 "survived": k.killed and not k.partial_files and self.equal,
                 "detail": "; ".join(k.partial_files[:2]) or detail}
                for i, k in enumerate(self.kills)]


def kill_sequence(level: str, command: Sequence[str], out: Path, work: Path,
                  reference: dict[str, str], hashed: set[str], phases: Sequence[str],
                  points: Sequence[tuple[str, float]], *, ignore: Callable[[str], bool],
                  timeout: float = 1800.0) -> KillSequence:
    """Run ``command`` on a fresh ``out`` killed at each of ``points`` in turn (every rerun
    resumes the previous), then once to the end; check and compare (see module docstring)."""
    kills = []
    for phase, delay in points:
        code, _, _ = run_watched(command, out, work, phases, kill_phase=phase, delay=delay,
                                 timeout=timeout)
        partial = [f"{p.relative_to(out)}: {why}" for p in output_files(out)
                   if (why := invalid(p)) is not None]
        kills.append(Kill(phase, delay, code is None, partial))
    code, _, stderr = run_watched(command, out, work, phases, timeout=timeout)
    after = snapshot(out)
    wanted = {n for n in reference if not ignore(n)}
    got = {n for n in after if not ignore(n)}
    return KillSequence(
        level=level, kills=kills, rerun_code=code, missing=sorted(wanted - got),
        extra=sorted(got - wanted),
        hash_differs=sorted(n for n in hashed if n in after and after[n] != reference[n]),
        invalid_after=[f"{n}: {why}" for n in sorted(got)
                       if (why := invalid(out / n)) is not None],
        n_hashed=len(hashed), rerun_stderr="" if code == 0 else stderr)


def draw_kill(timeline: Timeline, phases: Sequence[str], rng: random.Random
              ) -> tuple[str, float]:
    """A kill point: a phase seen in the reference (or ``random``) and a delay within it."""
    seen = [p for p in phases if p in timeline.starts]
    phase = rng.choice([*seen, "random"])
    if phase == "random":
        return phase, rng.uniform(0.0, timeline.seconds)
    return phase, rng.uniform(0.0, timeline.window(phase))
