"""``genbrain finetune``: train GenBrain for an image task (enhancement or modality synthesis).

Why a ``genbrain`` tool and not the group level: the training pairs come from any MNI-space
derivatives (a site's participant-level outputs, fMRIPrep's, a population cohort), not from one
BIDS dataset, and the group level is the BWAS chain (it needs ``--contrast``). The options are
the BIDS-App's (``--model``, ``--preset``, ``--steps``, ``--batch-size``, ``--lr``,
``--modality``, ``--participant-label``, ``--resolution``, ``--seed``, ``--device``, ``-w``) with
the same defaults, and the checkpoint is what the participant level's ``--enhance`` /
``--impute`` take.
"""

from __future__ import annotations

from pathlib import Path

import typer

VARIADIC = ("--modality", "--source", "--participant-label")
"""Options taking several values after one flag (``--source T1w T2w``)."""


def finetune(
    derivatives: list[Path] = typer.Argument(
        ..., help="Derivatives folders with MNI-space images (participant-level outputs, "
        "fMRIPrep, a population cohort)."),
    task: str = typer.Option(..., "--task", help="enhance (corrupted -> clean scan) or "
                             "synthesize (source modalities -> target)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write."),
    modality: list[str] = typer.Option(
        [], "--modality", help="--task enhance: modalities to enhance (T1w FLAIR ...)."),
    source: list[str] = typer.Option(
        [], "--source", help="--task synthesize: source modalities (T1w [T2w ...])."),
    target: str | None = typer.Option(None, "--target",
                                      help="--task synthesize: the modality imputed."),
    model: Path | None = typer.Option(
        None, "--model", "--init", help="Checkpoint to fine-tune (e.g. a population model); "
        "without it a --preset model is trained from scratch."),
    preset: str | None = typer.Option(
        None, "--preset", show_default=False,
        help="Model size from scratch: tiny, small, genbrain-b, genbrain-l [default: small]."),
    steps: int | None = typer.Option(None, "--steps", min=1, show_default=False,
                                     help="Optimiser steps [default: 10000, the paper's]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, show_default=False,
                                          help="Pairs per step [default: 32, the paper's]."),
    lr: float | None = typer.Option(
        None, "--lr", show_default=False, help="AdamW learning rate [default: 1e-3 for "
        "nano/tiny/small, 1e-4 for genbrain-b/l; with --model, the checkpoint's preset's]."),
    participant_label: list[str] = typer.Option(
        [], "--participant-label", help="Train on these participants only (default all)."),
    resolution: float | None = typer.Option(
        None, "--resolution", show_default=False,
        help="MNI grid in mm [default: the --model's, else the preset's]."),
    max_motion_events: int | None = typer.Option(
        None, "--max-motion-events", min=1, show_default=False,
        help="--task enhance: motion events per corrupted scan are 1..N [default: 4]."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, data order, "
                             "corruptions and noise."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", "-w", help="Where the cohort store goes (default: beside OUT)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue OUT's training state if present."),
) -> None:
    """Fine-tune a checkpoint (or train a preset) for scan enhancement or modality synthesis,
    on pairs made from MNI-space derivatives: a clean image and a copy corrupted afresh at
    every step (k-space motion, Gaussian/Rician noise), or a participant's source and target
    modalities. The model is conditioned on the modality index only; new input channels start
    at zero. Multi-GPU/CPU: `torchrun --nproc_per_node N $(which genbrain) finetune ...`.
    """
    from ..errors import InputError

    try:
        _run(derivatives, task, out, modality, source, target, model, preset, steps,
             batch_size, lr, participant_label, resolution, max_motion_events, seed,
             checkpoint_every, work_dir, device, resume)
    except (InputError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"genbrain finetune: error: {message}", err=True)
        raise typer.Exit(2) from None


def _run(derivatives, task, out, modality, source, target, model, preset, steps, batch_size,
         lr, participant_label, resolution, max_motion_events, seed, checkpoint_every,
         work_dir, device, resume) -> None:
    from ..corrupt import CorruptionConfig
    from ..errors import InputError
    from ..tasks.spec import ImageTask

    # the task and the folders are checked before torch is imported (fast one-line errors)
    if max_motion_events and task != "enhance":
        raise InputError("--max-motion-events belongs to --task enhance")
    corruption = CorruptionConfig(**({"max_events": max_motion_events}
                                     if max_motion_events else {}))
    spec = ImageTask(task, modalities=list(modality), sources=list(source), target=target,
                     corruption=corruption.to_dict() if task == "enhance" else {})
    for root in derivatives:
        if not root.is_dir():
            raise InputError(f"{root}: derivatives folder not found")
        if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
            raise InputError(f"--out {out} is inside the input {root}; write elsewhere")
    if model is not None and not model.is_dir():
        raise InputError(f"--model {model}: checkpoint folder not found")

    from ..config import Config
    from ..model.presets import get_preset
    from ..model.train import TrainConfig, training_lr
    from ..tasks.finetune import finetune_task

    defaults = {name: default for name, _, default in Config.options()}  # the BIDS-App's
    preset = preset or defaults["preset"]
    steps = steps or defaults["steps"]
    batch_size = batch_size or defaults["batch_size"]
    out = out.resolve()
    store = (work_dir or out.parent) / f".{out.name}.cohort"
    config = TrainConfig(steps=steps, batch_size=batch_size,
                         lr=lr or training_lr(preset, model),
                         checkpoint_every=checkpoint_every, seed=seed, device=device)
    bundle = finetune_task(spec, derivatives, out, config,
                           arch=None if model else get_preset(preset), init=model,
                           resolution=resolution, subjects=participant_label or None,
                           store_path=store, resume=resume)
    typer.echo(f"{spec.describe()}: checkpoint written to {out} ({steps} steps, "
               f"{'fine-tuned from ' + str(model) if model else preset + ' from scratch'}; "
               f"{bundle.arch.resolution:g} mm grid)")
