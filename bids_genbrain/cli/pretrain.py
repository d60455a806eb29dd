"""``genbrain pretrain``: derivatives -> cohort store -> trained GenBrain checkpoint."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from ..model.presets import PREDICTION_TYPE, PREDICTIONS, PRESETS, describe_presets

_PRESETS_HELP = "\n".join(f"  {line}" for line in describe_presets().splitlines())


def pretrain(
    derivatives: list[Path] = typer.Argument(
        ..., help="Derivatives folders with MNI-space maps (participant-level outputs, "
        "fMRIPrep ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write."),
    preset: str = typer.Option("tiny", "--preset", help=f"One of {', '.join(PRESETS)}."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per process/step."),
    modality: list[str] = typer.Option(
        ["GMmod"], "--modality", help="Modalities to model (repeat): T1w, T2w, FLAIR, GM, "
        "GMmod, or any map's desc (FA ...)."),
    condition: list[str] = typer.Option(
        ["age", "sex"], "--condition", help="participants.tsv columns to condition on "
        "(repeat); 'none' for an unconditional model."),
    participants: Path | None = typer.Option(
        None, "--participants", help="participants.tsv (or its dataset folder); default: the "
        "first derivatives folder that has one."),
    resolution: float | None = typer.Option(
        None, "--resolution", help="MNI grid in mm (default: the preset's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, data order and noise."),
    lr: float | None = typer.Option(
        None, "--lr", show_default=False, help="AdamW learning rate [default: 1e-3 for "
        "nano/tiny/small, 1e-4 for genbrain-b/l; with --init, the checkpoint's preset's]."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1),
    prediction_type: str = typer.Option(
        PREDICTION_TYPE, "--prediction-type", help=f"Training target of a new model: "
        f"{', '.join(PREDICTIONS)} (a checkpoint given with --init keeps its own)."),
    init: Path | None = typer.Option(
        None, "--init", help="Checkpoint to fine-tune (new conditions/modalities are added "
        "zero-initialised; they learn at 100x --lr)."),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", "-w", help="Where the cohort store goes (default: beside OUT)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue OUT's training state if present."),
    cohort_only: bool = typer.Option(
        False, "--cohort-only", help="Build (or check) the cohort store and stop; run it once "
        "before a multi-node torchrun so no rank waits on the images being read."),
) -> None:
    """Train a GenBrain model on MNI-space derivatives. Multi-GPU/CPU: launch with
    `torchrun --nproc_per_node N $(which genbrain) pretrain ...`.
    """
    from ..errors import InputError

    try:
        _run(derivatives, out, preset, steps, batch_size, modality, condition, participants,
             resolution, seed, lr, checkpoint_every, prediction_type, init, work_dir, device,
             resume, cohort_only)
    except (InputError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"genbrain pretrain: error: {message}", err=True)
        raise typer.Exit(2) from None


pretrain.__doc__ = (f"{inspect.cleandoc(pretrain.__doc__ or '')}\n\n\b\n"
                    f"Presets (parameters with age, sex and one modality):\n{_PRESETS_HELP}\n")


def _participants_table(path: Path | None, derivatives: list[Path], conditions: list[str]):
    """participants.tsv with the condition columns typed (the others are left alone)."""
    from ..bids import read_participants
    from ..errors import InputError

    if path is not None:
        folder = path.parent if path.name == "participants.tsv" else path
        if not (folder / "participants.tsv").is_file():
            raise InputError(f"{path}: no participants.tsv there")
        return read_participants(folder, columns=conditions)
    for root in derivatives:
        if (root / "participants.tsv").is_file():
            return read_participants(root, columns=conditions)
    return None


def _run(derivatives, out, preset, steps, batch_size, modality, condition, participants,
         resolution, seed, lr, checkpoint_every, prediction_type, init, work_dir, device,
         resume, cohort_only) -> None:
    import torch.distributed as dist

    from ..cohort import CohortStore, build_cohort
    from ..errors import InputError
    from ..model.checkpoint import read_config
    from ..model.diffusion import DiffusionConfig
    from ..model.presets import get_preset
    from ..model.train import TrainConfig, fit, init_distributed, resolve_device, training_lr

    arch = get_preset(preset)
    diffusion = DiffusionConfig(prediction_type=prediction_type)  # checked before any work
    if init is not None:
        resolution = resolution or read_config(init)["architecture"]["resolution"]
    resolution = float(resolution or arch.resolution)
    conditions = [] if [c.lower() for c in condition] == ["none"] else list(condition)
    table = _participants_table(participants, derivatives, conditions)
    if conditions and table is None:
        raise InputError(
            f"conditions {conditions} need a participants.tsv: pass --participants PATH (e.g. "
            "the raw BIDS dataset), or --condition none for an unconditional model")
    out = out.resolve()
    for root in derivatives:
        if out == root.resolve() or root.resolve() in out.parents:
            raise InputError(f"--out {out} is inside the input {root}; write elsewhere")
    store_path = (work_dir or out.parent) / f".{out.name}.cohort"
    if cohort_only:
        store = build_cohort(derivatives, store_path, modalities=modality, participants=table,
                             conditions=conditions, resolution=resolution, reuse=True)
        typer.echo(f"cohort store {store_path}: {len(store)} images of "
                   f"{store.table['participant_id'].nunique()} participants, modalities "
                   f"{', '.join(store.modalities)}")
        return
    env = init_distributed(resolve_device(device))
    if env.main:  # a store built from the same inputs (e.g. by --cohort-only) is reused
        build_cohort(derivatives, store_path, modalities=modality, participants=table,
                     conditions=conditions, resolution=resolution, reuse=True)
    if env.world > 1:
        dist.barrier()
    store = CohortStore(store_path)
    if lr is None:
        lr = training_lr(preset, init)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr,
                         checkpoint_every=checkpoint_every, seed=seed, device=device)
    fit(store, out, config, arch=arch.with_(resolution=resolution), diffusion=diffusion,
        init=init, resume=resume)
    if env.main:
        typer.echo(f"checkpoint written to {out} ({len(store)} images, {steps} steps)")
