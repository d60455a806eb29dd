"""Sampling a checkpoint into MNI-space images, and synthetic cohorts as BIDS-Derivatives.

:func:`sample` streams one NIfTI image per row of a conditions table (in original units, on
the model's MNI grid); :func:`write_synthetic_dataset` writes them as a BIDS-Derivatives dataset
(``sub-synth0001`` ...) that uses the same file names as real participant-level outputs, so
every reader of derivatives (the cohort builder, BWAS) reads synthetic cohorts unchanged.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd
import torch

from ..cohort import denormalise
from ..derivatives import (TEMPLATE, derivative_path, masked_to_image, mni_entities,
                           sidecar_path, write_dataset_description, write_image)
from ..errors import InputError
from ..utils import atomic_write_text
from .checkpoint import GenBrain, load_checkpoint, save_weights
from .conditions import encode_table
from .diffusion import sample_seed, sample_stream
from .presets import GUIDANCE_SCALE


def conditions_table(bundle: GenBrain, n: int, values: Mapping[str, Any] | None = None,
                     modality: str | None = None) -> pd.DataFrame:
    """``n`` rows with the same conditions.

    Parameters
    ----------
    bundle : GenBrain
    n : int
        Rows.
    values : mapping, optional
        Condition name -> value; conditions not given are null (unconditional).
    modality : str, optional
        Defaults to the model's only modality (required when it has several).

    Returns
    -------
    pandas.DataFrame
        Columns: every given condition and ``modality``.

    Raises
    ------
    ValueError
        Unknown condition name, or no modality chosen for a multi-modality model.
    """
    values = dict(values or {})
    known = {c.name for c in bundle.conditions} - {"modality"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"the model has no condition {unknown}; it knows {sorted(known)}")
    if modality is None:
        if len(bundle.modalities) != 1:
            raise ValueError(f"choose a modality among {bundle.modalities}")
        modality = bundle.modalities[0]
    table = pd.DataFrame({k: [v] * n for k, v in values.items()}, index=range(n))
    table["modality"] = modality
    return table


def sample(
    bundle: GenBrain | Path | str,
    table: pd.DataFrame,
    seed: int,
    *,
    steps: int = 50,
    cfg_scale: float = GUIDANCE_SCALE,
    average: int = 1,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
    image_cond: np.ndarray | None = None,
    skip: Collection[int] = (),
) -> Iterator[tuple[int, nb.Nifti1Image]]:
    """Stream one generated image per row of ``table``.

    Parameters
    ----------
    bundle : GenBrain or path-like
        A loaded model or a checkpoint folder.
    table : pandas.DataFrame
        Conditions per image (raw values: ``age`` 70.0, ``sex`` "F" ...; missing = null) and
        a ``modality`` column (optional for single-modality models).
    seed : int
        Run seed (image ``i``, draw ``j`` starts from noise seeded by
        :func:`~bids_genbrain.model.diffusion.sample_seed`).
    steps, cfg_scale, average, batch_size
        DDIM steps, guidance scale, draws averaged per image, draws per forward batch.
    device : str or torch.device
    progress : bool
        Show a progress bar.
    image_cond : ndarray, shape (len(table), C, n_voxels), optional
        Image conditions in store space [0, 1] (mask order), for models with image-condition
        channels (enhancement, cross-modality synthesis).

    skip : collection of int
        Rows not to generate (see :func:`~bids_genbrain.model.diffusion.sample_stream`).

    Yields
    ------
    index : int
        Position in ``table``.
    image : nibabel.Nifti1Image
        float32 on the model's MNI grid, in the modality's original units; zero outside the
        brain mask (:func:`bids_genbrain.derivatives.masked_to_image`).

    Raises
    ------
    ValueError
        Unknown modality or condition level.
    """
    if not isinstance(bundle, GenBrain):
        bundle = load_checkpoint(bundle, device)
    bundle.model.to(device).eval()
    table = table.reset_index(drop=True).copy()
    if "modality" not in table.columns:
        table["modality"] = conditions_table(bundle, 1)["modality"].iloc[0]
    bad = sorted(set(table["modality"]) - set(bundle.modalities))
    if bad:
        raise ValueError(f"modality {bad} unknown to the model; it has {bundle.modalities}")
    cond = encode_table(bundle.conditions, table)
    mask = bundle.model.layout.mask
    if (bundle.model.in_channels > 1) != (image_cond is not None):
        raise ValueError(f"the model takes {bundle.model.in_channels - 1} image condition(s) "
                         f"{bundle.image_conditions}; pass exactly those")
    ic = None if image_cond is None else torch.as_tensor(image_cond, dtype=torch.float32)
    stream = sample_stream(bundle.model, bundle.diffusion, cond, seed, steps=steps,
                           cfg_scale=cfg_scale, average=average, batch_size=batch_size,
                           image_cond=ic, skip=skip)
    total = len(table) - len(set(skip))
    with _progress(progress, total) as advance:
        for i, flat in stream:
            norm = bundle.normalisation.get(table["modality"].iloc[i], {"lo": 0.0, "hi": 1.0})
            advance()
            yield i, masked_to_image(denormalise(flat.numpy(), norm), mask,
                                     bundle.arch.resolution)


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """Yield ``advance()`` of a rich progress bar, or a no-op."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task("sampling", total=total)
        yield lambda: bar.update(task, advance=1)


def synthetic_path(root: Path | str, index: int, modality_entities: Mapping[str, Any],
                   resolution: float) -> Path:
    """Where image ``index`` (0-based) goes: ``sub-synth<index+1:04d>``, the real file name.

    Parameters
    ----------
    root : path-like
        Synthetic dataset root.
    index : int
    modality_entities : mapping
        ``suffix``/``desc``/``label`` of the modality's files (recorded in the checkpoint).
    resolution : float

    Returns
    -------
    pathlib.Path
    """
    ents = mni_entities(resolution, sub=f"synth{index + 1:04d}",
                        label=modality_entities.get("label"), desc=modality_entities.get("desc"))
    return derivative_path(root, ents, modality_entities["suffix"])


def write_synthetic_dataset(
    bundle: GenBrain | Path | str,
    table: pd.DataFrame,
    out: Path | str,
    seed: int,
    *,
    steps: int = 50,
    cfg_scale: float = GUIDANCE_SCALE,
    average: int = 1,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    require_existing: bool = False,
) -> pd.DataFrame:
    """Generate a synthetic cohort as a BIDS-Derivatives dataset.

    Parameters
    ----------
    bundle, table, seed, steps, cfg_scale, average, batch_size, device, progress
        As in :func:`sample`.
    out : path-like
        Dataset root: ``dataset_description.json``, ``participants.tsv`` (``participant_id``
        ``sub-synth0001`` ..., the conditions used and ``seeds``: the noise seed of each
        averaged draw, comma-separated) with its ``participants.json`` column descriptions,
        and one image (+ JSON sidecar with seeds, model sha256 and conditions) per row.
    require_existing : bool
        Sample nothing: every image must have been written by an earlier run with the same
        settings (e.g. to rebuild reports), else raise.

    Returns
    -------
    pandas.DataFrame
        The participants table with a ``path`` column.

    Raises
    ------
    InputError
        ``require_existing`` and some image is missing or was sampled with other settings.
    """
    if not isinstance(bundle, GenBrain):
        bundle = load_checkpoint(bundle, device)
    out = Path(out)
    table = table.reset_index(drop=True).copy()
    if "modality" not in table.columns:
        table["modality"] = conditions_table(bundle, 1)["modality"].iloc[0]
    model_sha = _model_sha(bundle)
    write_dataset_description(
        out, name="GenBrain synthetic cohort",
        source_datasets=[{"URL": f"file://{bundle.path.resolve()}"}] if bundle.path else None,
        description=f"Images sampled from a GenBrain checkpoint (weights sha256 {model_sha})",
    )
    ids = [f"sub-synth{i + 1:04d}" for i in range(len(table))]
    paths, sidecars = [], []
    for i in range(len(table)):
        modality = table["modality"].iloc[i]
        ents = bundle.normalisation.get(modality, {}).get("entities") or {"suffix": modality}
        paths.append(synthetic_path(out, i, ents, bundle.arch.resolution))
        sidecars.append({
            "Synthetic": True,
            "Modality": modality,
            "Conditions": {k: _jsonable(v) for k, v in table.iloc[i].items()},
            "RunSeed": seed,
            "Seeds": [sample_seed(seed, i, j) for j in range(average)],
            "Average": average,
            "DDIMSteps": steps,
            "CFGScale": cfg_scale,
            "ModelSHA256": model_sha,
            "Model": str(bundle.path) if bundle.path else None,
            "SpatialReference": TEMPLATE,
        })
    # resume: an image whose file and identical sidecar exist was written by an earlier run
    done = {i for i, (path, meta) in enumerate(zip(paths, sidecars, strict=True))
            if path.is_file() and _same_sidecar(sidecar_path(path), meta)}
    if require_existing and len(done) < len(paths):
        raise InputError(f"{out}: {len(paths) - len(done)} of {len(paths)} synthetic images "
                         "are missing or were sampled with other settings; run the sampling "
                         "without --reports-only first")
    for i, img in sample(bundle, table, seed, steps=steps, cfg_scale=cfg_scale, average=average,
                         batch_size=batch_size, device=device, progress=progress, skip=done):
        write_image(img, paths[i], sidecars[i])
    participants = table.copy()
    participants.insert(0, "participant_id", ids)
    participants["seeds"] = [",".join(map(str, meta["Seeds"])) for meta in sidecars]
    atomic_write_text(out / "participants.tsv",
                      participants.to_csv(sep="\t", index=False, na_rep="n/a"))
    atomic_write_text(out / "participants.json",
                      json.dumps(_participants_sidecar(bundle, participants, seed, average),
                                 indent=2) + "\n")
    participants["path"] = [str(p.relative_to(out)) for p in paths]
    return participants


def _participants_sidecar(bundle: GenBrain, participants: pd.DataFrame, seed: int,
                          average: int) -> dict[str, Any]:
    """BIDS column descriptions of a synthetic cohort's participants.tsv."""
    specs = {c.name: c for c in bundle.conditions}
    columns: dict[str, Any] = {
        "participant_id": {"Description": "Synthetic participant (one generated image each)"},
    }
    for name in participants.columns:
        if name in ("participant_id", "seeds"):
            continue
        spec = specs.get(name)
        entry: dict[str, Any] = {"Description": "Modality the image was generated as"
                                 if name == "modality" else
                                 f"Value of the condition {name!r} the image was generated under"}
        if spec is not None and spec.kind == "categorical":
            entry["Levels"] = {str(level): str(level) for level in spec.levels}
        columns[name] = entry
    columns["seeds"] = {"Description": (
        f"Seeds of the initial noise of the {average} DDIM draw(s) averaged into the image, "
        f"comma-separated; derived from the run seed {seed} and the row, so one image can be "
        "regenerated alone (bids_genbrain.model.diffusion.sample_seed)")}
    return columns


def _same_sidecar(path: Path, meta: Mapping[str, Any]) -> bool:
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(
            json.dumps(meta, default=str))
    except json.JSONDecodeError:
        return False


def _model_sha(bundle: GenBrain) -> str:
    if bundle.path is not None and (bundle.path / "config.json").is_file():
        return json.loads((bundle.path / "config.json").read_text())["weights_sha256"]
    with tempfile.TemporaryDirectory() as tmp:
        return save_weights(bundle.model.state_dict(), Path(tmp) / "w.safetensors")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
