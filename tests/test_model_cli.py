"""``genbrain pretrain`` and ``genbrain sample`` on a tiny cohort; bad input: exit 2."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from _model_factory import RES, write_cohort
from typer.testing import CliRunner

from bids_genbrain.cli.tools import app
from bids_genbrain.templates import brain_mask, mni_grid

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    deriv = root / "deriv"
    table = write_cohort(deriv, [25.0, 45.0, 65.0, 85.0])
    table.to_csv(deriv / "participants.tsv", sep="\t", index=False)
    before = sorted(p.relative_to(deriv) for p in deriv.rglob("*"))
    result = runner.invoke(app, ["pretrain", str(deriv), "--out", str(root / "ckpt"),
                                 "--preset", "tiny", "--resolution", "8", "--steps", "6",
                                 "--batch-size", "2", "--checkpoint-every", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(deriv) for p in deriv.rglob("*")) == before  # input untouched
    return root


def test_pretrain_writes_a_checkpoint(trained):
    config = json.loads((trained / "ckpt" / "config.json").read_text())
    assert config["preset"] == "tiny" and config["provenance"]["steps"] == 6
    assert config["provenance"]["seed"] == 1
    assert [c["name"] for c in config["conditions"]] == ["age", "sex", "modality"]
    assert config["mask"]["resolution"] == RES


def test_sample_writes_bids_derivatives(trained):
    out = trained / "synth"
    result = runner.invoke(app, ["sample", str(trained / "ckpt"), str(out), "--n", "2",
                                 "--age", "70", "--sex", "F", "--steps", "3", "--average", "2",
                                 "--seed", "4"])
    assert result.exit_code == 0, result.output
    parts = pd.read_csv(out / "participants.tsv", sep="\t")
    assert parts.to_dict("list") == {"participant_id": ["sub-synth0001", "sub-synth0002"],
                                     "age": [70.0, 70.0], "sex": ["F", "F"],
                                     "modality": ["GMmod", "GMmod"],
                                     "seeds": parts["seeds"].tolist()}
    sidecars = json.loads((out / "participants.json").read_text())
    assert set(sidecars) == set(parts.columns) and sidecars["sex"]["Levels"] == {"F": "F", "M": "M"}
    name = "sub-synth0001_space-MNI152NLin6Asym_res-8_label-GM_desc-modulated_probseg"
    img = nb.load(out / "sub-synth0001" / "anat" / f"{name}.nii.gz")
    shape, affine = mni_grid(RES)
    assert img.shape == shape and np.allclose(img.affine, affine)
    data = np.asanyarray(img.dataobj)
    assert np.all(data[~brain_mask(RES)] == 0) and np.isfinite(data).all()
    side = json.loads((out / "sub-synth0001" / "anat" / f"{name}.json").read_text())
    config = json.loads((trained / "ckpt" / "config.json").read_text())
    assert side["ModelSHA256"] == config["weights_sha256"] and side["RunSeed"] == 4
    assert parts["seeds"].iloc[0] == ",".join(map(str, side["Seeds"])) and len(side["Seeds"]) == 2
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"


def test_sample_from_a_table(trained, tmp_path):
    table = tmp_path / "rows.tsv"
    pd.DataFrame({"age": [20, 80], "sex": ["M", "n/a"]}).to_csv(table, sep="\t", index=False)
    result = runner.invoke(app, ["sample", str(trained / "ckpt"), str(tmp_path / "o"),
                                 "--table", str(table), "--steps", "2"])
    assert result.exit_code == 0, result.output
    parts = pd.read_csv(tmp_path / "o" / "participants.tsv", sep="\t", keep_default_na=False)
    assert parts["sex"].tolist() == ["M", "n/a"]


def test_help_lists_parameter_counts():
    result = runner.invoke(app, ["pretrain", "--help"])
    assert result.exit_code == 0
    assert "genbrain-l: 458.3M parameters" in result.output
    assert "tiny: 1.3M parameters" in result.output


@pytest.mark.parametrize("args, message", [
    (["sample", "{ckpt}", "{tmp}/o", "--condition", "diagnosis"], "KEY=VALUE"),
    (["sample", "{ckpt}", "{tmp}/o", "--sex", "X", "--steps", "1"], "not a known level"),
    (["sample", "{ckpt}", "{tmp}/o", "--condition", "iq=100"], "no condition"),
    (["sample", "{tmp}", "{tmp}/o"], "not a GenBrain checkpoint"),
    (["pretrain", "{deriv}", "--out", "{tmp}/m", "--preset", "huge"], "unknown preset"),
    (["pretrain", "{tmp}", "--out", "{tmp}/m", "--condition", "none"], "not found"),
    (["pretrain", "{deriv}", "--out", "{tmp}/m", "--modality", "FLAIR", "--resolution", "8"],
     "no FLAIR images"),
    (["pretrain", "{deriv}", "--out", "{deriv}/m", "--resolution", "8"], "inside the input"),
])
def test_bad_input_exits_2_with_one_line(trained, tmp_path, args, message):
    fill = {"ckpt": str(trained / "ckpt"), "tmp": str(tmp_path), "deriv": str(trained / "deriv")}
    if args[0] == "pretrain" and args[1] == "{tmp}":
        args = [args[0], str(tmp_path / "missing"), *args[2:]]
    result = runner.invoke(app, [a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
