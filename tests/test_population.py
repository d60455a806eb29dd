"""A foundation checkpoint the GenBrain way, through the real CLI (tiny model, 8 mm grid).

``genbrain simulate --population`` makes healthy adults with five MNI maps, ``genbrain
pretrain`` trains one model on all of them with the modality index as a condition, ``genbrain
sample`` draws each modality from it, and the group level fine-tunes it with ``--model`` on a
site that has a diagnosis column the checkpoint has never seen.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from test_cli_bids_app import SCRIPT

from bids_genbrain.simulate import SimulationConfig, simulate_dataset

RES = 8.0
MAPS = ["T1w", "FLAIR", "GM", "GMmod", "FA"]
GENBRAIN = str(Path(sys.executable).with_name("genbrain"))


def _run(*args, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A population of 16 at 8 mm and a tiny checkpoint pretrained on its five maps."""
    root = tmp_path_factory.mktemp("population")
    pop = simulate_dataset(root / "pop", SimulationConfig.population(
        n_subjects=16, mni_resolution=RES, seed=2))
    modalities = [a for m in MAPS for a in ("--modality", m)]
    common = [GENBRAIN, "pretrain", pop.mnimaps, "--participants", pop.root, "--out",
              root / "ckpt", "--preset", "tiny", "--resolution", RES, *modalities,
              "--condition", "age", "--condition", "sex"]
    proc = _run(*common, "--cohort-only")  # the store first, as before a multi-node torchrun
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{16 * len(MAPS)} images of 16 participants" in proc.stdout
    store = root / ".ckpt.cohort" / "data.f32"
    built = store.stat().st_mtime_ns
    assert not (root / "ckpt").exists()
    proc = _run(*common, "--steps", "8", "--batch-size", "4", "--seed", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert store.stat().st_mtime_ns == built  # the store was reused, not read again
    return root


def test_pretrain_on_every_map_with_the_modality_index(pretrained):
    config = json.loads((pretrained / "ckpt" / "config.json").read_text())
    specs = {c["name"]: c for c in config["conditions"]}
    assert list(specs) == ["age", "sex", "modality"]
    assert specs["modality"]["levels"] == MAPS and specs["sex"]["levels"] == ["F", "M"]
    assert sorted(config["modalities"]) == sorted(MAPS)
    assert config["provenance"]["n_images"] == 16 * len(MAPS)
    loss = pd.read_csv(pretrained / "ckpt" / "loss.tsv", sep="\t")
    assert len(loss) == 8 and np.isfinite(loss["loss"]).all()


def test_sample_each_modality_of_the_checkpoint(pretrained, tmp_path):
    rows = tmp_path / "rows.tsv"
    pd.DataFrame({"age": [60, 30], "sex": ["F", "M"], "modality": ["FA", "T1w"]}).to_csv(
        rows, sep="\t", index=False)
    out = tmp_path / "synth"
    proc = _run(GENBRAIN, "sample", pretrained / "ckpt", out, "--table", rows, "--steps", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for subject, entity in (("sub-synth0001", "desc-FA_dwimap"),
                            ("sub-synth0002", "desc-preproc_T1w")):
        [image] = out.glob(f"{subject}/*/*{entity}.nii.gz")
        assert np.isfinite(nb.load(image).get_fdata()).all()


def test_group_level_fine_tunes_the_population_checkpoint(pretrained, tmp_path):
    """--model: the site's diagnosis is a new condition; the modality index is kept."""
    site = simulate_dataset(tmp_path / "site", SimulationConfig.fast(
        n_subjects=16, n_sites=1, modalities=("T1w",), native=False, mnimaps=True,
        maps=("GM",), mni_resolution=RES, seed=5))
    parent = pretrained / "ckpt"
    out = tmp_path / "out"
    proc = _run(SCRIPT, site.root, out, "group", "--derivatives", site.mnimaps,
                "--modality", "GM", "--model", parent, "--steps", "6", "--batch-size", "4",
                "--n-synthetic", "8", "--sampling-steps", "2", "--condition", "age", "sex",
                "--contrast", "diagnosis", "--seed", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "group" / "model" / "config.json").read_text())
    specs = {c["name"]: c for c in config["conditions"]}
    assert specs["diagnosis"]["levels"] == ["CN", "patient"]
    assert specs["modality"]["levels"] == MAPS  # GM keeps its pretrained index
    assert config["provenance"]["parent"]["path"] == str(parent.resolve())
    assert config["architecture"]["resolution"] == RES
    report = (out / "group.html").read_text()
    assert f"Fine-tuned from {parent}" in report
