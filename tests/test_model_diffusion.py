"""DDPM loss and DDIM sampler against an oracle denoiser; averaging; seeded draws."""

from __future__ import annotations

import pytest
import torch
from _model_factory import TEST_ARCH

from bids_genbrain.model.checkpoint import build_model
from bids_genbrain.model.conditions import ConditionSpec
from bids_genbrain.model.diffusion import (
    DiffusionConfig,
    TrainingDraws,
    ddim_sample,
    draw_training,
    initial_noise,
    min_snr_weight,
    sample_seed,
    sample_stream,
    to_model_space,
    training_loss,
)


class Oracle(torch.nn.Module):
    """Predicts the exact target (noise, velocity or clean image) for known clean images."""

    def __init__(self, x0: torch.Tensor, config: DiffusionConfig) -> None:
        super().__init__()
        self.x0 = to_model_space(x0)
        self.alphas = config.ddpm().alphas_cumprod
        self.prediction = config.prediction_type
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, cond=None, drop=None):
        a = self.alphas[t].view(-1, 1)
        x0 = self.x0[: len(x)]
        eps = (x[:, 0] - a.sqrt() * x0) / (1 - a).sqrt()
        out = {"epsilon": eps, "sample": x0,
               "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[self.prediction]
        return out.unsqueeze(1)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
@pytest.mark.parametrize("steps", [50, 10])
def test_ddim_with_oracle_recovers_clean_images(schedule, steps, prediction):
    config = DiffusionConfig(schedule=schedule, prediction_type=prediction)
    x0 = torch.rand(3, 400, generator=torch.Generator().manual_seed(0))
    out = ddim_sample(Oracle(x0, config), config, {}, initial_noise([1, 2, 3], 400),
                      steps=steps, cfg_scale=1.0)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_training_loss_is_zero_for_the_oracle_and_positive_otherwise(prediction):
    config = DiffusionConfig(prediction_type=prediction)
    x0 = torch.rand(4, 300, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    draws = TrainingDraws(torch.tensor([0, 10, 500, 999]), torch.randn(4, 300, generator=gen), {})
    assert float(training_loss(Oracle(x0, config), config.ddpm(), x0, {}, draws)) < 1e-8
    wrong = Oracle(torch.rand(4, 300), config)
    assert float(training_loss(wrong, config.ddpm(), x0, {}, draws)) > 1e-3


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weighting_gives_each_image_a_clean_image_weight_min_snr_gamma(prediction):
    """A predictor whose clean-image estimate is off by the same error at every timestep: the
    weighted loss of each image is its x0 error times min(SNR, gamma), whatever the target."""
    config = DiffusionConfig(prediction_type=prediction)
    scheduler = config.ddpm()
    x0 = torch.rand(4, 300, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    t = torch.tensor([0, 10, 500, 999])
    draws = TrainingDraws(t, torch.randn(4, 300, generator=gen), {})
    # an x0 error e in model space ([-1, 1]) is an eps error -e sqrt(a / (1 - a)) and a v error
    # -e / sqrt(1 - a); a store-space shift of e / 2 is a model-space shift of e
    shift = 0.05
    biased = Oracle(x0 + shift / 2, config)
    a = scheduler.alphas_cumprod[t]
    snr = a / (1 - a)
    gamma = 5.0
    for k in range(4):
        one = TrainingDraws(t[k:k + 1], draws.noise[k:k + 1], {})
        loss = float(training_loss(Oracle(x0[k:k + 1] + shift / 2, config), scheduler,
                                   x0[k:k + 1], {}, one, min_snr_gamma=gamma))
        assert loss == pytest.approx(shift**2 * float(torch.clamp(snr[k], max=gamma)), rel=1e-3)
    plain = float(training_loss(biased, scheduler, x0, {}, draws))
    weighted = float(training_loss(biased, scheduler, x0, {}, draws, min_snr_gamma=gamma))
    assert weighted != pytest.approx(plain, rel=1e-2)
    assert torch.all(min_snr_weight(scheduler, t, gamma) > 0)


def test_training_draws_are_seeded_and_sliceable():
    model = build_model(TEST_ARCH, [ConditionSpec("age", "continuous", dropout=0.5),
                                    ConditionSpec("modality", "categorical", levels=["GM"],
                                                  dropout=0.0)])
    a = draw_training(model, DiffusionConfig(), 6, torch.Generator().manual_seed(3))
    b = draw_training(model, DiffusionConfig(), 6, torch.Generator().manual_seed(3))
    assert torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)
    assert not a.drop["modality"].any()  # never guided away
    part = a.slice(2, 4)
    assert torch.equal(part.noise, a.noise[2:4])
    assert torch.equal(part.drop["age"], a.drop["age"][2:4])


def _random_model(conditions: list[ConditionSpec]) -> torch.nn.Module:
    """A test network with small random weights everywhere (not the zero-initialised output
    layers, whose output would not depend on anything), in eval mode."""
    model = build_model(TEST_ARCH, conditions)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def test_averaging_is_the_mean_of_seeded_draws():
    model = _random_model([ConditionSpec("modality", "categorical", levels=["GM"], dropout=0.0)])
    config = DiffusionConfig()
    cond = {"modality": torch.zeros(2, dtype=torch.long)}
    averaged = dict(sample_stream(model, config, cond, seed=7, steps=4, average=3, batch_size=4))
    assert sorted(averaged) == [0, 1]
    for i in (0, 1):
        seeds = [sample_seed(7, i, j) for j in range(3)]
        single = ddim_sample(model, config, {"modality": torch.zeros(3, dtype=torch.long)},
                             initial_noise(seeds, model.layout.n_voxels), steps=4, cfg_scale=1.2)
        torch.testing.assert_close(averaged[i], single.mean(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(averaged[0], averaged[1])


@pytest.mark.parametrize("average", [1, 2])
def test_resumed_sampling_yields_the_uninterrupted_bits(average):
    """Rows a killed run already wrote (``skip``) leave every other image bit for bit as an
    uninterrupted run's, although the rows left would fill batches of other sizes (a
    network's output bits depend on the batch size)."""
    model = _random_model([ConditionSpec("modality", "categorical", levels=["GM"], dropout=0.0),
                           ConditionSpec("age", "continuous", mean=50.0, std=15.0)])
    n = 13
    cond = {"modality": torch.zeros(n, dtype=torch.long), "age": torch.linspace(-1.5, 1.5, n)}
    config = DiffusionConfig()

    def draw(skip: set[int]) -> dict[int, torch.Tensor]:
        return dict(sample_stream(model, config, cond, seed=7, steps=3, average=average,
                                  batch_size=8, skip=skip))

    full = draw(set())
    for skip in ({0}, {0, 1, 2}, {1, 2, 3, 4, 5}, set(range(8)), {12}):
        resumed = draw(skip)
        assert sorted(resumed) == sorted(set(range(n)) - skip)
        differ = [i for i in resumed if not torch.equal(resumed[i], full[i])]
        assert not differ, (skip, differ)


def test_bad_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        DiffusionConfig(schedule="cosine-ish")
