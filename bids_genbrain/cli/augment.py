"""``genbrain augment``: synthetic:real augmentation curves of a classifier, within and across sites."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..evaluate import augment as aug
from ..model.presets import COHORT_AVERAGE
from .study_options import (Atlas, CfgScale, Derivatives, Device, Modality, Nprocs, Out,
                            Participants, Quiet, Resolution, SampleBatch, SamplingSteps, Seed,
                            WorkDir, _help, config_default, run_command)

PROG = "genbrain augment"


def augment(
    derivatives: Derivatives,
    out: Out,
    contrast: Annotated[str, typer.Option(
        "--contrast", help="participants.tsv column to classify (two values, e.g. "
        "diagnosis).", show_default=False)],
    train_site: Annotated[str, typer.Option(
        "--train-site", help="The site whose participants train the classifier (split 3:1:1) "
        "and the generator (its training split); every other site is a cross-site test set.",
        show_default=False)],
    participants: Participants = None,
    site_column: Annotated[str, typer.Option(
        "--site-column", help="participants.tsv column naming the site.")] = "site",
    positive: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
        "--positive", help="The positive class [default: the second value in sorted "
        "order].", show_default=False)] = None,
    modality: Modality = config_default("modality"),
    condition: Annotated[list[str], typer.Option(
        "--condition", help="Other participants.tsv columns the generator is conditioned on "
        "(repeat); the contrast is always one.")] = config_default("condition"),
    atlas: Atlas = "HarvardOxford",
    resolution: Resolution = None,
    model: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--model", help="Checkpoint to fine-tune on the training split (e.g. from genbrain "
        "pretrain); without it a --preset model is trained from scratch.",
        show_default=False)] = None,
    preset: Annotated[str, typer.Option("--preset", help=_help("preset"))] =
        config_default("preset"),
    steps: Annotated[int, typer.Option("--steps", min=1, help=_help("steps"))] =
        config_default("steps"),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help=_help("batch_size"))] =
        config_default("batch_size"),
    lr: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--lr", min=0.0, help="AdamW learning rate [default: the preset's; to fine-tune, "
        "the checkpoint's preset's].", show_default=False)] = None,
    sampling_steps: SamplingSteps = config_default("sampling_steps"),
    cfg_scale: CfgScale = config_default("cfg_scale"),
    average: Annotated[int, typer.Option("--average", min=1, help=_help("average"))] =
        COHORT_AVERAGE,
    sample_batch_size: SampleBatch = 8,
    max_ratio: Annotated[float, typer.Option(
        "--max-ratio", min=0.0, help="Largest synthetic:real ratio.")] = aug.MAX_RATIO,
    ratio_step: Annotated[float, typer.Option(
        "--ratio-step", min=0.001, help="Step between ratios.")] = aug.RATIO_STEP,
    draws: Annotated[int, typer.Option(
        "--draws", min=1, help="Random LightGBM hyper-parameter draws per ratio.")] =
        aug.N_DRAWS,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", min=10, help="Bootstrap resamples of each test set.")] = aug.N_BOOTSTRAP,
    max_trees: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--max-trees", min=1, help="Cap on the number of trees drawn (quick runs) [default: "
        "the range's 500].", show_default=False)] = None,
    regress: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--regress", help="Also regress this continuous participants.tsv column (e.g. age) "
        "from the images with a MONAI 3D ResNet: MAE against the ratio.",
        show_default=False)] = None,
    regress_ratio_step: Annotated[float, typer.Option(
        "--regress-ratio-step", min=0.001, help="Step between the ratios of the ResNet "
        "(each trains a network).")] = 0.5,
    regress_epochs: Annotated[int, typer.Option(
        "--regress-epochs", min=1, help="ResNet training epochs per ratio (the epoch with "
        "the lowest validation MAE is kept).")] = 30,
    seed: Seed = config_default("seed"),
    device: Device = config_default("device"),
    work_dir: WorkDir = None,
    nprocs: Nprocs = 1,
    quiet: Quiet = False,
) -> None:
    """Does adding synthetic images to a small site's training set help a classifier, within
    the site and at other sites? Fine-tunes the generator on the site's training split, adds
    synthetic images at synthetic:real ratios 0..3, trains LightGBM on regional volumes, and
    reports accuracy and AUROC with bootstrap CIs (TSVs, figures, OUT/augment.html).
    """
    from ..evaluate.augmentation import AugmentRequest, run_augment

    request = AugmentRequest(
        derivatives=[Path(d).resolve() for d in derivatives], out=out.resolve(),
        participants=participants, contrast=contrast, train_site=train_site,
        site_column=site_column, positive=positive, modality=modality,
        conditions=list(condition), atlas=atlas,
        resolution=resolution if (resolution or model) else config_default("resolution"),
        model=model, preset=preset, steps=steps, batch_size=batch_size, lr=lr,
        sampling_steps=sampling_steps, cfg_scale=cfg_scale, average=average,
        sample_batch_size=sample_batch_size, max_ratio=max_ratio, ratio_step=ratio_step,
        n_draws=draws, n_boot=bootstrap, max_trees=max_trees, regress=regress,
        regress_ratio_step=regress_ratio_step, regress_epochs=regress_epochs, seed=seed,
        device=device, work_dir=work_dir, nprocs=nprocs, progress=not quiet)
    result = run_command(PROG, "augment", request, run_augment, request.derivatives, model)
    typer.echo(f"augmentation curves of {contrast} ({len(result.metrics)} rows) and the "
               f"report in {result.report}")
