"""Tokens, the DiT network, CFG, fine-tuning extensions and parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_factory import RES, TEST_ARCH

from bids_genbrain.model.checkpoint import build_model
from bids_genbrain.model.conditions import ConditionSpec, encode_table, infer_spec
from bids_genbrain.model.dit import GenBrainDiT
from bids_genbrain.model.presets import PRESETS, parameter_count
from bids_genbrain.model.tokens import TokenLayout, morton_codes
from bids_genbrain.model.train import TrainConfig, make_optimizer
from bids_genbrain.templates import brain_mask

CONDITIONS = [
    ConditionSpec("age", "continuous", mean=50.0, std=15.0),
    ConditionSpec("sex", "categorical", levels=["F", "M"]),
    ConditionSpec("modality", "categorical", levels=["GMmod"], dropout=0.0),
]


def _randomised(model: GenBrainDiT, seed: int = 0) -> GenBrainDiT:
    """Give every parameter random values (a fresh DiT outputs exactly zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def _inputs(model: GenBrainDiT, n: int = 3, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, model.in_channels, model.layout.n_voxels), generator=gen)
    t = torch.tensor([10, 500, 990][:n])
    cond = {"age": torch.tensor([-1.0, 0.5, float("nan")][:n]),
            "sex": torch.tensor([0, 1, 2][:n]), "modality": torch.zeros(n, dtype=torch.long)}
    return x, t, cond


@pytest.fixture(scope="module")
def model() -> GenBrainDiT:
    torch.manual_seed(0)
    return _randomised(build_model(TEST_ARCH, CONDITIONS))


def test_morton_codes_interleave_bits():
    codes = morton_codes(np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1], [2, 0, 0]]))
    assert codes.tolist() == [1, 2, 4, 7, 32]


@pytest.mark.parametrize("order", ["raster", "morton"])
def test_token_layout_round_trip(order):
    mask = brain_mask(RES)
    layout = TokenLayout(mask, 32, order, voxel_size=RES)
    assert layout.n_voxels == mask.sum()
    assert layout.n_tokens == -(-layout.n_voxels // 32)
    assert np.array_equal(np.sort(layout.permutation), np.arange(layout.n_voxels))
    assert layout.valid().sum() == layout.n_voxels
    net = GenBrainDiT(layout, hidden_size=12, depth=1, num_heads=2)
    x = torch.arange(layout.n_voxels, dtype=torch.float32).reshape(1, 1, -1)
    tokens = net.to_tokens(x)
    assert tokens.shape == (1, 1, layout.padded_length)
    perm = torch.as_tensor(layout.permutation)
    assert torch.equal(tokens[0, 0, : layout.n_voxels], x[0, 0, perm])
    back = net.from_tokens(tokens.reshape(1, layout.n_tokens, layout.patch_size))
    assert torch.equal(back, x)


def test_morton_tokens_are_more_compact_than_raster():
    mask = brain_mask(4.0)
    raster = TokenLayout(mask, 64, "raster", voxel_size=4.0).compactness()
    morton = TokenLayout(mask, 64, "morton", voxel_size=4.0).compactness()
    # 64 voxels fill a 4x4x4 block (RMS radius ~8.9 mm at 4 mm); a raster token is a slab row
    assert morton < 0.6 * raster
    assert morton < 14.0


def test_fresh_model_predicts_zero_and_keeps_shape():
    torch.manual_seed(0)
    net = build_model(TEST_ARCH, CONDITIONS).eval()
    x, t, cond = _inputs(net)
    out = net(x, t, cond)
    assert out.shape == (3, 1, net.layout.n_voxels)
    assert torch.count_nonzero(out) == 0  # adaLN-Zero and zero output layer


def test_wrong_input_shape_is_refused(model):
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(2, 1, 10), torch.zeros(2, dtype=torch.long))


def test_cfg_scale_one_equals_conditional(model):
    x, t, cond = _inputs(model)
    with torch.no_grad():
        conditional = model(x, t, cond)
        guided_one = model.forward_with_cfg(x, t, cond, 1.0)
        guided_two = model.forward_with_cfg(x, t, cond, 2.0)
        unconditional = model(x, t, cond, {"age": torch.ones(3, dtype=torch.bool),
                                           "sex": torch.ones(3, dtype=torch.bool)})
    torch.testing.assert_close(guided_one, conditional, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(guided_two, 2 * conditional - unconditional, rtol=1e-4, atol=1e-5)
    assert (conditional - unconditional).abs().max() > 1e-3  # the conditions matter


def test_missing_condition_equals_null_embedding(model):
    x, t, cond = _inputs(model)
    with torch.no_grad():
        absent = model(x, t, {"modality": cond["modality"]})
        dropped = model(x, t, cond, {"age": torch.ones(3, dtype=torch.bool),
                                     "sex": torch.ones(3, dtype=torch.bool)})
    torch.testing.assert_close(absent, dropped)


def _extend(net: GenBrainDiT, extension: str, x, cond):
    """Apply one fine-tuning extension; return inputs that exercise it (the new level)."""
    if extension == "condition":
        net.add_condition(ConditionSpec("diagnosis", "categorical", levels=["CN", "AD"]))
        cond = {**cond, "diagnosis": torch.tensor([1, 0, 1])}
    elif extension == "continuous":
        net.add_condition(ConditionSpec("score", "continuous"))
        cond = {**cond, "score": torch.tensor([2.0, -1.0, 0.3])}
    elif extension == "modality":
        net.add_levels("modality", ["FA"], init_from="GMmod")
        assert net.conditions[-1].levels == ["GMmod", "FA"]
        cond = {**cond, "modality": torch.tensor([1, 0, 1])}
    else:
        net.add_input_channels(2)
        x = torch.cat([x, torch.randn(3, 2, x.shape[-1])], dim=1)
    return x, cond


@pytest.mark.parametrize("extension", ["condition", "continuous", "modality", "channels"])
def test_extensions_start_as_identity(extension):
    torch.manual_seed(0)
    net = _randomised(build_model(TEST_ARCH, CONDITIONS), seed=3)
    x, t, cond = _inputs(net)
    with torch.no_grad():
        before = net(x, t, cond)
    x, cond = _extend(net, extension, x, cond)
    with torch.no_grad():
        after = net(x, t, cond)  # the new modality starts as the one it copies
    torch.testing.assert_close(after, before)
    assert net.in_channels == (3 if extension == "channels" else 1)
    # the extension is trainable: a gradient reaches the new parameters
    net.train()
    net(x, t, cond).pow(2).mean().backward()
    if extension in ("condition", "continuous"):
        grads = [p.grad for p in net.c_embedders[net.conditions[-1].name].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    elif extension == "modality":
        grad = net.c_embedders["modality"].embedding_table.weight.grad
        assert grad[1].abs().sum() > 0  # the new level's row
    else:
        assert net.x_embedder.weight.grad[:, 1:].abs().sum() > 0


def _level_gap(net: GenBrainDiT, extension: str) -> torch.Tensor:
    """Embedding of the extension's two 'levels' (AD vs CN, score +1 vs -1, FA vs GMmod)."""
    name = {"condition": "diagnosis", "continuous": "score", "modality": "modality"}[extension]
    emb = net.c_embedders[name]
    values = torch.tensor([1.0, -1.0]) if extension == "continuous" else torch.tensor([1, 0])
    out = emb(values)
    return out[0] - out[1]


def _one_step_gap(extension: str, config: TrainConfig) -> tuple[float, float, GenBrainDiT]:
    """How far one AdamW step moves the embedding gap between the extension's two levels."""
    torch.manual_seed(0)
    net = _randomised(build_model(TEST_ARCH, CONDITIONS), seed=3)
    x, t, cond = _inputs(net)
    x, cond = _extend(net, extension, x, cond)
    net.train()
    opt = make_optimizer(net, config)
    gap = _level_gap(net, extension).detach()
    target = torch.where(torch.tensor([True, False, True])[:, None, None], 1.0, -1.0)
    (net(x, t, cond) - target).pow(2).mean().backward()  # needs the two levels apart
    opt.step()
    moved = float((_level_gap(net, extension).detach() - gap).norm())
    return moved, 2 * config.lr * net.hidden_size ** 0.5, net


@pytest.mark.parametrize("extension", ["condition", "continuous", "modality"])
def test_extensions_learn_at_the_fine_tuning_rate(extension):
    """One AdamW step at lr 1e-4 separates the new level from the old by more than a bare
    table row can move at that rate: Adam moves each parameter by at most ~lr per step, so two
    rows of a table part by at most 2 lr sqrt(H) per step. The extension's own parameter group
    is what makes the difference: without it (scale 1) a new table stays within that bound."""
    moved, bound, net = _one_step_gap(extension, TrainConfig(lr=1e-4))
    assert moved > 2 * bound, (moved, bound)
    name = {"condition": "diagnosis", "continuous": "score", "modality": "modality"}[extension]
    assert {id(p) for p in net.extension_parameters()} == {
        id(p) for p in net.c_embedders[name].parameters()}
    if extension == "condition":
        slow, bound, _ = _one_step_gap(extension, TrainConfig(lr=1e-4, extension_lr_scale=1.0))
        assert slow < 1.01 * bound, (slow, bound)


def test_a_model_without_extensions_trains_at_one_rate():
    net = build_model(TEST_ARCH, CONDITIONS)
    groups = make_optimizer(net, TrainConfig(lr=1e-3)).param_groups
    assert net.extension_parameters() == [] and len(groups) == 1
    assert sum(p.numel() for p in groups[0]["params"]) == sum(p.numel() for p in net.parameters())


def test_condition_embeddings_start_at_unit_scale():
    """A fresh model's levels are apart by about one unit per dimension (not DiT's 0.02), so
    from the first step they weigh on the conditioning vector like the timestep embedding,
    whose trained norm is several units per dimension (benchmarks/bench_conditioning.py)."""
    torch.manual_seed(0)
    net = build_model(TEST_ARCH, CONDITIONS)
    with torch.no_grad():
        sex = net.c_embedders["sex"](torch.tensor([0, 1, 2]))
        age = net.c_embedders["age"](torch.tensor([-1.0, 1.0, float("nan")]))
    per_dim = net.hidden_size ** 0.5
    for rows in (sex, age):
        gaps = [float((rows[i] - rows[j]).norm()) / per_dim for i, j in ((0, 1), (0, 2))]
        assert all(0.3 < g < 5.0 for g in gaps), gaps


@pytest.mark.parametrize("name", ["nano", "micro", "tiny", "small"])
def test_parameter_count_matches_module(name):
    cfg = PRESETS[name].with_(resolution=RES, patch_size=32)
    with torch.device("meta"):
        net = build_model(cfg, CONDITIONS, brain_mask(RES))
    assert sum(p.numel() for p in net.parameters()) == parameter_count(cfg)


def test_paper_preset_is_paper_size():
    cfg = PRESETS["genbrain-l"]
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size, cfg.resolution) == (
        24, 1024, 16, 256, 2.0)
    assert 400e6 < parameter_count(cfg) < 500e6


def test_condition_encoding_and_inference():
    import pandas as pd

    table = pd.DataFrame({"age": [20.0, np.nan, 80.0],
                          "sex": pd.Categorical(["F", None, "M"], categories=["F", "M"]),
                          "site": ["b", "a", "b"]})
    specs = [infer_spec(c, table[c]) for c in ("age", "sex", "site")]
    assert specs[0].kind == "continuous" and specs[0].mean == pytest.approx(50.0)
    assert specs[1].levels == ["F", "M"] and specs[2].levels == ["a", "b"]
    enc = encode_table(specs, table)
    assert torch.isnan(enc["age"][1]) and enc["age"][2] == pytest.approx(1.0)
    assert enc["sex"].tolist() == [0, 2, 1]  # missing -> null row
    with pytest.raises(ValueError, match="not a known level"):
        specs[1].encode(["X"])
