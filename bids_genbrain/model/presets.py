"""Named model configurations and their parameter counts.

``genbrain-l`` is the paper's model (2 mm, patch 256, depth 24, hidden 1024, 16 heads);
``genbrain-b`` halves depth and narrows it; ``small``, ``tiny``, ``micro`` and ``nano`` run on
CPUs (``tiny`` trains usefully on two cores in minutes on the 4 mm grid, and is what the tests
use; ``micro``, half of ``tiny``'s depth with twice its patch, is the model that met the
conditioning target on the 4 mm grid in about an hour on one thread, docs/model.md;
``nano``, the benchmarks' 64-wide depth-2 model, learns a planted diagnosis on the 8 mm grid
in a few thousand steps of ~20 ms, which is what ``genbrain demo`` needs).
Parameter counts are computed from the architecture without building it (no torch import),
so ``genbrain pretrain --help`` can print them; a test checks them against the real module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`~bids_genbrain.model.dit.GenBrainDiT`.

    Parameters
    ----------
    name : str
        Preset name.
    hidden_size, depth, num_heads : int
        Transformer width, blocks, heads.
    patch_size : int
        Voxels per token.
    resolution : float
        MNI grid spacing in mm the preset is meant for.
    mlp_ratio : float
        MLP width / hidden size.
    token_order : {"morton", "raster"}
        Voxel order inside tokens.
    in_channels, out_channels : int
        Input channels (1 + image conditions) and output channels.
    """

    name: str
    hidden_size: int
    depth: int
    num_heads: int
    patch_size: int
    resolution: float
    mlp_ratio: float = 4.0
    token_order: str = "morton"
    in_channels: int = 1
    out_channels: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def with_(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (e.g. ``resolution=4.0``)."""
        return replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    "genbrain-l": ModelConfig("genbrain-l", hidden_size=1024, depth=24, num_heads=16,
                              patch_size=256, resolution=2.0),
    "genbrain-b": ModelConfig("genbrain-b", hidden_size=768, depth=12, num_heads=12,
                              patch_size=256, resolution=2.0),
    "small": ModelConfig("small", hidden_size=384, depth=6, num_heads=6, patch_size=128,
                         resolution=3.0),
    "tiny": ModelConfig("tiny", hidden_size=128, depth=4, num_heads=4, patch_size=64,
                        resolution=4.0),
    "micro": ModelConfig("micro", hidden_size=128, depth=2, num_heads=4, patch_size=128,
                         resolution=4.0),
    "nano": ModelConfig("nano", hidden_size=64, depth=2, num_heads=4, patch_size=32,
                        resolution=8.0),
}


GUIDANCE_SCALE = 4.0
"""Default classifier-free guidance scale for sampling synthetic cohorts. Measured
(docs/model.md, "Why synthetic d is smaller"): on a simulated site of 40 (8 mm) the model
reproduces a quarter of the real diagnosis mean difference at scale 1 and 96-98 % at scale 4,
with the per-voxel SD unchanged (0.98-1.12x real), and the synthetic-vs-real d-map r rises
with the scale in every run; DiT's 1.2 left a learned diagnosis effect mostly unexpressed."""

COHORT_AVERAGE = 1
"""Draws averaged per image of a synthetic cohort (the group level's, ``genbrain augment``'s):
single draws, since averaging K draws shrinks the per-voxel SD and inflates effects
(docs/model.md)."""
TASK_AVERAGE = 5
"""Draws averaged per enhanced or imputed image (the paper's)."""

PREDICTIONS = ("epsilon", "v_prediction", "sample")
"""What the network predicts (MONAI's ``prediction_type``): the noise (DDPM, the paper), the
velocity ``sqrt(a) eps - sqrt(1 - a) x0`` or the clean image."""

PREDICTION_TYPE = "epsilon"
"""Default training target of a new model (the paper's). ``v_prediction`` learned a planted
diagnosis better on CPU (docs/model.md, "Conditioning that learns": synthetic vs real d-map r
0.26 vs 0.20 at CFG 1, 0.33 vs 0.26 at CFG 2 after 1,500 steps, one seed); ``sample`` matched
the site's own map in a quarter of v_prediction's steps on the 4 mm grid, by staying close to
its participants (docs/model.md, "On the 4 mm grid"). Neither is the default on these one- and
two-seed comparisons; ``--prediction-type`` selects them."""

PAPER_LR = 1e-4
"""The paper's (and DiT's) learning rate: the paper-sized presets' and the default of a
checkpoint whose preset is none of :data:`PRESETS`."""

FROM_SCRATCH_LR = {"genbrain-l": PAPER_LR, "genbrain-b": PAPER_LR, "small": 1e-3, "tiny": 1e-3,
                   "micro": 1e-3, "nano": 1e-3}
"""Learning rate to train each preset from scratch. The paper-sized models use DiT's 1e-4;
the CPU presets need more: on a simulated site of 40 (4 mm), ``tiny`` at 1e-4 still samples
noise after 2,000 steps (median largest r of a sample with any training image 0.09), at 1e-3
its samples are brain-like after 1,000 (0.92)."""

FINE_TUNING_LR = dict(FROM_SCRATCH_LR)
"""Learning rate to fine-tune a checkpoint of each preset (the checkpoint's preset, not the
command's): each preset's from-scratch rate, so the paper's 1e-4 for the paper-sized models
and 1e-3 for the CPU presets. Measured (docs/model.md, "Fine-tuning"): a ``nano`` checkpoint
pretrained on simulated controls, fine-tuned on a site of 40 with a new diagnosis condition (8 mm,
6,000 steps, CFG 2, new table at 30x the network's rate), reaches synthetic vs real d-map r
0.34 at 1e-4, 0.45 at 3e-4 and 0.60 at 1e-3 (0.62 with the table at 100x, the default
``TrainConfig.extension_lr_scale``; from scratch at 1e-3: 0.61 at CFG 4)."""


def default_lr(preset: str, *, fine_tuning: bool) -> float:
    """Default AdamW learning rate of ``preset``: :data:`FINE_TUNING_LR` or
    :data:`FROM_SCRATCH_LR`, :data:`PAPER_LR` for an unknown preset."""
    return (FINE_TUNING_LR if fine_tuning else FROM_SCRATCH_LR).get(preset, PAPER_LR)


def get_preset(name: str) -> ModelConfig:
    """The named configuration.

    Raises
    ------
    KeyError
        With the list of known presets.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def parameter_count(config: ModelConfig, *, n_continuous: int = 1,
                    categorical_levels: tuple[int, ...] = (2, 1)) -> int:
    """Trainable parameters of the model, computed from the architecture.

    Parameters
    ----------
    config : ModelConfig
    n_continuous : int
        Continuous conditions (default: age).
    categorical_levels : tuple of int
        Levels of each categorical condition (default: sex with 2, one modality).

    Returns
    -------
    int
    """
    h, p = config.hidden_size, config.patch_size
    m = int(h * config.mlp_ratio)
    patch_embed = config.in_channels * p * h + h
    t_embed = 256 * h + h + h * h + h
    conditions = n_continuous * (2 * h + h * h + h + h) + sum((n + 1) * h
                                                              for n in categorical_levels)
    block = (3 * h * h + 3 * h) + (h * h + h) + (h * m + m + m * h + h) + (6 * h * h + 6 * h)
    final = (2 * h * h + 2 * h) + (h * p * config.out_channels + p * config.out_channels)
    return patch_embed + t_embed + conditions + config.depth * block + final


def describe_presets() -> str:
    """One line per preset with its size, for ``--help`` texts."""
    lines = []
    for name, cfg in PRESETS.items():
        n = parameter_count(cfg)
        lines.append(f"{name}: {n / 1e6:.1f}M parameters (depth {cfg.depth}, hidden "
                     f"{cfg.hidden_size}, {cfg.num_heads} heads, patch {cfg.patch_size}, "
                     f"{cfg.resolution:g} mm)")
    return "\n".join(lines)
