"""Regression of a continuous score from images with a MONAI 3D ResNet, against the ratio.

The optional part of ``genbrain augment`` (``--regress age``): on the same splits as the
classifier, a ResNet-10 (MONAI's :class:`~monai.networks.nets.ResNet`, basic blocks, widths
:data:`WIDTHS`, one output) regresses the score from the whole image (cropped to the brain
mask's bounding box), trained on the real training participants plus the first
``round(r * n_train)`` synthetic images at each ratio ``r``. The synthetic images carry the
score they were generated under, so the score must be one of the generator's conditions.
Synthetic values are brought into the real store's units first (each store has its own
[0, 1] normalisation). Training: AdamW, the target standardised on the training set, the
epoch with the lowest validation MAE kept; test MAE within the site and on every other site,
with a percentile bootstrap 95 % CI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from .augment import N_BOOTSTRAP

WIDTHS = (16, 32, 64, 128)
"""Channels of the four ResNet stages (a CPU-sized ResNet-10)."""
BATCH = 8
LEARNING_RATE = 1e-3

REGRESSION_COLUMNS = {
    "ratio": "Synthetic:real ratio of the training set",
    "n_real_train": "Real training participants",
    "n_synthetic": "Synthetic images added to the training set",
    "test_set": "Participants the network was tested on",
    "n": "Participants in the test set",
    "mae": "Mean absolute error of the predicted score (units of the score)",
    "mae_ci_low": "2.5th percentile of the MAE over bootstrap resamples",
    "mae_ci_high": "97.5th percentile of the MAE over bootstrap resamples",
    "validation_mae": "Validation MAE of the kept epoch",
    "best_epoch": "Epoch kept (lowest validation MAE)",
}


def bootstrap_mae(target: np.ndarray, prediction: np.ndarray, *, n_boot: int = N_BOOTSTRAP,
                  seed: int = 0) -> dict[str, float]:
    """MAE with a percentile bootstrap 95 % CI over the test participants.

    Returns
    -------
    dict
        ``n``, ``mae``, ``mae_ci_low``, ``mae_ci_high``.
    """
    error = np.abs(np.asarray(prediction, float) - np.asarray(target, float))
    idx = np.random.default_rng(seed).integers(0, error.size, size=(n_boot, error.size))
    low, high = np.percentile(error[idx].mean(axis=1), [2.5, 97.5])
    return {"n": int(error.size), "mae": float(error.mean()), "mae_ci_low": float(low),
            "mae_ci_high": float(high)}


def _network() -> torch.nn.Module:
    from monai.networks.nets import ResNet

    return ResNet("basic", [1, 1, 1, 1], list(WIDTHS), spatial_dims=3, n_input_channels=1,
                  num_classes=1)


class _Volumes:
    """Masked store rows as cropped 3D volumes in the real store's units."""

    def __init__(self, mask: np.ndarray) -> None:
        where = np.argwhere(mask)
        lo, hi = where.min(axis=0), where.max(axis=0) + 1
        self.box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        self.mask = mask

    def __call__(self, store, rows: np.ndarray, norm: dict | None = None) -> torch.Tensor:
        values = store.read(rows).astype(np.float32)
        if norm is not None:  # store units -> the real store's units
            own = store.normalisation[store.modalities[0]]
            raw = own["lo"] + values * (own["hi"] - own["lo"])
            values = (raw - norm["lo"]) / (norm["hi"] - norm["lo"])
        volumes = np.zeros((len(rows), *self.mask.shape), dtype=np.float32)
        volumes[:, self.mask] = values
        return torch.from_numpy(np.ascontiguousarray(volumes[(slice(None), *self.box)]))[:, None]


def _train(x: torch.Tensor, y: np.ndarray, x_val: torch.Tensor, y_val: np.ndarray, *,
           epochs: int, seed: int, device: torch.device
           ) -> tuple[torch.nn.Module, tuple[float, float], float, int]:
    """Train a ResNet; return it, the target's (mean, sd), the best validation MAE and epoch."""
    torch.manual_seed(seed)
    net = _network().to(device)
    mean, sd = float(y.mean()), float(y.std() or 1.0)
    target = torch.as_tensor((y - mean) / sd, dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch = np.inf, None, 0
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(target), generator=gen)
        for a in range(0, len(order), BATCH):
            idx = order[a:a + BATCH]
            if len(idx) < 2:  # batch norm needs two
                continue
            loss = torch.nn.functional.l1_loss(net(x[idx].to(device))[:, 0],
                                               target[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = float(np.abs(_predict(net, x_val, device) * sd + mean - y_val).mean())
        if val < best:
            best, best_epoch = val, epoch + 1
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    return net, (mean, sd), best, best_epoch


@torch.no_grad()
def _predict(net: torch.nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    net.eval()
    return np.concatenate([net(x[a:a + BATCH].to(device))[:, 0].cpu().numpy()
                           for a in range(0, len(x), BATCH)])


def regression_curve(study, synthetic, request, ratios) -> pd.DataFrame:
    """Test MAE of a 3D ResNet regressing ``request.regress`` at every ratio.

    Parameters
    ----------
    study : bids_genbrain.evaluate.augmentation.Study
    synthetic : bids_genbrain.evaluate.augmentation.SyntheticSet
    request : bids_genbrain.evaluate.augmentation.AugmentRequest
        ``regress``, ``regress_epochs``, ``n_boot``, ``seed``, ``device``.
    ratios : sequence of float

    Returns
    -------
    pandas.DataFrame
        :data:`REGRESSION_COLUMNS`, one row per ratio and test set.

    Raises
    ------
    InputError
        The score is not a numeric condition of the generator.
    """
    from ..model.train import resolve_device

    score = request.regress
    if score not in study.conditions:
        raise InputError(f"--regress {score!r} must be one of the generator's conditions "
                         f"{study.conditions} (synthetic images need a value of it)")
    values = pd.to_numeric(study.table[score], errors="coerce")
    if values.nunique() < 3:
        raise InputError(f"--regress {score!r} is not a continuous column")
    device = resolve_device(request.device)
    volumes = _Volumes(study.store.mask())
    real_norm = study.store.normalisation[study.store.modalities[0]]

    def real_set(ids):
        ids = [i for i in ids if np.isfinite(values.loc[i])]
        return volumes(study.store, study.table.loc[ids, "row"].to_numpy()), \
            values.loc[ids].to_numpy(float)

    train_x, train_y = real_set(study.ids("train"))
    val_x, val_y = real_set(study.ids("validation"))
    tests = [(f"within-site test ({study.train_site})", *real_set(study.ids("test")))]
    for site in study.other_sites:
        tests.append((f"cross-site test ({site})",
                      *real_set(list(study.table.index[study.table["site"] == site]))))
    syn_y = pd.to_numeric(synthetic.table[score], errors="coerce").to_numpy(float)
    n_train = len(train_y)
    rows = []
    for k, ratio in enumerate(ratios):
        n_syn = int(round(ratio * n_train))
        syn_x = volumes(synthetic.store, synthetic.table["row"].to_numpy()[:n_syn], real_norm)
        x = torch.cat([train_x, syn_x]) if n_syn else train_x
        y = np.concatenate([train_y, syn_y[:n_syn]])
        net, (mean, sd), val_mae, epoch = _train(x, y, val_x, val_y,
                                                 epochs=request.regress_epochs,
                                                 seed=request.seed + k, device=device)
        for j, (name, tx, ty) in enumerate(tests):
            predicted = _predict(net, tx, device) * sd + mean
            rows.append({"ratio": ratio, "n_real_train": n_train, "n_synthetic": n_syn,
                         "test_set": name,
                         **bootstrap_mae(ty, predicted, n_boot=request.n_boot,
                                         seed=request.seed + j),
                         "validation_mae": val_mae, "best_epoch": epoch})
    return pd.DataFrame(rows)
