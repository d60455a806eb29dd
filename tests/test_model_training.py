"""Training: overfitting two images, exact resume, DDP (2 processes) equals one process,
and (slow) learning a planted age effect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _model_factory import RES, SLOPE, TEST_ARCH, gm_map, planted_region, write_cohort, write_maps
from safetensors.torch import load_file

from bids_genbrain.cohort import CohortStore, build_cohort
from bids_genbrain.model.checkpoint import CheckpointError
from bids_genbrain.model.sampling import conditions_table, sample
from bids_genbrain.model.presets import FINE_TUNING_LR, FROM_SCRATCH_LR
from bids_genbrain.model.train import TrainConfig, _state_dir, batch_indices, fit, training_lr
from bids_genbrain.templates import brain_mask, load_template

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> CohortStore:
    root = tmp_path_factory.mktemp("train")
    table = write_cohort(root / "deriv", [22.0, 38.0, 51.0, 64.0, 79.0, 85.0])
    return build_cohort([root / "deriv"], root / "store", participants=table,
                        conditions=["age", "sex"], resolution=RES, progress=False)


def test_batch_indices_cover_each_epoch_once():
    rows = np.concatenate([batch_indices(s, 10, 4, seed=1) for s in range(5)])
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:20]) == list(range(10))
    assert not np.array_equal(rows[:10], rows[10:20])  # a new order each epoch
    np.testing.assert_array_equal(batch_indices(3, 10, 4, 1), rows[12:16])


def test_tiny_model_overfits_two_images(tmp_path):
    """Two very different maps (GM-like, WM-like), one per sex: each sample reproduces its own."""
    res = 12.0  # 1150 voxels: memorised in 2000 CPU steps (~20 s)
    mask = brain_mask(res)
    first = gm_map(30.0, seed=0, resolution=res)
    wm = np.asanyarray(load_template(res, suffix="probseg", label="WM").dataobj)
    second = np.where(mask, wm, 0.0)
    write_maps(tmp_path / "deriv", [first, second], resolution=res)
    participants = pd.DataFrame({"participant_id": ["sub-01", "sub-02"],
                                 "sex": pd.Categorical(["F", "M"])})
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store", participants=participants,
                         conditions=["sex"], resolution=res, progress=False)
    bundle = fit(store, tmp_path / "model",
                 TrainConfig(steps=2000, batch_size=4, lr=3e-3, checkpoint_every=10_000,
                             progress=False),
                 arch=TEST_ARCH.with_(resolution=res, patch_size=16))
    train = {"F": first[mask], "M": second[mask]}
    baseline = np.sqrt(np.mean((train["F"] - train["M"]) ** 2))
    table = pd.DataFrame({"sex": ["F", "M", "F", "M"]})
    for i, img in sample(bundle, table, seed=0, steps=50, cfg_scale=1.0):
        vol = np.asanyarray(img.dataobj)
        own, other = train[table["sex"][i]], train["M" if table["sex"][i] == "F" else "F"]
        r = np.corrcoef(vol[mask], own)[0, 1]
        rmse = np.sqrt(np.mean((vol[mask] - own) ** 2))
        assert r > 0.9 and rmse < 0.35 * baseline, (i, r, rmse, baseline)
        assert np.corrcoef(vol[mask], other)[0, 1] < 0.0
    loss = pd.read_csv(tmp_path / "model" / "loss.tsv", sep="\t")["loss"]
    assert loss.iloc[-100:].mean() < 0.3 * loss.iloc[:20].mean()


def test_resume_is_exact(small_store, tmp_path):
    cfg = dict(batch_size=3, lr=1e-3, progress=False)
    fit(small_store, tmp_path / "straight", TrainConfig(steps=6, checkpoint_every=3, **cfg),
        arch=TEST_ARCH)
    fit(small_store, tmp_path / "resumed", TrainConfig(steps=3, checkpoint_every=3, **cfg),
        arch=TEST_ARCH)
    fit(small_store, tmp_path / "resumed", TrainConfig(steps=6, checkpoint_every=3, **cfg),
        arch=TEST_ARCH)
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(_state_dir(tmp_path / "straight") / name))
        b = load_file(str(_state_dir(tmp_path / "resumed") / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    la = pd.read_csv(tmp_path / "straight" / "loss.tsv", sep="\t")
    lb = pd.read_csv(tmp_path / "resumed" / "loss.tsv", sep="\t")
    assert la["step"].tolist() == list(range(1, 7))
    np.testing.assert_array_equal(la["loss"], lb["loss"])


def test_resume_after_a_kill_during_a_save(small_store, tmp_path):
    """A save killed half-way (new state folder incomplete, or the final checkpoint's files
    out of step) is never resumed from: the run continues from the last complete state."""
    from bids_genbrain.model.checkpoint import load_checkpoint

    cfg = dict(batch_size=3, lr=1e-3, progress=False)
    fit(small_store, tmp_path / "straight", TrainConfig(steps=6, checkpoint_every=3, **cfg),
        arch=TEST_ARCH)
    run = tmp_path / "killed"
    fit(small_store, run, TrainConfig(steps=3, checkpoint_every=3, **cfg), arch=TEST_ARCH)
    half = run / "training_state" / "step-00000006"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"truncated")
    assert _state_dir(run).name == "step-00000003"
    fit(small_store, run, TrainConfig(steps=6, checkpoint_every=3, **cfg), arch=TEST_ARCH)
    assert sorted(p.name for p in (run / "training_state").iterdir()) == ["latest.json",
                                                                          "step-00000006"]
    a = load_file(str(run / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # killed between the final weights and config.json: the rerun rewrites the checkpoint
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "weights_sha256": "0" * 64}))
    fit(small_store, run, TrainConfig(steps=6, checkpoint_every=3, **cfg), arch=TEST_ARCH)
    load_checkpoint(run)


class _Killed(Exception):
    """Stands for a SIGKILL between two file writes."""


def test_a_kill_between_any_two_writes_of_a_save_resumes_exactly(small_store, tmp_path,
                                                                  monkeypatch):
    """Killed after each file a save moves into place (the checkpoint's weights, config and
    card, each training-state file, latest.json, the loss log), the rerun trusts only the
    last complete state and ends with the weights and state of an uninterrupted run, bit for
    bit."""
    from bids_genbrain import utils

    cfg = TrainConfig(steps=4, checkpoint_every=2, batch_size=3, lr=1e-3, progress=False)
    replace, landed = utils.os.replace, []

    def counted(src, dst):
        landed.append(Path(dst).name)
        replace(src, dst)

    monkeypatch.setattr(utils.os, "replace", counted)
    fit(small_store, tmp_path / "straight", cfg, arch=TEST_ARCH)
    first_save = landed.index("loss.png") + 1  # kills in it resume from scratch
    want = _weights_and_state(tmp_path / "straight")
    for kill_at in range(first_save, len(landed)):
        run, written = tmp_path / f"killed-{kill_at}", []

        def dying(src, dst, written=written, kill_at=kill_at):
            if len(written) == kill_at:
                raise _Killed
            written.append(dst)
            replace(src, dst)

        monkeypatch.setattr(utils.os, "replace", dying)
        with pytest.raises(_Killed):
            fit(small_store, run, cfg, arch=TEST_ARCH)
        monkeypatch.setattr(utils.os, "replace", replace)
        fit(small_store, run, cfg, arch=TEST_ARCH)
        got = _weights_and_state(run)
        assert [k for k in want if not torch.equal(want[k], got[k])] == [], landed[kill_at]


def _weights_and_state(run: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights and every tensor of the training state, by file/key."""
    files = {"checkpoint": run / "model.safetensors"}
    files.update({name: _state_dir(run) / f"{name}.safetensors"
                  for name in ("model", "ema", "optimizer", "rng")})
    return {f"{name}/{key}": value for name, path in files.items()
            for key, value in load_file(str(path)).items()}


def test_resume_refuses_another_run(small_store, tmp_path):
    fit(small_store, tmp_path / "run", TrainConfig(steps=2, batch_size=2, progress=False),
        arch=TEST_ARCH)
    with pytest.raises(CheckpointError, match="different run"):
        fit(small_store, tmp_path / "run",
            TrainConfig(steps=4, batch_size=2, seed=9, progress=False), arch=TEST_ARCH)


def test_a_checkpoint_is_fine_tuned_at_its_own_presets_rate(small_store, tmp_path):
    """The default rate to fine-tune is the checkpoint's preset's (``nano``: 1e-3, the rate
    at which fine-tuning learned a new diagnosis like training from scratch), not the rate of
    the preset named for training from scratch; no checkpoint: that preset's rate."""
    fit(small_store, tmp_path / "nano", TrainConfig(steps=1, batch_size=2, progress=False),
        arch=TEST_ARCH.with_(name="nano"))
    assert training_lr("genbrain-l", tmp_path / "nano") == FINE_TUNING_LR["nano"] == 1e-3
    assert training_lr("genbrain-l") == FROM_SCRATCH_LR["genbrain-l"] == 1e-4
    fit(small_store, tmp_path / "large", TrainConfig(steps=1, batch_size=2, progress=False),
        arch=TEST_ARCH.with_(name="genbrain-l"))
    assert training_lr("nano", tmp_path / "large") == FINE_TUNING_LR["genbrain-l"] == 1e-4
    fit(small_store, tmp_path / "other", TrainConfig(steps=1, batch_size=2, progress=False),
        arch=TEST_ARCH)
    assert training_lr("nano", tmp_path / "other") == 1e-4  # no preset: presets.PAPER_LR


_DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from _model_factory import TEST_ARCH
from bids_genbrain.cohort import CohortStore
from bids_genbrain.model.train import TrainConfig, fit
fit(CohortStore(sys.argv[1]), sys.argv[2],
    TrainConfig(steps=4, batch_size=int(sys.argv[3]), lr=1e-3, progress=False), arch=TEST_ARCH)
"""


def test_two_process_ddp_matches_one_process(small_store, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT.format(tests=str(TESTS)))
    one = subprocess.run([sys.executable, str(script), str(small_store.path),
                          str(tmp_path / "one"), "4"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script), str(small_store.path),
                          str(tmp_path / "two"), "2"], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    l1 = pd.read_csv(tmp_path / "one" / "loss.tsv", sep="\t")["loss"].to_numpy()
    l2 = pd.read_csv(tmp_path / "two" / "loss.tsv", sep="\t")["loss"].to_numpy()
    np.testing.assert_allclose(l2, l1, rtol=1e-4)
    w1 = load_file(str(_state_dir(tmp_path / "one") / "model.safetensors"))
    w2 = load_file(str(_state_dir(tmp_path / "two") / "model.safetensors"))
    moved = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert moved < 1e-4, moved  # Adam moves weights by ~1e-3 per step: 4 steps ~ 4e-3
    assert w1.keys() == w2.keys()


@pytest.mark.slow
def test_planted_age_effect_is_learned(tmp_path):
    """Old-age samples lose GM in the planted region: right sign, within 2x of the truth."""
    res = 12.0
    ages = list(np.linspace(20.0, 80.0, 32))
    table = write_cohort(tmp_path / "deriv", ages, resolution=res)
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store", participants=table,
                         conditions=["age", "sex"], resolution=res, progress=False)
    bundle = fit(store, tmp_path / "model",
                 TrainConfig(steps=3000, batch_size=16, lr=3e-3, checkpoint_every=10_000,
                             progress=False), arch=TEST_ARCH.with_(resolution=res, patch_size=16))
    region, mask = planted_region(res), brain_mask(res)
    outside = mask & ~region
    means = {}
    for age in (20.0, 80.0):
        rows = conditions_table(bundle, 8, {"age": age})
        vols = [np.asanyarray(v.dataobj)
                for _, v in sample(bundle, rows, seed=1, steps=50, cfg_scale=1.2)]
        means[age] = (np.mean([v[region].mean() for v in vols]),
                      np.mean([v[outside].mean() for v in vols]))
    truth = float(gm_map(20.0, 0, res)[region].mean() - gm_map(80.0, 0, res)[region].mean())
    assert truth == pytest.approx(SLOPE * 60, rel=0.15)
    learned = means[20.0][0] - means[80.0][0]
    assert truth / 2 < learned < truth * 2, (learned, truth)
    assert abs(means[20.0][1] - means[80.0][1]) < learned / 3  # the effect is local


def test_image_condition_channels_are_trained_saved_and_required(small_store, tmp_path):
    seen = []

    def same_image(rows, generator):  # a trivial "source modality": the target itself
        seen.append(rows.copy())
        return torch.from_numpy(small_store.read(rows)).unsqueeze(1)

    bundle = fit(small_store, tmp_path / "m", TrainConfig(steps=2, batch_size=2, progress=False),
                 arch=TEST_ARCH, rows=np.array([0, 2, 4]), image_conditions=same_image,
                 image_condition_names=["T1w"])
    assert bundle.model.in_channels == 2 and set(np.concatenate(seen)) <= {0, 2, 4}
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["image_conditions"] == ["T1w"] and config["architecture"]["in_channels"] == 2
    rows = conditions_table(bundle, 1)
    with pytest.raises(ValueError, match="image condition"):
        next(sample(bundle, rows, 0, steps=2))
    _, img = next(sample(bundle, rows, 0, steps=2, image_cond=small_store.read([0])[:, None]))
    assert np.isfinite(np.asanyarray(img.dataobj)).all()
    with pytest.raises(ValueError, match="input channel"):
        fit(small_store, tmp_path / "m2", TrainConfig(steps=1, progress=False), arch=TEST_ARCH,
            image_conditions=same_image)


@pytest.mark.slow
def test_image_condition_is_used(tmp_path):
    """Trained to reproduce its input channel, samples follow the image they are given."""
    res = 12.0
    maps = [gm_map(age, seed=i, resolution=res, noise=0.15) for i, age in
            enumerate(np.linspace(20.0, 80.0, 8))]
    write_maps(tmp_path / "deriv", maps, resolution=res)
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store", resolution=res,
                         progress=False)
    bundle = fit(store, tmp_path / "m",
                 TrainConfig(steps=2000, batch_size=8, lr=3e-3, progress=False,
                             checkpoint_every=10_000),
                 arch=TEST_ARCH.with_(resolution=res, patch_size=16),
                 image_conditions=lambda rows, g: torch.from_numpy(store.read(rows))[:, None],
                 image_condition_names=["source"])
    data = store.read(range(len(store)))
    rows = conditions_table(bundle, 3)
    mask = brain_mask(res)
    for i, img in sample(bundle, rows, 0, steps=50, cfg_scale=1.0,
                         image_cond=data[[1, 4, 6]][:, None]):
        vol = np.asanyarray(img.dataobj)
        target = store.denormalise(data[[1, 4, 6][i]], "GMmod")
        r = [np.corrcoef(vol[mask], store.denormalise(d, "GMmod"))[0, 1] for d in data]
        assert int(np.argmax(r)) == [1, 4, 6][i] and np.corrcoef(vol[mask], target)[0, 1] > 0.9
