"""Stages 3 and 4 of the group level: train the site's model, sample the synthetic cohort."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..cohort import CohortStore
from ..config import Config
from ..model.checkpoint import GenBrain
from ..runlog import RunLog
from .plan import GroupPlan, write_split
from .site import GroupPaths, SiteCohort


@dataclass(frozen=True)
class TrainedModel:
    """The site's model.

    Attributes
    ----------
    bundle : GenBrain
        Trained model (EMA weights).
    directory : pathlib.Path
        Its checkpoint folder (``OUTPUT_DIR/group/model``).
    from_scratch : bool
        True without ``--model`` (GenBrain-st), False when a checkpoint was fine-tuned.
    """

    bundle: GenBrain
    directory: Path
    from_scratch: bool


@dataclass(frozen=True)
class SyntheticCohort:
    """The generated cohort.

    Attributes
    ----------
    directory : pathlib.Path
        Its derivatives dataset (``OUTPUT_DIR/synthetic``).
    participants : pandas.DataFrame
        ``participant_id`` (``sub-synth0001`` ...), the conditions and the seeds.
    store : CohortStore
        Its images in store space, rows in the order of ``participants``.
    """

    directory: Path
    participants: pd.DataFrame
    store: CohortStore


def train_site_model(config: Config, site: SiteCohort, plan: GroupPlan, paths: GroupPaths,
                     log: RunLog) -> TrainedModel:
    """Fine-tune ``--model`` on the training rows, or train a ``--preset`` model from scratch.

    Resumes from ``paths.model/training_state`` when the same run was interrupted (the
    training rows are part of the run's identity); with ``--reports-only``, loads the finished
    run without a step, or raises. ``group/split.tsv`` then records which participants
    trained it.

    Parameters
    ----------
    config : Config
    site : SiteCohort
    plan : GroupPlan
        ``training_rows`` are the only images the model sees.
    paths : GroupPaths
    log : RunLog
        Times the ``model`` step.

    Returns
    -------
    TrainedModel
    """
    from ..model.diffusion import DiffusionConfig
    from ..model.presets import get_preset
    from ..model.train import TrainConfig, fit

    with log.step("model"):
        train_cfg = TrainConfig(steps=config.steps, batch_size=config.batch_size,
                                lr=config.lr, seed=config.seed, device=config.device,
                                checkpoint_every=max(1, min(500, config.steps // 4)))
        if config.model is not None:
            bundle = fit(site.store, paths.model, train_cfg, init=config.model,
                         rows=plan.training_rows, require_finished=config.reports_only)
        else:
            arch = get_preset(config.preset).with_(resolution=site.resolution)
            bundle = fit(site.store, paths.model, train_cfg, arch=arch,
                         diffusion=DiffusionConfig(prediction_type=config.prediction_type),
                         rows=plan.training_rows, require_finished=config.reports_only)
    write_split(site, plan, paths.split, config.seed)
    return TrainedModel(bundle=bundle, directory=paths.model,
                        from_scratch=config.model is None)


def sample_synthetic_cohort(config: Config, site: SiteCohort, plan: GroupPlan,
                            model: TrainedModel, paths: GroupPaths,
                            log: RunLog) -> SyntheticCohort:
    """Sample one image per row of ``plan.wanted`` into ``OUTPUT_DIR/synthetic`` and a store.

    Finished images of an interrupted run are kept (see
    :func:`bids_genbrain.model.sampling.write_synthetic_dataset`).

    Parameters
    ----------
    config, site, plan, model, paths
    log : RunLog
        Times the ``synthesis`` step.

    Returns
    -------
    SyntheticCohort
    """
    from ..cohort import build_cohort
    from ..model.sampling import write_synthetic_dataset
    from ..model.train import resolve_device

    with log.step("synthesis"):
        written = write_synthetic_dataset(
            model.bundle, plan.wanted.assign(modality=config.modality), paths.synthetic,
            config.seed,
            steps=config.sampling_steps, cfg_scale=config.cfg_scale, average=config.average,
            device=resolve_device(config.device), require_existing=config.reports_only)
        participants = written.drop(columns=["path", "modality"], errors="ignore")
        store = build_cohort([paths.synthetic], paths.work / "synthetic_cohort",
                             modalities=[config.modality], participants=participants,
                             conditions=site.conditions, resolution=site.resolution,
                             n_jobs=config.nprocs)
    return SyntheticCohort(directory=paths.synthetic, participants=participants, store=store)
