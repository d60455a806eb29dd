"""Baselines of the image tasks (the paper's Figures 3-4): a 3D U-Net and the mean brain.

* :func:`train_unet`: MONAI's 3D ``UNet`` trained on the *same pairs* as GenBrain — the same
  target rows, batches and image conditions (corruptions drawn from the same seeded streams,
  :mod:`bids_genbrain.tasks.pairs`) — to map the image condition(s) to the target directly,
  with the mean squared error on brain voxels;
* :func:`mean_brain`: the mean training image of the target modality, whatever the input.

Both work in store space ([0, 1] per modality, brain-mask voxels in mask order), as the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..cohort import CohortStore
from ..model.train import _progress_bar, _step_generator, batch_indices
from ..utils import atomic_path

ImageConditionFn = Callable[[np.ndarray, torch.Generator], torch.Tensor]


def padded_shape(shape: tuple[int, ...], multiple: int = 8) -> tuple[int, ...]:
    """Each axis rounded up to a multiple (the U-Net halves it three times)."""
    return tuple(-(-s // multiple) * multiple for s in shape)


def to_volumes(values: torch.Tensor, mask: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, C, n_voxels) mask-order values -> (B, C, *shape) volumes, zero outside the mask."""
    index = torch.from_numpy(np.flatnonzero(_pad_mask(mask, shape)))
    out = torch.zeros(values.shape[0], values.shape[1], int(np.prod(shape)), dtype=values.dtype)
    out[:, :, index] = values
    return out.reshape(values.shape[0], values.shape[1], *shape)


def from_volumes(volumes: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """(B, 1, *shape) volumes -> (B, n_voxels) mask-order values."""
    shape = tuple(volumes.shape[2:])
    index = torch.from_numpy(np.flatnonzero(_pad_mask(mask, shape))).to(volumes.device)
    return volumes.reshape(volumes.shape[0], -1).index_select(1, index)


def _pad_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(0, s) for s in mask.shape)] = mask
    return out


@dataclass
class UNetBaseline:
    """A trained U-Net with its grid.

    Attributes
    ----------
    net : torch.nn.Module
        MONAI ``UNet`` (3D), in eval mode.
    mask : ndarray of bool
        Brain mask of the grid.
    shape : tuple of int
        Padded volume shape.
    losses : list of float
        Training loss per step.
    seconds : list of float
        Wall time of each training step.
    """

    net: nn.Module
    mask: np.ndarray
    shape: tuple[int, ...]
    losses: list[float]
    seconds: list[float]

    @torch.no_grad()
    def predict(self, inputs: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """Outputs for image conditions ``inputs`` (n, C, n_voxels) -> (n, n_voxels)."""
        device = next(self.net.parameters()).device
        out = []
        for a in range(0, len(inputs), batch_size):
            x = to_volumes(torch.as_tensor(inputs[a:a + batch_size], dtype=torch.float32),
                           self.mask, self.shape)
            out.append(from_volumes(self.net(x.to(device)), self.mask).cpu().numpy())
        return np.concatenate(out)


def train_unet(store: CohortStore, rows: np.ndarray, image_conditions: ImageConditionFn, *,
               in_channels: int, steps: int, batch_size: int, lr: float = 1e-3, seed: int = 0,
               device: str | torch.device = "cpu", progress: bool = False,
               channels: tuple[int, ...] = (16, 32, 64, 128), state: Path | None = None,
               save_every: int = 50) -> UNetBaseline:
    """Train a 3D U-Net on the pairs GenBrain trains on with the same seed and batch size.

    Parameters
    ----------
    store : CohortStore
    rows : ndarray of int
        Target rows (:func:`bids_genbrain.tasks.pairs.training_pairs`).
    image_conditions : callable
        The pair builder; called with the generator GenBrain's training uses at each step.
    in_channels : int
        Image-condition channels.
    steps, batch_size, lr, seed
        AdamW optimisation.
    device : str or torch.device
    progress : bool
    channels : tuple of int
        Feature maps per level (three stride-2 downsamplings).
    state : Path, optional
        File holding the training state (weights, optimiser, step, losses; written atomically
        every ``save_every`` steps and at the end, read with ``weights_only``): a rerun
        continues from it, exactly (every step's batch and pairs derive from the seed).
    save_every : int

    Returns
    -------
    UNetBaseline
    """
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    mask = store.mask()
    shape = padded_shape(mask.shape)
    net = UNet(spatial_dims=3, in_channels=in_channels, out_channels=1, channels=channels,
               strides=(2,) * (len(channels) - 1), num_res_units=2).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    losses: list[float] = []
    seconds: list[float] = []
    if state is not None and Path(state).is_file():
        saved = torch.load(state, map_location=device, weights_only=True)
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        losses, seconds = list(saved["losses"]), list(saved["seconds"])
        torch.set_rng_state(saved["rng"])

    def save() -> None:
        if state is not None:
            with atomic_path(state) as tmp:
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "losses": losses,
                            "seconds": seconds, "rng": torch.get_rng_state()}, tmp)

    with _progress_bar(progress, steps, len(losses)) as advance:
        for step in range(len(losses), steps):
            tic = time.perf_counter()
            batch = rows[batch_indices(step, len(rows), batch_size, seed)]
            cond = image_conditions(batch, _step_generator(seed, step, stream=1))
            target = torch.from_numpy(store.read(batch)).to(device)
            pred = from_volumes(net(to_volumes(cond, mask, shape).to(device)), mask)
            loss = nn.functional.mse_loss(pred, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            seconds.append(time.perf_counter() - tic)
            advance(losses[-1])
            if (step + 1) % save_every == 0 or step + 1 == steps:
                save()
    return UNetBaseline(net.eval(), mask, shape, losses, seconds)


def mean_brain(store: CohortStore, rows: np.ndarray) -> np.ndarray:
    """Mean of the target rows (store space), the prediction of the mean-brain baseline.

    Returns
    -------
    ndarray of float32, shape (n_voxels,)
    """
    total = np.zeros(store.data.shape[1], dtype=np.float64)
    for a in range(0, len(rows), 64):
        total += store.read(rows[a:a + 64]).sum(axis=0)
    return (total / len(rows)).astype(np.float32)

