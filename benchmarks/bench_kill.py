"""Benchmark: kill anywhere, rerun, same result (tests/_kill_harness.py).

For a level (participant or group) on a small simulated dataset:

1. two uninterrupted reference runs; the outputs byte-identical in both are compared by hash
   after every kill, the others (run logs, reports with timings, checkpoint config.json with
   its creation time ...) by name and validity; each phase's start time is recorded;
2. ``--sequences`` kill sequences, each on a fresh OUTPUT_DIR: ``--kills`` SIGKILLs of the
   whole process group at drawn points (a phase seen in the reference - registration,
   segmentation, writing derivatives; cohort, training, writing the synthetic cohort, writing
   statmaps, the report - plus a random delay within it, or a uniform random time), each
   followed by a rerun of the same command that the next kill interrupts; then a last rerun to
   the end. After every kill no file under a final name may be incomplete; the last rerun
   must exit 0 with outputs equal to the reference.

Rows are appended to ``ROOT/kills.tsv`` (a rerun of this script continues where it stopped);
``--report`` writes ``bench_kill.tsv`` / ``bench_kill.md``.

Usage::

    export GENBRAIN_TEMPLATES=fallback
    python benchmarks/bench_kill.py --root /work/scratch/stress/kill --level group --sequences 6
    python benchmarks/bench_kill.py --root /work/scratch/stress/kill --level participant \\
        --sequences 3
    python benchmarks/bench_kill.py --root /work/scratch/stress/kill --report benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _kill_harness import (Timeline, comparable, draw_kill, kill_sequence,  # noqa: E402
                           run_watched, snapshot)

PARTICIPANT_PHASES = ("registration", "segmentation", "derivatives")
GROUP_PHASES = ("cohort", "training", "synthetic", "statmaps", "report")


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def prepare(root: Path, level: str) -> tuple[list[str], tuple[str, ...]]:
    """The dataset (made once) and the command line (OUTPUT_DIR ``{out}``, work dir
    ``{work}``)."""
    data = root / f"data-{level}"
    if level == "participant":
        if not (data / "bids" / "participants.tsv").is_file():
            subprocess.run([_tool("genbrain"), "simulate", str(data / "bids"), "--n-subjects",
                            "2", "--n-sites", "1", "--modality", "T1w", "--fast", "--seed", "0",
                            "--quiet"], check=True)
        return ([_tool("bids_genbrain"), str(data / "bids"), "{out}", "participant",
                 "--sloppy", "--resolution", "4", "--nprocs", "1", "--omp-nthreads", "1",
                 "--seed", "0", "-w", "{work}"], PARTICIPANT_PHASES)
    from _model_factory import write_site

    if not (data / "truth_d.nii.gz").is_file():
        write_site(data, 24, 8.0)
    return ([_tool("bids_genbrain"), str(data / "bids"), "{out}", "group", "--derivatives",
             str(data / "deriv"), "--resolution", "8", "--preset", "tiny", "--steps", "60",
             "--batch-size", "8", "--n-synthetic", "16", "--sampling-steps", "5",
             "--condition", "age", "sex", "--contrast", "diagnosis", "--seed", "3",
             "--omp-nthreads", "1", "--nprocs", "1", "-w", "{work}", "--reference-map",
             str(data / "truth_d.nii.gz")], GROUP_PHASES)


def _command(template: list[str], out: Path) -> list[str]:
    values = {"{out}": str(out), "{work}": str(_work(out))}
    return [values.get(part, part) for part in template]


def _work(out: Path) -> Path:
    return out.with_name(out.name + "-work")


def ignore(name: str) -> bool:
    """Run logs (logs/, sub-<l>/log/) are named by run id: not compared."""
    return name.startswith("logs/") or name.split("/")[1:2] == ["log"]


def references(root: Path, level: str, template: list[str], phases: tuple[str, ...]
               ) -> tuple[dict[str, str], set[str], Timeline]:
    """Two uninterrupted runs (made once): the reference hashes, what is deterministic, and
    the phase timeline."""
    meta = root / f"reference-{level}.json"
    if meta.is_file():
        data = json.loads(meta.read_text())
        return data["reference"], set(data["hashed"]), Timeline(**data["timeline"])
    snaps, timeline = [], None
    for name in ("a", "b"):
        out = root / f"ref-{level}-{name}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(_work(out), ignore_errors=True)
        code, tl, stderr = run_watched(_command(template, out), out, _work(out), phases)
        if code != 0:
            raise SystemExit(f"reference run failed ({code}): {stderr}")
        snaps.append(snapshot(out))
        timeline = timeline or tl
    hashed, by_name = comparable(snaps[0], snaps[1], ignore)
    meta.write_text(json.dumps({"reference": snaps[0], "hashed": sorted(hashed),
                                "by_name": sorted(by_name),
                                "timeline": {"seconds": timeline.seconds,
                                             "starts": timeline.starts}}, indent=2))
    return snaps[0], hashed, timeline


def run(args: argparse.Namespace) -> None:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    template, phases = prepare(root, args.level)
    reference, hashed, timeline = references(root, args.level, template, phases)
    print(f"{args.level}: reference {timeline.seconds:.0f} s, phases {timeline.starts}, "
          f"{len(hashed)} of {len([n for n in reference if not ignore(n)])} outputs "
          "byte-identical between two runs", flush=True)
    table_path = root / "kills.tsv"
    done = pd.read_csv(table_path, sep="\t") if table_path.is_file() else pd.DataFrame()
    start = int((done["level"] == args.level).sum() // args.kills) if len(done) else 0
    rng = random.Random(f"{args.seed}-{args.level}")
    draws = [[draw_kill(timeline, phases, rng) for _ in range(args.kills)]
             for _ in range(args.sequences)]
    for number in range(start, args.sequences):
        out = root / f"kill-{args.level}-{number}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(_work(out), ignore_errors=True)
        result = kill_sequence(args.level, _command(template, out), out, _work(out),
                               reference, hashed, phases, draws[number], ignore=ignore)
        rows = pd.DataFrame(result.rows()).assign(sequence=number)
        print(rows.to_string(index=False), flush=True)
        if result.rerun_stderr:
            print(result.rerun_stderr, flush=True)
        rows.to_csv(table_path, sep="\t", index=False, mode="a", header=not table_path.is_file())
        if result.equal:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(_work(out), ignore_errors=True)


def report(args: argparse.Namespace) -> None:
    root, out = Path(args.root), Path(args.report)
    table = pd.read_csv(root / "kills.tsv", sep="\t")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench_kill.tsv", sep="\t", index=False)
    landed = table[table["killed"]]
    lines = ["# bench_kill: kill anywhere, rerun, same result", "",
             "`python benchmarks/bench_kill.py` (see its docstring): SIGKILL of the whole "
             "process group at drawn points, a rerun after each, outputs compared with an "
             "uninterrupted run (by sha256 where two uninterrupted runs are byte-identical, "
             "else by name and validity).", ""]
    for level, group in landed.groupby("level"):
        ref = json.loads((root / f"reference-{level}.json").read_text())
        lines.append(f"- **{level}**: {int(group['survived'].sum())} of {len(group)} kills "
                     f"survived (plus {int((~table[table['level'] == level]['killed']).sum())}"
                     " drawn points the run had already passed); files left incomplete under a "
                     f"final name after a kill: {int(group['partial_files'].sum())}; reruns "
                     f"equal to the reference: {int(group['outputs_equal'].sum())}/{len(group)};"
                     f" {len(ref['hashed'])} outputs compared by sha256, {len(ref['by_name'])} "
                     f"by name ({', '.join(sorted(ref['by_name'])[:6])}"
                     f"{' ...' if len(ref['by_name']) > 6 else ''}); uninterrupted run "
                     f"{ref['timeline']['seconds']:.0f} s")
        counts = group.groupby("phase")["survived"].agg(["sum", "count"])
        lines.append("  - by phase: " + ", ".join(f"{p} {int(r['sum'])}/{int(r['count'])}"
                                                   for p, r in counts.iterrows()))
    lines.append(f"\nTotal: {int(landed['survived'].sum())} of {len(landed)} kills survived.")
    (out / "bench_kill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--level", choices=["participant", "group"], default="group")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3, help="kills per sequence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", help="write bench_kill.tsv/.md here and stop")
    args = parser.parse_args()
    # a job scheduler's SIGTERM (or timeout's) unwinds, so the run being watched is killed too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
