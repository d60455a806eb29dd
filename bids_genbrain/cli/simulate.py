"""``genbrain simulate OUT_DIR``: write a simulated BIDS dataset with known ground truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer


def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to create (absent or empty).",
                                            show_default=False)],
    n_subjects: Annotated[Optional[int], typer.Option(help="Participants [20].")] = None,
    n_sites: Annotated[Optional[int], typer.Option(help="Sites (scanners) [2].")] = None,
    n_sessions: Annotated[Optional[int], typer.Option(help="Sessions per participant [1].")] = None,
    modality: Annotated[Optional[list[str]], typer.Option(
        help="Native contrast to write (repeat): T1w, T2w, FLAIR [T1w FLAIR].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of every random draw [0].")] = None,
    fast: Annotated[bool, typer.Option(
        "--fast", help="Test preset: 2-3 mm native voxels, 2 mm anatomy, 4 mm ground truth "
        "(other options override it).")] = False,
    population: Annotated[bool, typer.Option(
        "--population", help="Population preset for `genbrain pretrain`: 2000 healthy "
        "participants aged 18-90, both sexes, 4 sites, MNI maps only (T1w, FLAIR, GM, GMmod, "
        "FA) on the 4 mm grid, no native images, no per-session truth (other options "
        "override it).")] = False,
    mni_resolution: Annotated[Optional[float], typer.Option(
        help="Ground-truth MNI grid in mm [2].")] = None,
    anatomy_resolution: Annotated[Optional[float], typer.Option(
        help="Grid the anatomy is built on, in mm [1].")] = None,
    voxel_size: Annotated[Optional[tuple[float, float]], typer.Option(
        help="Smallest and largest native voxel edge in mm [0.8 1.5].")] = None,
    age_range: Annotated[Optional[tuple[float, float]], typer.Option(
        help="Range of baseline ages [20 85].")] = None,
    patient_fraction: Annotated[Optional[float], typer.Option(
        help="Expected fraction of patients [0.5].")] = None,
    diagnosis_effect: Annotated[Optional[float], typer.Option(
        help="Fractional GM loss of patients in the diagnosis regions [0.10].")] = None,
    diagnosis_region: Annotated[Optional[list[str]], typer.Option(
        help="Diagnosis region name:x,y,z,radius in MNI mm (repeat) [hippocampi, "
        "precuneus].")] = None,
    age_effect: Annotated[Optional[float], typer.Option(
        help="Fractional GM loss per decade [0.03].")] = None,
    ventricle_effect: Annotated[Optional[float], typer.Option(
        help="Ventricle wall displacement per decade in mm [0.6].")] = None,
    sex_effect: Annotated[Optional[float], typer.Option(
        help="Linear size difference men minus women, fraction [0.04].")] = None,
    score_effect: Annotated[Optional[float], typer.Option(
        help="Fractional GM change per SD of the score [0.03].")] = None,
    motion_fraction: Annotated[Optional[float], typer.Option(
        help="Fraction of images with motion ghosting [0.1].")] = None,
    skull: Annotated[bool, typer.Option(
        "--skull/--no-skull", help="Synthetic skull and scalp around the brain.")] = True,
    native: Annotated[Optional[bool], typer.Option(
        "--native/--no-native", help="Write native images (--no-native: participants, "
        "ground truth and MNI maps only) [native].", show_default=False)] = None,
    mnimaps: Annotated[Optional[bool], typer.Option(
        "--mnimaps/--no-mnimaps", help="Also write derivatives/mnimaps (preprocessed-like "
        "MNI maps, FA, MD, seed FC) [no].", show_default=False)] = None,
    map_: Annotated[Optional[list[str]], typer.Option(
        "--map", help="MNI map to write under derivatives/mnimaps (repeat; implies --mnimaps):"
        " T1w, T2w, FLAIR (simulated contrasts), GM, WM, CSF, GMmod, FA, MD, FC [all].")] = None,
    subject_truth: Annotated[Optional[bool], typer.Option(
        "--subject-truth/--no-subject-truth", help="Write every session's true MNI maps "
        "under derivatives/groundtruth (the truth table and effect maps are always "
        "written) [yes].", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a previous simulated dataset in OUT_DIR.")] = False,
    nprocs: Annotated[int, typer.Option(help="Subjects simulated at once.", min=1)] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Simulate a BIDS dataset with planted effects and its ground truth.

    The raw dataset goes to OUT_DIR; the truth (true MNI-space images and tissue maps, the true
    MNI -> scanner mapping of every image, planted effect maps) to
    OUT_DIR/derivatives/groundtruth.
    """
    from ..simulate import simulate_dataset
    from ..simulation.config import Region, SimulationConfig

    try:
        if fast and population:
            raise ValueError("--fast and --population are two presets; give one")
        effects = {k: v for k, v in dict(
            diagnosis_gm_loss=diagnosis_effect, age_gm_loss_per_decade=age_effect,
            ventricle_mm_per_decade=ventricle_effect, sex_size=sex_effect,
            score_gm_effect=score_effect,
            diagnosis_regions=tuple(Region.parse(r) for r in diagnosis_region)
            if diagnosis_region else None).items() if v is not None}
        acquisition = {k: v for k, v in dict(
            voxel_size_range=voxel_size, motion_fraction=motion_fraction).items()
            if v is not None}
        params = {k: v for k, v in dict(
            n_subjects=n_subjects, n_sites=n_sites, n_sessions=n_sessions,
            modalities=tuple(modality) if modality else None, seed=seed,
            mni_resolution=mni_resolution, anatomy_resolution=anatomy_resolution,
            age_range=age_range, patient_fraction=patient_fraction, native=native,
            mnimaps=True if map_ else mnimaps, maps=tuple(map_) if map_ else None,
            subject_truth=subject_truth).items() if v is not None}
        preset = (SimulationConfig.fast if fast else SimulationConfig.population if population
                  else SimulationConfig)
        base = preset(**params)
        config = base.replace(
            effects=dataclasses.replace(base.effects, **effects),
            acquisition=dataclasses.replace(base.acquisition, skull=skull, **acquisition),
        )
        result = simulate_dataset(out_dir, config, overwrite=overwrite, progress=not quiet,
                                  n_jobs=nprocs)
    except (ValueError, FileExistsError) as exc:
        typer.echo(f"genbrain simulate: error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(result.table)} sessions of {config.n_subjects} participants,"
               f" {len(result.images)} native images in {result.elapsed_s:.1f} s: {result.root}"
               f" (ground truth: {result.groundtruth})")
