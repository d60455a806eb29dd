"""DDPM training and DDIM sampling with classifier-free guidance, on MONAI's schedulers.

Images live in the cohort store normalised to [0, 1] within the mask; the diffusion runs on
``2 v - 1`` in [-1, 1] (DDIM clips its x0 estimate there). Training draws, for a *global*
batch, timesteps, noise and CFG drop masks from one seeded CPU generator per step; each
DistributedDataParallel rank takes its slice, so one process with batch 2b and two processes
with batch b see the same draws. Sampling starts every image from noise drawn from its own
seed, so a sample does not depend on which other images share its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from .dit import GenBrainDiT
from .presets import GUIDANCE_SCALE, PREDICTION_TYPE, PREDICTIONS

SCHEDULES = {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta"}


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule of the DDPM.

    Parameters
    ----------
    num_train_timesteps : int
        Diffusion steps (paper: 1000).
    schedule : {"linear", "scaled_linear"}
        Beta schedule.
    beta_start, beta_end : float
        Schedule end points.
    prediction_type : {"epsilon", "v_prediction", "sample"}
        Training target and what the sampler reads the network's output as. The loss is the
        MSE of that target, so ``epsilon`` weights errors of the clean-image estimate by the
        signal-to-noise ratio ``a / (1 - a)`` (little at high noise), ``v_prediction`` by
        ``1 / (1 - a)`` and ``sample`` by 1.
    """

    num_train_timesteps: int = 1000
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    prediction_type: str = PREDICTION_TYPE

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got "
                             f"{self.prediction_type!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def ddpm(self) -> DDPMScheduler:
        """MONAI DDPM scheduler for training."""
        return DDPMScheduler(self.num_train_timesteps, schedule=SCHEDULES[self.schedule],
                             beta_start=self.beta_start, beta_end=self.beta_end,
                             prediction_type=self.prediction_type)

    def ddim(self, steps: int) -> DDIMScheduler:
        """MONAI DDIM scheduler set to ``steps`` inference steps, clipping x0 to [-1, 1]."""
        sched = DDIMScheduler(self.num_train_timesteps, schedule=SCHEDULES[self.schedule],
                              beta_start=self.beta_start, beta_end=self.beta_end,
                              clip_sample=True, prediction_type=self.prediction_type)
        sched.set_timesteps(steps)
        return sched


def to_model_space(v: torch.Tensor) -> torch.Tensor:
    """[0, 1] (store) -> [-1, 1] (diffusion)."""
    return v * 2.0 - 1.0


def from_model_space(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (diffusion) -> [0, 1] (store)."""
    return (x + 1.0) / 2.0


@dataclass
class TrainingDraws:
    """Random quantities of one training step (global batch, CPU)."""

    timesteps: torch.Tensor
    noise: torch.Tensor
    drop: dict[str, torch.Tensor]

    def slice(self, start: int, stop: int) -> TrainingDraws:
        """The rows ``start:stop`` (a DDP rank's share)."""
        return TrainingDraws(self.timesteps[start:stop], self.noise[start:stop],
                             {k: v[start:stop] for k, v in self.drop.items()})


def draw_training(model: GenBrainDiT, config: DiffusionConfig, batch: int,
                  generator: torch.Generator) -> TrainingDraws:
    """Draw timesteps, noise and CFG drop masks for a global batch.

    Parameters
    ----------
    model : GenBrainDiT
        The (unwrapped) network; gives the voxel count and the conditions' dropout rates.
    config : DiffusionConfig
    batch : int
        Global batch size.
    generator : torch.Generator
        Seeded CPU generator.

    Returns
    -------
    TrainingDraws
    """
    t = torch.randint(0, config.num_train_timesteps, (batch,), generator=generator)
    noise = torch.randn((batch, model.layout.n_voxels), generator=generator)
    drop = model.sample_drop(batch, generator)
    return TrainingDraws(t, noise, drop)


def training_loss(
    model: nn.Module,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    cond: Mapping[str, torch.Tensor],
    draws: TrainingDraws,
    image_cond: torch.Tensor | None = None,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """DDPM loss: MSE of the scheduler's prediction target (noise, velocity or clean image).

    With ``min_snr_gamma`` each image's MSE is reweighted so that the implied weight of its
    clean-image error is ``min(SNR(t), gamma)`` (Min-SNR-gamma, Hang et al. 2023, ICCV): the
    nearly clean timesteps, which the noise and velocity targets weight by ``SNR`` and
    ``SNR + 1``, stop dominating the gradient, and the noisiest count for little. Measured on
    a planted diagnosis (docs/model.md, "On the 4 mm grid"), it slowed learning the condition.

    Parameters
    ----------
    model : nn.Module
        :class:`GenBrainDiT`, possibly wrapped in DistributedDataParallel.
    scheduler : DDPMScheduler
    x0 : torch.Tensor, shape (B, n_voxels)
        Clean images in [0, 1] (store space).
    cond : mapping of str to tensor (B,)
        Encoded conditions.
    draws : TrainingDraws
        This batch's timesteps, noise and drop masks (B rows).
    image_cond : torch.Tensor, shape (B, C, n_voxels), optional
        Image conditions in [0, 1].
    min_snr_gamma : float, optional
        Clip of the signal-to-noise ratio in the loss weight; None: plain MSE.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    device = x0.device
    noise = draws.noise.to(device)
    t = draws.timesteps.to(device)
    clean = to_model_space(x0)
    x_t = scheduler.add_noise(clean, noise, t)
    if scheduler.prediction_type == "v_prediction":
        target = scheduler.get_velocity(clean, noise, t)
    elif scheduler.prediction_type == "sample":
        target = clean
    else:
        target = noise
    inp = _with_image_cond(x_t, image_cond)
    out = model(inp, t, cond, {k: v.to(device) for k, v in draws.drop.items()})
    if min_snr_gamma is None:
        return nn.functional.mse_loss(out[:, 0].float(), target.float())
    per_image = (out[:, 0].float() - target.float()).square().mean(dim=1)
    return (per_image * min_snr_weight(scheduler, t, min_snr_gamma)).mean()


def min_snr_weight(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-image weight of the target's MSE giving a clean-image weight ``min(SNR, gamma)``.

    The target's MSE already weights the clean-image error by ``SNR`` (epsilon),
    ``SNR + 1`` (v_prediction) or 1 (sample); the weight divides that out.
    """
    a = scheduler.alphas_cumprod.to(t.device)[t].float()
    snr = a / (1 - a)
    implied = {"epsilon": snr, "v_prediction": snr + 1}.get(scheduler.prediction_type,
                                                             torch.ones_like(snr))
    return torch.clamp(snr, max=gamma) / implied


def _with_image_cond(x: torch.Tensor, image_cond: torch.Tensor | None) -> torch.Tensor:
    x = x.unsqueeze(1)
    if image_cond is None:
        return x
    return torch.cat([x, to_model_space(image_cond.to(x.device, x.dtype))], dim=1)


def sample_seed(seed: int, index: int, draw: int = 0) -> int:
    """Seed of draw ``draw`` of image ``index`` in a run seeded with ``seed``.

    Independent streams from :class:`numpy.random.SeedSequence`, so an image's starting
    noise does not depend on batching or on how many other images are drawn (its bits still
    depend on the batch size: see :func:`sample_stream`).
    """
    return int(np.random.SeedSequence([seed, index, draw]).generate_state(1, np.uint64)[0] >> 1)


def initial_noise(seeds: Sequence[int], n_voxels: int) -> torch.Tensor:
    """(len(seeds), n_voxels) standard normal noise, one CPU generator per seed."""
    rows = [torch.randn(n_voxels, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds]
    return torch.stack(rows)


@torch.no_grad()
def ddim_sample(
    model: GenBrainDiT,
    config: DiffusionConfig,
    cond: Mapping[str, torch.Tensor],
    noise: torch.Tensor,
    *,
    steps: int = 50,
    cfg_scale: float = GUIDANCE_SCALE,
    image_cond: torch.Tensor | None = None,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) sampling with classifier-free guidance.

    Parameters
    ----------
    model : GenBrainDiT
        In eval mode.
    config : DiffusionConfig
    cond : mapping of str to tensor (B,)
        Encoded conditions.
    noise : torch.Tensor, shape (B, n_voxels)
        Starting noise (:func:`initial_noise`).
    steps : int
        DDIM steps (paper: 50).
    cfg_scale : float
        Guidance scale (default :data:`~bids_genbrain.model.presets.GUIDANCE_SCALE`; the
        paper used 1.2); 1 is the conditional model alone.
    image_cond : torch.Tensor, shape (B, C, n_voxels), optional
        Image conditions in [0, 1].
    on_step : callable, optional
        Called after every step (progress bars).

    Returns
    -------
    torch.Tensor, shape (B, n_voxels)
        Samples in [0, 1] (store space, not clipped).
    """
    device = next(model.parameters()).device
    sched = config.ddim(steps)
    x = noise.to(device)
    cond = {k: v.to(device) for k, v in cond.items()}
    for t in sched.timesteps:
        tt = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
        inp = _with_image_cond(x, image_cond)
        if cfg_scale == 1.0:
            out = model(inp, tt, cond)
        else:
            out = model.forward_with_cfg(inp, tt, cond, cfg_scale)
        x, _ = sched.step(out[:, 0], int(t), x)
        if on_step is not None:
            on_step()
    return from_model_space(x).cpu()


def sample_stream(
    model: GenBrainDiT,
    config: DiffusionConfig,
    cond: Mapping[str, torch.Tensor],
    seed: int,
    *,
    steps: int = 50,
    cfg_scale: float = GUIDANCE_SCALE,
    average: int = 1,
    batch_size: int = 8,
    image_cond: torch.Tensor | None = None,
    on_step: Callable[[], None] | None = None,
    skip: Collection[int] = (),
) -> Iterator[tuple[int, torch.Tensor]]:
    """Sample one image per row of ``cond``, averaging ``average`` draws each, streaming.

    Parameters
    ----------
    model, config, steps, cfg_scale, on_step
        See :func:`ddim_sample`.
    cond : mapping of str to tensor (N,)
        Encoded conditions, one row per output image.
    seed : int
        Run seed; draw ``j`` of image ``i`` starts from :func:`sample_seed` ``(seed, i, j)``.
    average : int
        Draws averaged per image (paper: 5).
    batch_size : int
        Draws run together.
    image_cond : torch.Tensor, shape (N, C, n_voxels), optional
    skip : collection of int
        Rows not to yield (already written by an interrupted run). The draws are batched as
        in a run without ``skip``, and a batch holding a draw of any row still wanted is run
        whole: a network's output bits depend on the batch's size (the CPU matrix kernels
        change with it), so only the same batches make a resumed run yield exactly the
        images of an uninterrupted one. At most ``batch_size - 1`` draws are redone.

    Yields
    ------
    index : int
        Row of ``cond``.
    image : torch.Tensor, shape (n_voxels,)
        Mean of the draws, store space [0, 1].
    """
    if average < 1 or batch_size < 1:
        raise ValueError("average and batch_size must be >= 1")
    n = len(next(iter(cond.values()))) if cond else (
        len(image_cond) if image_cond is not None else 0)
    skip = frozenset(skip)
    jobs = [(i, j) for i in range(n) for j in range(average)]
    sums: dict[int, torch.Tensor] = {}
    done: dict[int, int] = {}
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        if all(i in skip for i, _ in chunk):
            continue
        rows = torch.as_tensor([i for i, _ in chunk])
        noise = initial_noise([sample_seed(seed, i, j) for i, j in chunk], model.layout.n_voxels)
        sub = {k: v[rows] for k, v in cond.items()}
        ic = image_cond[rows] if image_cond is not None else None
        images = ddim_sample(model, config, sub, noise, steps=steps, cfg_scale=cfg_scale,
                             image_cond=ic, on_step=on_step)
        for (i, _), img in zip(chunk, images, strict=True):
            if i in skip:
                continue
            sums[i] = sums[i] + img if i in sums else img.clone()
            done[i] = done.get(i, 0) + 1
            if done[i] == average:
                yield i, sums.pop(i) / average
