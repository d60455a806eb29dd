"""``genbrain evaluate``: is a synthetic cohort biologically valid, diverse and free of copies?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..evaluate import evaluation as ev
from .study_options import (Atlas, CfgScale, Derivatives, Device, Modality, Nprocs, Out,
                            Participants, Quiet, Resolution, SampleBatch, SamplingSteps, Seed,
                            WorkDir, config_default, run_command)

PROG = "genbrain evaluate"


def evaluate(
    derivatives: Derivatives,
    out: Out,
    participants: Participants = None,
    synthetic: Annotated[Optional[Path], typer.Option(  # noqa: UP045 - typer needs Optional
        "--synthetic", help="A synthetic derivatives dataset (genbrain sample, the group "
        "level's OUTPUT_DIR/synthetic); or give --model.", show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--model", help="A checkpoint to sample from under the real participants' conditions,"
        " for every K = 1 .. --max-average.", show_default=False)] = None,
    n_synthetic: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--n-synthetic", min=2, help="Synthetic images per K with --model [default: one per "
        "real participant].", show_default=False)] = None,
    max_average: Annotated[int, typer.Option(
        "--max-average", min=1, help="Largest K (draws averaged per image) of the averaging "
        "curve, with --model.")] = ev.MAX_AVERAGE,
    reference: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP045
        "--reference", help="Derivatives of a larger real cohort whose t maps are the "
        "reference (repeat) [default: the real cohort minus each draw's sample].",
        show_default=False)] = None,
    reference_participants: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--reference-participants", help="participants.tsv of --reference [default: the "
        "first --reference folder that has one].", show_default=False)] = None,
    modality: Modality = config_default("modality"),
    condition: Annotated[list[str], typer.Option(
        "--condition", help="Conditions whose effect maps are compared (repeat).")] =
        config_default("condition"),
    atlas: Atlas = "HarvardOxford",
    resolution: Resolution = None,
    draws: Annotated[int, typer.Option(
        "--draws", min=1, help="Seeded draws of real samples (and reference splits).")] =
        ev.N_DRAWS,
    max_images: Annotated[int, typer.Option(
        "--max-images", min=4, help="Images per set for MMD and MS-SSIM diversity.")] =
        ev.MAX_IMAGES,
    diversity_pairs: Annotated[int, typer.Option(
        "--diversity-pairs", min=1, help="Image pairs of the MS-SSIM diversity.")] =
        ev.N_PAIRS,
    sampling_steps: SamplingSteps = config_default("sampling_steps"),
    cfg_scale: CfgScale = config_default("cfg_scale"),
    sample_batch_size: SampleBatch = 8,
    seed: Seed = config_default("seed"),
    device: Device = config_default("device"),
    work_dir: WorkDir = None,
    nprocs: Nprocs = 1,
    quiet: Quiet = False,
) -> None:
    """Evaluate a synthetic cohort against a real one: age/sex t-map similarity for K-sample
    averages and for real samples of the same size, memorization (the group level's copy
    gate), MMD, MS-SSIM diversity and regional plausibility per atlas region (TSVs, figures,
    OUT/evaluate.html).
    """
    request = ev.EvaluateRequest(
        derivatives=[Path(d).resolve() for d in derivatives], out=out.resolve(),
        participants=participants, synthetic=synthetic.resolve() if synthetic else None,
        model=model, n_synthetic=n_synthetic, max_average=max_average,
        reference=[Path(r).resolve() for r in reference or []],
        reference_participants=reference_participants, modality=modality,
        conditions=list(condition), atlas=atlas, resolution=resolution, n_draws=draws,
        max_images=max_images, n_pairs=diversity_pairs, sampling_steps=sampling_steps,
        cfg_scale=cfg_scale, sample_batch_size=sample_batch_size, seed=seed, device=device,
        work_dir=work_dir, nprocs=nprocs, progress=not quiet)
    inputs = [*request.derivatives, *request.reference,
              *([request.synthetic] if request.synthetic else [])]
    result = run_command(PROG, "evaluate", request, ev.run_evaluate, inputs, model)
    typer.echo(f"evaluation of {len(result.synthetic[0])} synthetic images: tables and the "
               f"report in {result.report}")
