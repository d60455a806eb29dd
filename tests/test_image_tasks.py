"""Image tasks (bids_genbrain.tasks): task records, training pairs, fine-tuning's start point."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from bids_genbrain.cohort import CohortStore, build_cohort
from bids_genbrain.corrupt import CorruptionConfig
from bids_genbrain.model.checkpoint import load_checkpoint
from bids_genbrain.model.presets import get_preset
from bids_genbrain.model.train import TrainConfig, fit
from bids_genbrain.tasks.apply import image_seed
from bids_genbrain.tasks.finetune import finetune_task
from bids_genbrain.tasks.pairs import CorruptedInputs, pair_rows, training_pairs
from bids_genbrain.tasks.spec import ImageTask, TaskError, check_model_for, task_of

RES = 4.0


@pytest.fixture(scope="module")
def maps(sim_small, tmp_path_factory):
    """The simulator's preprocessed T1w/FLAIR MNI maps; sub-06 has no FLAIR, sub-05 no T1w."""
    root = tmp_path_factory.mktemp("taskmaps") / "maps"
    for path in sim_small.mnimaps.rglob("*desc-preproc_*"):
        if ("sub-06" in path.name and "FLAIR" in path.name) or (
                "sub-05" in path.name and "T1w" in path.name):
            continue
        target = root / path.relative_to(sim_small.mnimaps)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(sim_small.mnimaps / "dataset_description.json",
                    root / "dataset_description.json")
    return root


@pytest.fixture(scope="module")
def store(maps, tmp_path_factory):
    path = tmp_path_factory.mktemp("taskstore") / "store"
    return build_cohort([maps], path, modalities=["FLAIR", "T1w"], resolution=RES,
                        progress=False)


def test_task_records_and_checks():
    task = ImageTask.synthesize(["T1w", "T2w"], "FLAIR")
    assert task.image_conditions == ["T1w", "T2w"] and task.outputs == ["FLAIR"]
    assert task.store_modalities == ["FLAIR", "T1w", "T2w"] and task.desc == "synthetic"
    assert ImageTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    enhance = ImageTask.enhance(["T1w", "FLAIR"], CorruptionConfig(max_events=2))
    assert enhance.image_conditions == ["corrupted"] and enhance.desc == "enhanced"
    assert enhance.corruption_config().max_events == 2
    for bad, fragment in [(dict(name="denoise"), "unknown task"),
                          (dict(name="enhance"), "--modality"),
                          (dict(name="enhance", modalities=["GM"]), "scans"),
                          (dict(name="synthesize", sources=["T1w"]), "--target"),
                          (dict(name="synthesize", sources=["FLAIR"], target="FLAIR"),
                           "also a --source"),
                          (dict(name="synthesize", sources=["T1w", "T1w"], target="FLAIR"),
                           "each modality once")]:
        with pytest.raises(TaskError, match=fragment):
            ImageTask(**bad)


def test_synthesis_pairs_match_participant_and_session(store):
    pairs = pair_rows(store, ["T1w"], "FLAIR")
    table = store.table
    assert len(pairs.targets) == 4  # sub-05 lacks T1w, sub-06 lacks FLAIR
    for target, (source,) in zip(pairs.targets, pairs.sources, strict=True):
        assert table["modality"].iloc[target] == "FLAIR" and table["modality"].iloc[source] == "T1w"
        assert table["participant_id"].iloc[target] == table["participant_id"].iloc[source]
    assert pairs.missing == ["sub-05: no T1w"]
    rows, builder = training_pairs(store, ImageTask.synthesize(["T1w"], "FLAIR"))
    batch = builder(rows[:2], torch.Generator().manual_seed(0))
    assert batch.shape == (2, 1, store.data.shape[1])
    assert np.array_equal(batch[:, 0].numpy(), store.read(pairs.sources[:2, 0]))
    with pytest.raises(TaskError, match="no participant has FLAIR"):
        pair_rows(store, ["T2w"], "FLAIR")


def test_corrupted_inputs_are_fresh_and_seeded(store):
    builder = CorruptedInputs(store, CorruptionConfig(motion_probability=1.0))
    rows = np.arange(3)
    a = builder(rows, torch.Generator().manual_seed(1)).numpy()
    b = builder(rows, torch.Generator().manual_seed(1)).numpy()
    c = builder(rows, torch.Generator().manual_seed(2)).numpy()
    assert a.shape == (3, 1, store.data.shape[1]) and np.array_equal(a, b)
    assert not np.allclose(a, c)  # another step, another corruption
    assert a.min() >= 0 and a.max() <= 1
    clean = store.read(rows)
    assert np.mean(np.abs(a[:, 0] - clean)) > 0.01
    # no motion, no noise: the pair is the clean image itself (raw units and back)
    same = CorruptedInputs(store, CorruptionConfig(motion_probability=0, noise_probability=0))
    assert np.allclose(same(rows, torch.Generator().manual_seed(0))[:, 0].numpy(), clean,
                       atol=1e-5)


def test_fine_tuning_starts_at_the_pretrained_model(maps, store, tmp_path):
    pretrained = fit(store, tmp_path / "pre", TrainConfig(steps=3, batch_size=2, lr=1e-3,
                                                          progress=False, device="cpu"),
                     arch=get_preset("tiny"))
    task = ImageTask.enhance(["T1w"])
    tuned = finetune_task(task, [maps], tmp_path / "tuned",
                          TrainConfig(steps=1, batch_size=2, lr=1e-12, device="cpu"),
                          init=tmp_path / "pre", progress=False)
    assert tuned.model.in_channels == 2 and tuned.image_conditions == ["corrupted"]
    n = store.data.shape[1]
    x = torch.randn(3, 1, n, generator=torch.Generator().manual_seed(0))
    image = torch.rand(3, 1, n, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 400, 900])
    cond = {"modality": torch.tensor([1, 1, 1])}  # T1w (store levels FLAIR, T1w)
    with torch.no_grad():
        before = pretrained.model(x, t, cond)
        after = tuned.model(torch.cat([x, image], dim=1), t, cond)
    assert torch.allclose(before, after, atol=1e-6)  # the new channel starts at zero
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["task"]["name"] == "enhance" and config["task"]["modalities"] == ["T1w"]
    assert config["task"]["corruption"]["rotation_poisson_mean"] == 10.0
    assert config["image_conditions"] == ["corrupted"]
    assert config["provenance"]["parent"]["weights_sha256"] == json.loads(
        (tmp_path / "pre" / "config.json").read_text())["weights_sha256"]
    assert "## Task" in (tmp_path / "tuned" / "README.md").read_text()
    loaded = load_checkpoint(tmp_path / "tuned")
    assert task_of(loaded) == task
    assert check_model_for(loaded, enhance=True, impute=None, resolution=RES) == task
    with pytest.raises(TaskError, match="not enhancement|imputes|synthesize"):
        check_model_for(loaded, enhance=False, impute="FLAIR", resolution=RES)
    with pytest.raises(TaskError, match="4 mm grid"):
        check_model_for(loaded, enhance=True, impute=None, resolution=2.0)
    with pytest.raises(TaskError, match="not an image-task model"):
        task_of(load_checkpoint(tmp_path / "pre"))
    with pytest.raises(TaskError, match="another image task"):
        finetune_task(ImageTask.synthesize(["T1w"], "FLAIR"), [maps], tmp_path / "x",
                      TrainConfig(steps=1), init=tmp_path / "tuned", progress=False)


def test_task_options_are_checked_up_front(tmp_path):
    from bids_genbrain.config import Config
    from bids_genbrain.errors import InputError

    bids, model = tmp_path / "bids", tmp_path / "model"
    bids.mkdir()
    model.mkdir()
    for options, fragment in [({"impute": "FLAIR"}, "needs --model"),
                              ({"impute_existing": True}, "needs --impute"),
                              ({"enhance": True, "impute": "FLAIR"}, "different models"),
                              ({"enhance": True, "check_only": True}, "--check-only"),
                              ({"enhance": True, "analysis_level": "group"}, "participant-level")]:
        settings = {"bids_dir": bids, "output_dir": tmp_path / "out",
                    "analysis_level": "participant", **options}
        with pytest.raises(InputError, match=fragment):
            Config(**settings).validate()
    assert Config(bids, tmp_path / "out", "participant").validate().average == 1


def test_model_for_another_target_is_refused():
    from types import SimpleNamespace

    task = ImageTask.synthesize(["T1w"], "FLAIR")
    bundle = SimpleNamespace(task=task.to_dict(), image_conditions=["T1w"], path="ck",
                             arch=SimpleNamespace(resolution=4.0))
    assert check_model_for(bundle, enhance=False, impute="FLAIR", resolution=4) == task
    with pytest.raises(TaskError, match="imputes FLAIR .from T1w., not T2w"):
        check_model_for(bundle, enhance=False, impute="T2w", resolution=4)
    bundle.image_conditions = ["T2w"]
    with pytest.raises(TaskError, match="differ from the model"):
        task_of(bundle)


def test_image_seed_depends_on_run_seed_and_name():
    a = image_seed(3, "sub-01_desc-enhanced_T1w.nii.gz")
    assert a == image_seed(3, "sub-01_desc-enhanced_T1w.nii.gz")
    assert a != image_seed(4, "sub-01_desc-enhanced_T1w.nii.gz")
    assert a != image_seed(3, "sub-02_desc-enhanced_T1w.nii.gz")


def test_volumes_round_trip(store):
    from bids_genbrain.evaluate.baselines import from_volumes, padded_shape, to_volumes

    mask = store.mask()
    shape = padded_shape(mask.shape)
    assert all(s % 8 == 0 and s >= m for s, m in zip(shape, mask.shape, strict=True))
    values = torch.from_numpy(store.read([0, 1]))[:, None]
    volumes = to_volumes(values, mask, shape)
    assert volumes.shape == (2, 1, *shape) and float(volumes.sum()) == pytest.approx(
        float(values.sum()), rel=1e-5)
    assert torch.equal(from_volumes(volumes, mask), values[:, 0])


def test_unet_baseline_learns_the_pairs_and_resumes(store, tmp_path):
    from bids_genbrain.evaluate.baselines import mean_brain, train_unet

    rows, builder = training_pairs(store, ImageTask.synthesize(["T1w"], "FLAIR"))
    options = dict(in_channels=1, batch_size=2, lr=3e-3, channels=(8, 16, 32))
    unet = train_unet(store, rows, builder, steps=12, **options)
    assert np.mean(unet.losses[-4:]) < np.mean(unet.losses[:2])
    # killed after 6 steps and rerun: the same 12 losses as one uninterrupted run
    state = tmp_path / "unet.pt"
    train_unet(store, rows, builder, steps=6, state=state, save_every=3, **options)
    resumed = train_unet(store, rows, builder, steps=12, state=state, **options)
    assert np.allclose(resumed.losses, unet.losses, rtol=1e-4)
    pred = unet.predict(builder(rows[:3], torch.Generator()).numpy())
    assert pred.shape == (3, store.data.shape[1]) and np.isfinite(pred).all()
    mean = mean_brain(store, rows)
    assert np.allclose(mean, store.read(rows).mean(axis=0), atol=1e-6)


def test_paired_statistics_known_answers(store):
    from scipy import stats

    from bids_genbrain.evaluate.imagetasks import (effect_similarity, image_metrics, mean_ci,
                                                   paired_test)

    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) / np.sqrt(3)
    assert mean == 2.0 and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    rng = np.random.default_rng(0)
    b = rng.normal(size=30)
    a = b + 0.5 + 0.01 * rng.normal(size=30)
    result = paired_test(a, b)
    assert result["mean_diff"] == pytest.approx(0.5, abs=0.01) and result["p_t"] < 1e-10
    assert result["ci_low"] < 0.5 < result["ci_high"] and result["p_wilcoxon"] < 1e-5
    assert paired_test(b, b)["p_t"] == 1.0
    clean = store.read([0])[0]
    same = image_metrics(clean, clean, store.mask())
    assert same["PSNR"] == np.inf and same["RMSE"] == 0 and same["SSIM"] == pytest.approx(1)
    # a constant error of 0.1 on every brain voxel: RMSE 0.1, PSNR 20 dB
    shifted = image_metrics(clean, clean + 0.1, store.mask())
    assert shifted["RMSE"] == pytest.approx(0.1, rel=1e-5)
    assert shifted["PSNR"] == pytest.approx(20.0, rel=1e-4)
    # effect maps: the real images' own age pattern has cosine 1, its negation -1
    ages = np.linspace(20, 80, 12)
    table = pd.DataFrame({"age": ages, "sex": ["F", "M"] * 6})
    pattern = rng.normal(size=500)
    real = np.outer(ages, pattern) + rng.normal(size=(12, 500))
    assert effect_similarity(real, real, table, "age", ["sex"]) == pytest.approx(1.0)
    assert effect_similarity(-real, real, table, "age", ["sex"]) == pytest.approx(-1.0)
