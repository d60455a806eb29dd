"""Training: overfitting two images, exact resume, DDP (2 processes) equals one process,
and (slow) learning a planted age effect."""

from __future__ import annotations

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
from bids_genbrain.model.train import TrainConfig, batch_indices, fit
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
    for i, vol in sample(bundle, table, seed=0, steps=50, cfg_scale=1.0):
        own, other = train[table["sex"][i]], train["M" if table["sex"][i] == "F" else "F"]
        r = np.corrcoef(vol[mask], own)[0, 1]
        rmse = np.sqrt(np.mean((vol[mask] - own) ** 2))
        assert r > 0.9 and rmse < 0.25 * baseline, (i, r, rmse, baseline)
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
        a = load_file(str(tmp_path / "straight" / "training_state" / name))
        b = load_file(str(tmp_path / "resumed" / "training_state" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    la = pd.read_csv(tmp_path / "straight" / "loss.tsv", sep="\t")
    lb = pd.read_csv(tmp_path / "resumed" / "loss.tsv", sep="\t")
    assert la["step"].tolist() == list(range(1, 7))
    np.testing.assert_array_equal(la["loss"], lb["loss"])


def test_resume_refuses_another_run(small_store, tmp_path):
    fit(small_store, tmp_path / "run", TrainConfig(steps=2, batch_size=2, progress=False),
        arch=TEST_ARCH)
    with pytest.raises(CheckpointError, match="different run"):
        fit(small_store, tmp_path / "run",
            TrainConfig(steps=4, batch_size=2, seed=9, progress=False), arch=TEST_ARCH)


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
    w1 = load_file(str(tmp_path / "one" / "training_state" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "training_state" / "model.safetensors"))
    moved = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert moved < 1e-4, moved  # Adam moves weights by ~1e-3 per step: 4 steps ~ 4e-3
    assert w1.keys() == w2.keys()


@pytest.mark.slow
def test_planted_age_effect_is_learned(tmp_path):
    ages = list(np.linspace(20.0, 80.0, 32))
    table = write_cohort(tmp_path / "deriv", ages)
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store", participants=table,
                         conditions=["age", "sex"], resolution=RES, progress=False)
    bundle = fit(store, tmp_path / "model",
                 TrainConfig(steps=3000, batch_size=8, lr=2e-3, checkpoint_every=10_000,
                             progress=False), arch=TEST_ARCH.with_(hidden_size=128, depth=3))
    region = planted_region()
    means = {}
    for age in (20.0, 80.0):
        table = conditions_table(bundle, 8, {"age": age})
        means[age] = np.mean([v[region].mean() for _, v in sample(bundle, table, seed=1,
                                                                  steps=50, cfg_scale=1.2)])
    truth = float(gm_map(20.0, 0)[region].mean() - gm_map(80.0, 0)[region].mean())
    assert truth == pytest.approx(SLOPE * 60, rel=0.1)
    learned = means[20.0] - means[80.0]
    assert truth / 2 < learned < truth * 2, (learned, truth)
