"""GenBrain checkpoints: a folder with ``model.safetensors``, ``config.json`` and a model card.

Loading never runs code: weights are safetensors, everything else is JSON. ``config.json`` holds
the architecture, the diffusion schedule, the voxel mask reference (grid + sha256 of the mask),
the conditions with their encodings, the modality names and their normalisation, the preset, the
training provenance and the sha256 of the weights file. A checkpoint whose weights do not hash to
the recorded value (or to an optional ``SHA256SUMS``), whose grid or mask differs from this
installation's template, or whose tensors do not fit the architecture is refused with a
:class:`CheckpointError`. Checkpoints from elsewhere (URLs, archives) are fetched and cached by
:mod:`bids_genbrain.model.fetch`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import InputError
from ..templates import TEMPLATE, brain_mask, mni_grid, template_source
from ..utils import atomic_path, atomic_write_text
from .conditions import ConditionSpec
from .diffusion import DiffusionConfig
from .dit import GenBrainDiT
from .presets import ModelConfig
from .tokens import TokenLayout, mask_sha256

FORMAT = "genbrain-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
SUMS = "SHA256SUMS"


class CheckpointError(InputError):
    """A checkpoint is missing, tampered with, or does not fit this installation."""


@dataclass
class GenBrain:
    """A model with everything needed to sample from it and to save it.

    Attributes
    ----------
    model : GenBrainDiT
    arch : ModelConfig
        Architecture (``in_channels`` includes the image conditions).
    diffusion : DiffusionConfig
    normalisation : dict
        Per modality ``{"lo", "hi", "method"}`` of the [0, 1] mapping.
    image_conditions : list of str
        Names of the extra input channels (in order), empty for plain generation.
    task : dict
        Image task the model was trained for (:class:`bids_genbrain.tasks.spec.ImageTask`
        as a dict: ``name`` enhance/synthesize, ``modalities``, ``sources``, ``target``,
        ``corruption``); empty for plain generation.
    provenance : dict
        Training record (data hash, steps, seed, versions, parent checkpoint ...).
    path : Path or None
        Folder it was loaded from.
    """

    model: GenBrainDiT
    arch: ModelConfig
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    normalisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_conditions: list[str] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def modalities(self) -> list[str]:
        """Levels of the ``modality`` condition."""
        spec = next((c for c in self.model.conditions if c.name == "modality"), None)
        return list(spec.levels) if spec else []

    @property
    def conditions(self) -> list[ConditionSpec]:
        """The model's conditions (including ``modality``)."""
        return self.model.conditions

    def config_dict(self, weights_sha256: str) -> dict[str, Any]:
        """The ``config.json`` content for weights hashing to ``weights_sha256``."""
        layout = self.model.layout
        shape, _ = mni_grid(self.arch.resolution)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "preset": self.arch.name,
            "architecture": self.arch.with_(in_channels=self.model.in_channels).to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "mask": {
                "space": TEMPLATE,
                "resolution": self.arch.resolution,
                "shape": list(shape),
                "n_voxels": layout.n_voxels,
                "sha256": layout.mask_sha256(),
                "template_source": template_source(),
            },
            "conditions": [c.to_dict() for c in self.model.conditions],
            "modalities": self.modalities,
            "image_conditions": list(self.image_conditions),
            "task": dict(self.task),
            "normalisation": self.normalisation,
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
            "provenance": self.provenance,
            "weights_sha256": weights_sha256,
        }


def build_model(arch: ModelConfig, conditions: list[ConditionSpec],
                mask: np.ndarray | None = None) -> GenBrainDiT:
    """Instantiate the network of ``arch`` on the template mask of its resolution.

    Parameters
    ----------
    arch : ModelConfig
    conditions : list of ConditionSpec
    mask : ndarray of bool, optional
        Defaults to :func:`~bids_genbrain.templates.brain_mask` at ``arch.resolution``.

    Returns
    -------
    GenBrainDiT
    """
    mask = brain_mask(arch.resolution) if mask is None else mask
    layout = TokenLayout(mask, arch.patch_size, arch.token_order, voxel_size=arch.resolution)
    return GenBrainDiT(layout, conditions, hidden_size=arch.hidden_size, depth=arch.depth,
                       num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio,
                       in_channels=arch.in_channels, out_channels=arch.out_channels)


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions recorded in provenance."""
    import monai

    return {"bids_genbrain": __version__, "torch": torch.__version__, "monai": monai.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def save_weights(state: Mapping[str, torch.Tensor], path: Path | str) -> str:
    """Write tensors as safetensors atomically; return the file's sha256."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return sha256_file(path)


def save_checkpoint(bundle: GenBrain, folder: Path | str,
                    state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint folder (weights, config, model card), each file atomically.

    Parameters
    ----------
    bundle : GenBrain
    folder : path-like
        Created if needed; existing checkpoint files are replaced.
    state : mapping, optional
        Weights to save instead of ``bundle.model.state_dict()`` (e.g. the EMA weights).

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = save_weights(state if state is not None else bundle.model.state_dict(),
                          folder / WEIGHTS)
    config = bundle.config_dict(digest)
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    atomic_write_text(folder / CARD, model_card(config))
    return folder


def read_config(folder: Path | str) -> dict[str, Any]:
    """Read and check ``config.json`` of a checkpoint folder.

    Raises
    ------
    CheckpointError
        Missing folder/files, not a GenBrain checkpoint, unsupported version.
    """
    folder = Path(folder)
    cfg_path = folder / CONFIG
    if not folder.is_dir() or not cfg_path.is_file() or not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: not a GenBrain checkpoint (needs {CONFIG} and {WEIGHTS})")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a GenBrain checkpoint config")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: checkpoint format {config.get('format_version')} is "
                              f"not supported (this version reads {FORMAT_VERSION})")
    return config


def _check_sums(folder: Path) -> None:
    """Verify the files listed in the folder's SHA256SUMS (``sha256sum`` format), if any."""
    sums = folder / SUMS
    if not sums.is_file():
        return
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        path = folder / name
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{sums}: line {number} is not '<sha256>  <file>'")
        if not path.is_file():
            raise CheckpointError(f"{sums}: lists {name}, which the checkpoint lacks; copy it "
                                  "again")
        if sha256_file(path) != digest.lower():
            raise CheckpointError(f"{path}: sha256 differs from {SUMS}; the checkpoint was "
                                  "modified or partly copied; copy it again")


def verify_checkpoint(folder: Path | str) -> dict[str, Any]:
    """Check a checkpoint folder without building its network.

    Checks that the weights hash to ``config.json``'s ``weights_sha256``, that files listed
    in an optional ``SHA256SUMS`` match, that the grid is this installation's
    MNI152NLin6Asym grid at the checkpoint's resolution, and that the brain mask is the
    template mask.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    dict
        The checked ``config.json``.

    Raises
    ------
    CheckpointError
        The first mismatch, in one line naming the file and the fix.
    """
    folder = Path(folder)
    config = read_config(folder)
    digest = sha256_file(folder / WEIGHTS)
    if digest != config.get("weights_sha256"):
        raise CheckpointError(
            f"{folder / WEIGHTS}: sha256 {digest[:12]}... differs from config.json's "
            f"{str(config.get('weights_sha256'))[:12]}...; the checkpoint was modified or "
            "partly written; copy it again"
        )
    _check_sums(folder)
    try:
        resolution = float(config["architecture"]["resolution"])
        mask_ref = dict(config["mask"])
        shape = tuple(int(n) for n in mask_ref["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG}: malformed ({exc})") from None
    want, _ = mni_grid(resolution)
    if mask_ref.get("space") != TEMPLATE or shape != tuple(want):
        raise CheckpointError(
            f"{folder}: trained on grid {mask_ref.get('space')} {shape} at {resolution:g} mm, "
            f"not this installation's {TEMPLATE} {tuple(want)}; use a checkpoint of the "
            f"{TEMPLATE} grid"
        )
    mask = brain_mask(resolution)
    if mask_sha256(mask) != mask_ref.get("sha256"):
        raise CheckpointError(
            f"{folder}: trained on a different brain mask ({mask_ref.get('template_source')}, "
            f"{mask_ref.get('n_voxels')} voxels at {resolution:g} mm) than this "
            f"installation's ({template_source()}, {int(mask.sum())} voxels); use the same "
            "templates (GENBRAIN_TEMPLATES) as for training"
        )
    return config


def load_checkpoint(folder: Path | str, device: str | torch.device = "cpu") -> GenBrain:
    """Load a checkpoint folder, refusing anything that does not match.

    Parameters
    ----------
    folder : path-like
    device : str or torch.device

    Returns
    -------
    GenBrain
        Model in eval mode on ``device``.

    Raises
    ------
    CheckpointError
        See :func:`verify_checkpoint`; or tensors that do not fit the architecture.
    """
    folder = Path(folder)
    config = verify_checkpoint(folder)
    try:
        arch = ModelConfig.from_dict(config["architecture"])
        conditions = [ConditionSpec.from_dict(c) for c in config["conditions"]]
        diffusion = DiffusionConfig(**config["diffusion"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG}: malformed ({exc})") from None
    model = build_model(arch, conditions, brain_mask(arch.resolution))
    try:
        state = load_file(str(folder / WEIGHTS))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{folder / WEIGHTS}: does not fit the architecture in "
                              f"config.json ({first})") from None
    return GenBrain(model.to(device).eval(), arch, diffusion,
                    normalisation=dict(config.get("normalisation", {})),
                    image_conditions=list(config.get("image_conditions", [])),
                    task=dict(config.get("task") or {}),
                    provenance=dict(config.get("provenance", {})), path=folder)


def _task_line(task: Mapping[str, Any]) -> str:
    if task.get("name") == "enhance":
        return (f"Enhancement of {', '.join(task['modalities'])}: trained on pairs of a clean "
                "image and a copy corrupted afresh at every step (k-space motion, Gaussian/"
                f"Rician noise; parameters: {task.get('corruption')}); conditioned on the "
                "modality index and the corrupted image.")
    return (f"Modality synthesis {' + '.join(task['sources'])} -> {task['target']}: trained "
            "on participants with every source and the target; conditioned on the modality "
            "index and the source images.")


def _use_line(task: Mapping[str, Any]) -> str:
    if task.get("name") == "enhance":
        return "bids_genbrain BIDS_DIR OUTPUT_DIR participant --model THIS_FOLDER --enhance"
    if task.get("name") == "synthesize":
        return (f"bids_genbrain BIDS_DIR OUTPUT_DIR participant --model THIS_FOLDER --impute "
                f"{task['target']}")
    return "genbrain sample THIS_FOLDER OUT --n 10 --age 70 --sex F --steps 50 --cfg 1.2"


def now_iso() -> str:
    """UTC timestamp for provenance."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def model_card(config: Mapping[str, Any]) -> str:
    """A Markdown model card generated from ``config.json``.

    Parameters
    ----------
    config : mapping
        Content of ``config.json``.

    Returns
    -------
    str
    """
    arch, mask, prov = config["architecture"], config["mask"], config.get("provenance", {})
    lines = [
        f"# GenBrain checkpoint ({config['preset']})",
        "",
        "A denoising diffusion transformer on registered brain voxels (GenBrain), trained with "
        "bids_genbrain. Weights: `model.safetensors` (no pickle); configuration: `config.json`.",
        "",
        "## Architecture",
        f"- {config['n_parameters'] / 1e6:.2f}M parameters: depth {arch['depth']}, hidden "
        f"{arch['hidden_size']}, {arch['num_heads']} heads, patch {arch['patch_size']} voxels "
        f"({arch['token_order']} order), {arch['in_channels']} input channel(s)",
        f"- Grid: {mask['space']} {mask['resolution']:g} mm {tuple(mask['shape'])}, brain mask "
        f"of {mask['n_voxels']} voxels (sha256 `{mask['sha256'][:16]}...`, templates: "
        f"{mask['template_source']})",
        f"- Diffusion: DDPM, {config['diffusion']['num_train_timesteps']} steps, "
        f"{config['diffusion']['schedule']} betas, "
        f"{config['diffusion'].get('prediction_type', 'epsilon')} prediction; sample with DDIM",
        "",
        "## Conditions",
    ]
    for c in config["conditions"]:
        if c["kind"] == "categorical":
            desc = f"categorical, levels {', '.join(c['levels'])}"
        else:
            desc = f"continuous, standardised with mean {c['mean']:.4g} and sd {c['std']:.4g}"
        lines.append(f"- `{c['name']}`: {desc}; CFG dropout {c['dropout']:g}")
    if config.get("image_conditions"):
        names = ", ".join(config["image_conditions"])
        lines.append(f"- image conditions (input channels): {names}")
    task = config.get("task") or {}
    if task:
        lines += ["", "## Task", _task_line(task)]
    lines += ["", "## Modalities and intensity mapping"]
    for m in config["modalities"]:
        n = config["normalisation"].get(m, {})
        lines.append(f"- `{m}`: stored = (value - {n.get('lo', 0):.4g}) / "
                     f"({n.get('hi', 1):.4g} - {n.get('lo', 0):.4g}), clipped to [0, 1] "
                     f"({n.get('method', 'unknown')})")
    lines += ["", "## Training"]
    for key in ("steps", "batch_size", "world_size", "seed", "data_sha256", "n_images",
                "created", "parent"):
        if key in prov:
            lines.append(f"- {key}: {prov[key]}")
    if "versions" in prov:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()))
    lines += ["", "## Use", "```", _use_line(task), "```"]
    lines += [
        "",
        "## Limitations",
        "Samples reflect the training cohort only (its scanners, ages, populations). Check "
        "memorisation (correlation of samples with training images) before sharing samples of "
        "a small cohort. Weights sha256: `" + config["weights_sha256"] + "`.",
        "",
    ]
    return "\n".join(lines)
