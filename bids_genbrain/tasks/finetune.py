"""Train a model for an image task: derivatives -> cohort store -> pairs -> checkpoint.

The pairs come from MNI-space derivatives (a site's participant-level outputs, fMRIPrep's, or a
population cohort), made afresh at every step (:mod:`.pairs`). A ``--model`` checkpoint is
fine-tuned: its patch embedding is widened by the image-condition channels with
:meth:`~bids_genbrain.model.dit.GenBrainDiT.add_input_channels` (zero-initialised, so step 0 is
the pretrained unconditional model), new modality levels start from an existing one. Without
one, a ``preset`` model is trained from scratch. The checkpoint records the task
(``config.json``'s ``task`` and the model card).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..cohort import CohortStore, build_cohort
from ..model.checkpoint import GenBrain, read_config
from ..model.presets import ModelConfig
from ..model.train import TrainConfig, fit
from .pairs import training_pairs
from .spec import ImageTask, TaskError

LOGGER = logging.getLogger(__name__)


def finetune_task(
    task: ImageTask,
    derivatives: Sequence[Path | str],
    out: Path | str,
    config: TrainConfig,
    *,
    arch: ModelConfig | None = None,
    init: Path | str | None = None,
    resolution: float | None = None,
    subjects: Sequence[str] | None = None,
    store_path: Path | str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> GenBrain:
    """Fine-tune a checkpoint (``init``) or train a preset (``arch``) for an image task.

    Parameters
    ----------
    task : ImageTask
    derivatives : sequence of path-like
        Derivatives folders with the MNI-space images of :attr:`ImageTask.store_modalities`.
    out : path-like
        Checkpoint folder to write.
    config : TrainConfig
    arch : ModelConfig, optional
        Architecture of a model trained from scratch (required without ``init``).
    init : path-like, optional
        Checkpoint to fine-tune.
    resolution : float, optional
        Grid (mm); default the checkpoint's, else ``arch.resolution``.
    subjects : sequence of str, optional
        Train on these participants only (e.g. leave a test split out).
    store_path : path-like, optional
        Cohort store folder (default ``.<out name>.cohort`` beside ``out``).
    resume : bool
        Continue ``out``'s training state when present.
    progress : bool
        Progress bars.

    Returns
    -------
    GenBrain
        The trained model (EMA weights), saved in ``out``.

    Raises
    ------
    TaskError, CohortError, CheckpointError
        Bad task, no images, or a checkpoint that cannot be fine-tuned for the task.
    """
    out = Path(out)
    if init is not None:
        cfg = read_config(init)
        have = list(cfg.get("image_conditions") or [])
        if have and have != task.image_conditions:
            raise TaskError(f"{init}: a model for another image task (image conditions {have},"
                            f" this task needs {task.image_conditions}); fine-tune a generative"
                            " (pretrained) checkpoint or one of the same task")
        grid = float(cfg["architecture"]["resolution"])
        if resolution is not None and abs(float(resolution) - grid) > 1e-6:
            raise TaskError(f"{init} works on the {grid:g} mm grid, not {float(resolution):g}"
                            " mm; drop --resolution or use another checkpoint")
        resolution = grid
    elif arch is None:
        raise TaskError("give a checkpoint to fine-tune (--model) or a preset to train from "
                        "scratch")
    else:
        resolution = float(resolution or arch.resolution)
        arch = arch.with_(resolution=resolution)
    store_path = Path(store_path) if store_path else out.parent / f".{out.name}.cohort"
    selected = None if subjects is None else {
        "sub-" + str(s).removeprefix("sub-") for s in subjects}
    build_cohort(derivatives, store_path, modalities=task.store_modalities,
                 resolution=resolution, participant_ids=selected, progress=progress,
                 reuse=True)
    store = CohortStore(store_path)
    rows, builder = training_pairs(store, task)
    LOGGER.info("%s: %d training target(s) from %d image(s); %s", task.describe(), len(rows),
                len(store), "fine-tuning " + str(init) if init else "from scratch")
    init_modality = None
    if init is not None:
        known = read_config(init).get("modalities", [])
        init_modality = next((m for m in task.store_modalities if m in known),
                             known[0] if known else None)
    config = replace(config, progress=progress and config.progress)
    return fit(store, out, config, arch=arch, init=init, init_modality=init_modality,
               resume=resume, rows=rows, image_conditions=builder,
               image_condition_names=task.image_conditions, task=task.to_dict())
