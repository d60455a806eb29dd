"""``genbrain demo OUT_DIR``: simulate a small study, then run both BIDS-App levels on it.

Everything the demo needs is made here (no download): a simulated two-site BIDS dataset with a
planted diagnosis effect, participant-level preprocessing with the fast (``--sloppy``)
registration on a coarse grid, and the group level with the ``tiny`` model trained from scratch.
The planted effect map serves as the reference map, so the report shows how well the real and
the synthetic BWAS maps recover the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError


def demo(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the simulated dataset and all "
                                            "outputs (created; must be empty or absent).",
                                            show_default=False)],
    n_subjects: Annotated[int, typer.Option(help="Simulated participants (two sites).")] = 10,
    resolution: Annotated[float, typer.Option(help="MNI grid of the outputs in mm (the "
                                              "paper's is 2; the demo's coarse default keeps "
                                              "it to minutes on a laptop).")] = 4.0,
    steps: Annotated[int, typer.Option(min=1, help="Training steps of the tiny model.")] = 1000,
    n_synthetic: Annotated[int, typer.Option(min=1, help="Synthetic images to generate.")] = 24,
    nprocs: Annotated[int, typer.Option(min=0, help="Processes (0: all CPUs).")] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the simulation and of both "
                                      "levels.")] = 0,
) -> None:
    """Simulate a dataset and run the participant and group levels on it (a few minutes)."""
    from ..config import Config
    from ..simulate import simulate_dataset
    from ..simulation.config import Acquisition
    from ..simulation.groundtruth import effect_path
    from .bids_app import run

    out_dir = out_dir.resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        typer.echo(f"genbrain: error: {out_dir} is not empty; give a new folder", err=True)
        raise typer.Exit(2)
    bids_dir, deriv = out_dir / "bids", out_dir / "derivatives"
    typer.echo(f"[1/3] simulating {n_subjects} participants in {bids_dir}")
    try:
        sim = simulate_dataset(
            bids_dir, n_subjects=n_subjects, n_sites=2, modalities=("T1w",), seed=seed,
            mni_resolution=resolution, progress=True,
            acquisition=Acquisition(voxel_size_range=(1.6, 2.4), motion_fraction=0.0))
    except ValueError as exc:  # the simulator checks its settings first
        typer.echo(f"genbrain demo: error: {exc}", err=True)
        raise typer.Exit(2) from None
    common = dict(bids_dir=bids_dir, output_dir=deriv, work_dir=out_dir / "work", nprocs=nprocs,
                  seed=seed, resolution=resolution,
                  command_line=["genbrain", "demo", str(out_dir)])
    try:
        typer.echo("[2/3] participant level (sloppy registration)")
        code = run(Config(analysis_level="participant", sloppy=True, **common).validate())
        if code != 0:
            typer.echo("genbrain: some participants failed; see the summary above", err=True)
            raise typer.Exit(code)
        typer.echo("[3/3] group level (tiny model trained from scratch)")
        reference = effect_path(sim.groundtruth, "GM", "diagnosis", resolution)
        run(Config(analysis_level="group", preset="tiny", steps=steps, batch_size=8,
                   n_synthetic=n_synthetic, sampling_steps=25, condition=["age", "sex"],
                   contrast="diagnosis", reference_map=reference, **common).validate())
    except InputError as exc:
        typer.echo(f"genbrain: error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"done: participant reports in {deriv}/sub-*.html, group report {deriv}/group.html")
