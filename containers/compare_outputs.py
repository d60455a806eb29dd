"""Check a container run's outputs: valid, named as a run outside the container, provenance.

    python compare_outputs.py OUT [NATIVE] --tag IMAGE --uid UID

OUT is the container run's OUTPUT_DIR, NATIVE (optional) the same commands' OUTPUT_DIR outside
the container. Checks: every NIfTI loads with finite data, every JSON and TSV parses, pybids
indexes OUT as a valid derivatives dataset, ``GeneratedBy[0].Container`` names the image, the
files belong to the container's (non-root) user, and OUT and NATIVE hold the same file names
(run logs and the work folder aside, whose names carry run ids or are internal). Prints
one line per check; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

SKIP = ("logs", "work")
"""Top-level folders that are not compared by name (timestamps, intermediate files)."""


def output_files(root: Path) -> set[str]:
    """Relative paths of the outputs under ``root`` (folders in :data:`SKIP`, the
    per-participant run logs ``sub-<l>/log/<run id>/`` and hidden files such as the
    ``.bids_genbrain.lock`` / ``group/.lock`` lock files aside: BIDS ignores dotfiles)."""
    names = set()
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        hidden = any(part.startswith(".") for part in parts)
        if (path.is_file() and not hidden and parts[0] not in SKIP
                and "log" not in parts[1:2]):
            names.add("/".join(parts))
    return names


def invalid_files(root: Path, names: set[str]) -> list[str]:
    """Files that do not open as what their extension says (with a reason)."""
    bad = []
    for name in sorted(names):
        path = root / name
        try:
            if name.endswith((".nii", ".nii.gz")):
                data = np.asanyarray(nb.load(path).dataobj)
                if not np.isfinite(data).all():
                    bad.append(f"{name}: non-finite voxels")
            elif name.endswith(".json"):
                json.loads(path.read_text(encoding="utf-8"))
            elif name.endswith(".tsv"):
                pd.read_csv(path, sep="\t")
            elif path.stat().st_size == 0:
                bad.append(f"{name}: empty")
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            bad.append(f"{name}: {type(exc).__name__}: {exc}")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("native", type=Path, nargs="?")
    parser.add_argument("--tag", required=True, help="image tag expected in GeneratedBy")
    parser.add_argument("--uid", type=int, required=True, help="uid expected to own outputs")
    args = parser.parse_args()
    failures: list[str] = []

    def check(ok: bool, what: str, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail and not ok else ''}")
        if not ok:
            failures.append(what)

    names = output_files(args.out)
    check(bool(names), f"{len(names)} output files in {args.out}")
    for kind in ("_desc-preproc_T1w.nii.gz", "_statmap.nii.gz", "group.html"):
        check(any(n.endswith(kind) for n in names), f"outputs include *{kind}")
    bad = invalid_files(args.out, names)
    check(not bad, "every NIfTI, JSON and TSV output is readable", "; ".join(bad[:5]))
    from bids import BIDSLayout

    try:
        layout = BIDSLayout(args.out, validate=True, is_derivative=True)
        check(len(layout.get(extension=".nii.gz")) > 0, "pybids indexes the derivatives")
    except Exception as exc:  # noqa: BLE001
        check(False, "pybids indexes the derivatives", f"{type(exc).__name__}: {exc}")
    description = json.loads((args.out / "dataset_description.json").read_text())
    container = description["GeneratedBy"][0].get("Container")
    check(container == {"Type": "docker", "Tag": args.tag},
          "GeneratedBy[0].Container names the image", f"found {container}")
    owners = {(args.out / n).stat().st_uid for n in names}
    check(owners == {args.uid}, f"outputs owned by the container user (uid {args.uid})",
          f"owners {sorted(owners)}")
    if args.native is not None:
        native = output_files(args.native)
        only_c, only_n = sorted(names - native), sorted(native - names)
        check(not only_c and not only_n, f"same {len(names)} output names as outside the "
              "container", f"only in the container: {only_c[:5]}, only outside: {only_n[:5]}")
        bad = invalid_files(args.native, native)
        check(not bad, "outputs outside the container are readable too", "; ".join(bad[:5]))
    print("passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
