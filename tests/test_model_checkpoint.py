"""Checkpoints (round trip, refusal of tampered/mismatched ones), sampling reproducibility."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from _model_factory import RES, TEST_ARCH, write_cohort

from bids_genbrain.cohort import build_cohort
from bids_genbrain.model.checkpoint import CheckpointError, load_checkpoint, read_config
from bids_genbrain.model.sampling import conditions_table, sample, write_synthetic_dataset
from bids_genbrain.model.train import TrainConfig, fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    table = write_cohort(root / "deriv", [25.0, 45.0, 65.0, 85.0])
    store = build_cohort([root / "deriv"], root / "store", participants=table,
                         conditions=["age", "sex"], resolution=RES, progress=False)
    bundle = fit(store, root / "model", TrainConfig(steps=20, batch_size=4, lr=1e-3,
                                                    checkpoint_every=100, progress=False),
                 arch=TEST_ARCH)
    return bundle, store, root


def _draw(bundle, seed, n=3, **kw):
    table = conditions_table(bundle, n, {"age": 70.0, "sex": "F"})
    return np.stack([np.asanyarray(v.dataobj) for _, v in sample(bundle, table, seed, steps=8,
                                                                   **kw)])


def test_same_seed_same_sample_and_batch_independence(trained):
    bundle, _, _ = trained
    a = _draw(bundle, seed=5, batch_size=3)
    again = _draw(bundle, seed=5, batch_size=3)
    b = _draw(bundle, seed=5, batch_size=1)
    c = _draw(bundle, seed=6, batch_size=3)
    np.testing.assert_array_equal(a, again)
    np.testing.assert_allclose(a, b, atol=1e-4)  # batching changes only float rounding
    assert not np.allclose(a, c, atol=1e-3)
    assert not np.allclose(a[0], a[1], atol=1e-3)  # rows use different noise


def test_round_trip_gives_identical_samples(trained):
    bundle, _, root = trained
    loaded = load_checkpoint(root / "model")
    np.testing.assert_array_equal(_draw(bundle, seed=2), _draw(loaded, seed=2))
    assert loaded.normalisation["GMmod"]["entities"]["desc"] == "modulated"
    assert [c.name for c in loaded.conditions] == ["age", "sex", "modality"]


def test_config_records_provenance_and_card(trained):
    _, store, root = trained
    config = read_config(root / "model")
    assert config["provenance"]["steps"] == 20
    assert config["provenance"]["data_sha256"] == store.meta["data_sha256"]
    assert config["mask"]["n_voxels"] == store.meta["n_voxels"]
    assert config["n_parameters"] == sum(p.numel() for p in trained[0].model.parameters())
    card = (root / "model" / "README.md").read_text()
    assert "`age`: continuous" in card and config["weights_sha256"] in card
    assert (root / "model" / "loss.tsv").is_file() and (root / "model" / "loss.png").is_file()


def _copy(root, name):
    target = root / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / "model", target)
    return target


def test_tampered_weights_are_refused(trained):
    _, _, root = trained
    folder = _copy(root, "tampered")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(folder)


def test_mask_mismatch_is_refused(trained):
    _, _, root = trained
    folder = _copy(root, "othermask")
    config = json.loads((folder / "config.json").read_text())
    config["mask"]["sha256"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="different brain mask"):
        load_checkpoint(folder)


def test_architecture_mismatch_is_refused(trained):
    _, _, root = trained
    folder = _copy(root, "otherarch")
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["hidden_size"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit the architecture"):
        load_checkpoint(folder)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a GenBrain checkpoint"):
        load_checkpoint(tmp_path)


def test_synthetic_dataset_is_bids_and_readable_back(trained, tmp_path):
    bundle, _, root = trained
    table = pd.DataFrame({"age": [30.0, 75.0], "sex": ["M", "F"]})
    out = tmp_path / "synth"
    written = write_synthetic_dataset(load_checkpoint(root / "model"), table, out, seed=3,
                                      steps=4, average=2, progress=False)
    assert (out / "dataset_description.json").is_file()
    parts = pd.read_csv(out / "participants.tsv", sep="\t")
    assert parts["participant_id"].tolist() == ["sub-synth0001", "sub-synth0002"]
    assert parts["age"].tolist() == [30.0, 75.0]
    name = "sub-synth0002_space-MNI152NLin6Asym_res-8_label-GM_desc-modulated_probseg"
    side = json.loads((out / "sub-synth0002" / "anat" / f"{name}.json").read_text())
    assert side["RunSeed"] == 3 and len(side["Seeds"]) == 2 and side["Synthetic"] is True
    assert side["ModelSHA256"] == read_config(root / "model")["weights_sha256"]
    assert side["Conditions"]["sex"] == "F"
    assert parts["seeds"].iloc[1] == ",".join(map(str, side["Seeds"]))
    # the same naming contract as real derivatives: the cohort builder reads it back
    store = build_cohort([out], tmp_path / "store", participants=parts,
                         conditions=["age"], resolution=RES, progress=False)
    assert len(store) == 2 and written["path"].str.endswith(".nii.gz").all()


def test_synthetic_dataset_resumes_after_a_kill(trained, tmp_path):
    import nibabel as nb

    bundle, _, root = trained
    model = load_checkpoint(root / "model")
    table = pd.DataFrame({"age": [30.0, 50.0, 75.0], "sex": ["M", "F", "F"]})
    out = tmp_path / "synth"
    written = write_synthetic_dataset(model, table, out, seed=4, steps=3, progress=False)
    paths = [out / p for p in written["path"]]
    first = [np.asanyarray(nb.load(p).dataobj).copy() for p in paths]
    # a killed run: image 2 never written
    paths[2].unlink()
    stamp = paths[0].stat().st_mtime_ns
    again = write_synthetic_dataset(model, table, out, seed=4, steps=3, progress=False)
    assert paths[0].stat().st_mtime_ns == stamp, "a finished image was generated again"
    # same seeds; only the batch composition (float rounding) differs
    np.testing.assert_allclose(np.asanyarray(nb.load(paths[2]).dataobj), first[2], atol=1e-4)
    assert list(again["path"]) == list(written["path"])
    # a different run seed regenerates everything (sidecars differ)
    write_synthetic_dataset(model, table, out, seed=5, steps=3, progress=False)
    assert paths[0].stat().st_mtime_ns != stamp


def test_unknown_levels_and_modalities_are_refused(trained):
    bundle, _, _ = trained
    with pytest.raises(ValueError, match="not a known level"):
        next(sample(bundle, pd.DataFrame({"sex": ["X"]}), 0, steps=2))
    with pytest.raises(ValueError, match="unknown to the model"):
        next(sample(bundle, pd.DataFrame({"modality": ["T1w"]}), 0, steps=2))
    with pytest.raises(ValueError, match="no condition"):
        conditions_table(bundle, 1, {"height": 1.8})


def test_checkpoint_holds_no_pickle(trained):
    _, _, root = trained
    files = sorted(p.name for p in (root / "model").rglob("*") if p.is_file())
    allowed = (".safetensors", ".json", ".md", ".tsv", ".png")
    assert files and all(f.endswith(allowed) for f in files), files
