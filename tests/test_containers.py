"""What the container relies on, checked without an engine: the scripts parse, templates come
from a read-only prebuilt cache (as in an image), and the output checker catches bad outputs.

The container itself is built and run by ``containers/check.sh`` (docs/containers.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_genbrain import templates

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["check.sh", "make-base-image.sh"])
def test_container_scripts_parse(script):
    path = ROOT / "containers" / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_templates_from_a_read_only_cache(tmp_path, monkeypatch):
    """A prebuilt cache that cannot be written (image layer, .sif) serves what it has; grids
    it lacks are built in a per-user temporary folder instead of failing."""
    image_cache = tmp_path / "opt-cache"
    monkeypatch.setenv("GENBRAIN_CACHE_DIR", str(image_cache))
    built = templates.prefetch((8.0,), source="fallback")
    assert all(image_cache in p.parents for p in built)
    real_access = templates.os.access
    monkeypatch.setattr(templates.os, "access", lambda p, mode: False if image_cache in
                        Path(p).parents or Path(p) == image_cache else real_access(p, mode))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("GENBRAIN_TEMPLATES", "fallback")
    assert templates.get_template(8.0, suffix="mask") in built
    other = templates.get_template(10.0, suffix="mask")
    assert (tmp_path / "tmp") in other.parents and nb.load(other).shape == (19, 22, 19)
    assert templates.template_source() == "nilearn-icbm152"


def test_fetch_templates_fallback_cli(tmp_path):
    genbrain = shutil.which("genbrain") or str(Path(sys.executable).parent / "genbrain")
    proc = subprocess.run([genbrain, "fetch-templates", "--fallback", "--resolution", "8"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GENBRAIN_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "5 " in proc.stdout and "files ready" in proc.stdout
    assert len(list((tmp_path / "cache" / "templates").rglob("*.nii.gz"))) == 5


def _outputs(root: Path) -> None:
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    img = nb.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    nb.save(img, anat / "sub-01_space-MNI152NLin6Asym_res-2_desc-preproc_T1w.nii.gz")
    (anat / "sub-01_space-MNI152NLin6Asym_res-2_desc-preproc_T1w.json").write_text("{}")
    (root / "group" / "bwas").mkdir(parents=True)
    nb.save(img, root / "group" / "bwas" / "space-MNI152NLin6Asym_res-2_contrast-dx_desc-real"
            "_stat-t_statmap.nii.gz")
    (root / "group.html").write_text("<html></html>")
    (root / ".bids_genbrain.lock").touch()  # the real runs' empty lock files: not outputs
    (root / "group" / ".lock").touch()
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "x", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_genbrain", "Container": {"Type": "docker",
                                                                "Tag": "genbrain:check"}}]}))


def _compare(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "containers" / "compare_outputs.py"),
                           *map(str, args), "--tag", "genbrain:check", "--uid",
                           str(os.getuid())],
                          capture_output=True, text=True, timeout=300)


def test_compare_outputs_passes_and_catches(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _outputs(a)
    _outputs(b)
    proc = _compare(a, b)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (b / "group.html").unlink()  # a name missing outside the container
    (a / "sub-01" / "anat" / "sub-01_space-MNI152NLin6Asym_res-2_desc-preproc_T1w.json"
     ).write_text("{")  # a truncated sidecar
    proc = _compare(a, b)
    assert proc.returncode == 1
    assert "FAIL same" in proc.stdout and "FAIL every NIfTI, JSON and TSV" in proc.stdout
