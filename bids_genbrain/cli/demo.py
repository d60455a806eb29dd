"""``genbrain demo OUT_DIR``: what bids_genbrain is for, on simulated data, in minutes.

Everything is made here (no download, no network):

1. a small raw BIDS study (a few participants, native T1w with random pose, voxel size, bias
   and noise) and its participant level: preprocessing to MNI space with the fast
   (``--sloppy``) registration on a coarse grid, with a report per participant;
2. a single-site study large enough for a group level, simulated straight in MNI space (GM
   maps as the participant level would write them; no registration needed), with a planted
   diagnosis effect (patients lose GM in both hippocampi and the precuneus);
3. optionally (``--population N``) a healthy population simulated in MNI space and a nano
   foundation model pretrained on it (``genbrain pretrain``), which the group level then
   fine-tunes, the GenBrain way;
4. the group level on the site (8 mm grid by default): the nano model trained from scratch on
   the site (or fine-tuned), a balanced synthetic cohort, BWAS maps of the real and the
   synthetic cohort, and both held against the planted effect map (the reference map), so the
   report says how well each recovers the truth. The demo ends with that agreement in a few lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError

DEMO_PRESET = "nano"
DEMO_PREDICTION = "v_prediction"
"""The demo's model: the smallest preset, trained to predict velocity, which learned a planted
diagnosis in fewer steps than the noise target (docs/model.md, "Conditioning that learns")."""


@dataclass(frozen=True)
class DemoSummary:
    """Agreement of the group level's maps with the planted truth and with each other.

    Attributes
    ----------
    real_r, real_r_low, real_r_high : float
        Pearson r of the real d map with the planted effect, and its bootstrap 95 % interval.
    synthetic_r : float
        Pearson r of the synthetic d map with the planted effect.
    real_dice_top, synthetic_dice_top : float
        Dice of the 20 % voxels of largest |d| with the truth's.
    synthetic_real_r : float
        Pearson r of the synthetic d map with the real one (does the model reproduce the
        site's effect?).
    real_groups, synthetic_groups : dict
        N per contrast level of each cohort (the d maps' sidecars, ``GroupSizes``).
    real_df, synthetic_df : int
        Residual degrees of freedom of each cohort's design.
    """

    real_r: float
    real_r_low: float
    real_r_high: float
    synthetic_r: float
    real_dice_top: float
    synthetic_dice_top: float
    synthetic_real_r: float
    real_groups: dict
    synthetic_groups: dict
    real_df: int
    synthetic_df: int

    def lines(self) -> list[str]:
        """The summary as printed at the end of the demo."""
        return [
            f"real site map vs planted truth:        r = {self.real_r:.2f} "
            f"[{self.real_r_low:.2f}, {self.real_r_high:.2f}], "
            f"Dice top 20 % = {self.real_dice_top:.2f}",
            f"synthetic cohort map vs planted truth: r = {self.synthetic_r:.2f}, "
            f"Dice top 20 % = {self.synthetic_dice_top:.2f}",
            f"synthetic map vs real site map:        r = {self.synthetic_real_r:.2f}",
            f"real site sample: {_groups(self.real_groups)}, {self.real_df} residual df; "
            f"synthetic cohort: {_groups(self.synthetic_groups)}, {self.synthetic_df} "
            f"residual df",
        ]


def _groups(sizes: dict) -> str:
    return " / ".join(f"{n} {level}" for level, n in sizes.items())


def summarise(group_out: Path, contrast: str = "diagnosis") -> DemoSummary:
    """Read the group level's comparison table and d maps (see :class:`DemoSummary`)."""
    import nibabel as nb
    import numpy as np
    import pandas as pd

    bwas = group_out / "group" / "bwas"
    table = pd.read_csv(bwas / f"contrast-{contrast}_comparison.tsv", sep="\t")
    table = table.set_index("metric")
    maps, sidecars = {}, {}
    for desc in ("real", "synthetic"):
        [path] = bwas.glob(f"*_contrast-{contrast}_desc-{desc}_stat-d_statmap.nii.gz")
        maps[desc] = np.asanyarray(nb.load(path).dataobj, dtype=np.float64)
        sidecars[desc] = json.loads(
            path.with_name(path.name.replace(".nii.gz", ".json")).read_text(encoding="utf-8"))
    keep = np.all([np.isfinite(m) & (m != 0) for m in maps.values()], axis=0)
    r = float(np.corrcoef(maps["real"][keep], maps["synthetic"][keep])[0, 1])
    return DemoSummary(
        real_r=float(table.loc["r", "real"]), real_r_low=float(table.loc["r", "real_ci_low"]),
        real_r_high=float(table.loc["r", "real_ci_high"]),
        synthetic_r=float(table.loc["r", "synthetic"]),
        real_dice_top=float(table.loc["dice_top", "real"]),
        synthetic_dice_top=float(table.loc["dice_top", "synthetic"]), synthetic_real_r=r,
        real_groups=sidecars["real"]["GroupSizes"],
        synthetic_groups=sidecars["synthetic"]["GroupSizes"],
        real_df=int(sidecars["real"]["DegreesOfFreedom"]),
        synthetic_df=int(sidecars["synthetic"]["DegreesOfFreedom"]))


def demo(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the simulated datasets and all "
                                            "outputs (created; must be empty or absent).",
                                            show_default=False)],
    participants: Annotated[int, typer.Option(
        help="Participants of the small study preprocessed at the participant level.",
        min=1)] = 2,
    site_size: Annotated[int, typer.Option(
        help="Participants of the site the group level models (about half patients).",
        min=8)] = 80,
    population: Annotated[int, typer.Option(
        help="Healthy participants of a simulated population to pretrain a nano foundation "
        "model on, which the group level then fine-tunes (0: train from scratch on the "
        "site).", min=0)] = 0,
    resolution: Annotated[float, typer.Option(
        min=0.5, max=16.0, help="MNI grid of the participant level's outputs in mm (the "
        "paper's is 2; the demo's coarse default keeps it to minutes).")] = 4.0,
    group_resolution: Annotated[float, typer.Option(
        min=0.5, max=16.0, help="MNI grid of the site's maps and the group level's model in "
        "mm (at 8 mm the nano model learns the planted diagnosis in minutes on two "
        "cores).")] = 8.0,
    steps: Annotated[int, typer.Option(
        help="Training steps on the site (the model needs thousands to learn the diagnosis: "
        "docs/model.md).", min=1)] = 12000,
    pretrain_steps: Annotated[int, typer.Option(
        help="Training steps on the population (with --population).", min=1)] = 3000,
    n_synthetic: Annotated[int, typer.Option(help="Synthetic images to generate.",
                                             min=4)] = 100,
    sampling_steps: Annotated[int, typer.Option(help="DDIM steps per synthetic image.",
                                                min=1)] = 15,
    nprocs: Annotated[int, typer.Option(
        help="Processes (0: every CPU this job may use).", min=0)] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the simulations and of both levels.",
                                      min=0)] = 0,
) -> None:
    """Simulate a study and a site, and run the participant and the group level on them.

    Shows preprocessing on a few participants, then a group level whose real and synthetic
    BWAS maps are held against the planted effect, in about ten minutes on two cores.
    """
    out_dir = out_dir.resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        typer.echo(f"genbrain demo: error: {out_dir} is not empty; give a new folder", err=True)
        raise typer.Exit(2)
    try:
        summary = _run_demo(out_dir, participants, site_size, population, resolution,
                            group_resolution, steps, pretrain_steps, n_synthetic,
                            sampling_steps, nprocs, seed)
    except (InputError, ValueError) as exc:
        typer.echo(f"genbrain demo: error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("agreement of the BWAS maps (diagnosis: patient - CN) with the planted effect:")
    for line in summary.lines():
        typer.echo(f"  {line}")


def _run_demo(out_dir: Path, participants: int, site_size: int, population: int,
              resolution: float, group_resolution: float, steps: int, pretrain_steps: int,
              n_synthetic: int, sampling_steps: int, nprocs: int, seed: int) -> DemoSummary:
    from ..config import Config
    from ..simulate import simulate_dataset
    from ..simulation.config import Acquisition, SimulationConfig
    from ..simulation.groundtruth import effect_path
    from .bids_app import run

    n_steps = 5 if population else 4
    study, site = out_dir / "study", out_dir / "site"
    command = ["genbrain", "demo", str(out_dir)]
    typer.echo(f"[1/{n_steps}] simulating a study of {participants} participant(s) with "
               f"native T1w images in {study}")
    simulate_dataset(study, SimulationConfig.fast(
        n_subjects=participants, n_sites=1, modalities=("T1w",), seed=seed,
        mni_resolution=resolution, acquisition=Acquisition(voxel_size_range=(2.0, 2.6),
                                                           motion_fraction=0.0)),
        progress=True)
    typer.echo(f"[2/{n_steps}] participant level on {study} (sloppy registration)")
    code = run(Config(bids_dir=study, output_dir=out_dir / "study_outputs",
                      work_dir=out_dir / "work", analysis_level="participant", sloppy=True,
                      nprocs=nprocs, seed=seed,
                      resolution=resolution, command_line=command).validate())
    if code != 0:
        typer.echo("genbrain demo: some participants failed; see the summary above", err=True)
        raise typer.Exit(code)

    typer.echo(f"[3/{n_steps}] simulating a site of {site_size} participants straight in MNI "
               f"space (GM maps, planted diagnosis effect) in {site}")
    sim = simulate_dataset(site, SimulationConfig.fast(
        n_subjects=site_size, n_sites=1, modalities=("T1w",), seed=seed + 1, native=False,
        mnimaps=True, maps=("GM",), subject_truth=False, mni_resolution=group_resolution,
        anatomy_resolution=min(group_resolution, 4.0)), progress=True)
    model = None
    if population:
        model = _pretrain(out_dir, population, group_resolution, pretrain_steps, seed, n_steps)
    origin = "fine-tuned from the population model" if model else "trained from scratch"
    typer.echo(f"[{n_steps}/{n_steps}] group level on {site} ({DEMO_PRESET} model {origin}, "
               f"{steps} steps, {n_synthetic} synthetic images)")
    group_out = out_dir / "site_outputs"
    code = run(Config(
        bids_dir=site, output_dir=group_out, work_dir=out_dir / "work", analysis_level="group",
        derivatives=[sim.mnimaps], modality="GM", preset=DEMO_PRESET, model=model, steps=steps,
        batch_size=8, prediction_type=DEMO_PREDICTION, n_synthetic=n_synthetic,
        sampling_steps=sampling_steps, condition=["age", "sex"], contrast="diagnosis",
        reference_map=effect_path(sim.groundtruth, "GM", "diagnosis", group_resolution),
        nprocs=nprocs, seed=seed, resolution=group_resolution,
        command_line=command).validate())
    if code != 0:
        typer.echo(f"genbrain demo: the group level failed; see {group_out / 'logs'}", err=True)
        raise typer.Exit(code)
    summary = summarise(group_out)
    (out_dir / "demo_summary.json").write_text(
        json.dumps(summary.__dict__, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"done: participant reports in {out_dir / 'study_outputs'}/sub-*.html, group "
               f"report {group_out / 'group.html'}")
    return summary


def _pretrain(out_dir: Path, population: int, resolution: float, steps: int, seed: int,
              n_steps: int) -> Path:
    """Simulate a healthy population in MNI space and pretrain a nano model on its GM maps."""
    from ..bids import read_participants
    from ..cohort import CohortStore, build_cohort
    from ..model.diffusion import DiffusionConfig
    from ..model.presets import default_lr, get_preset
    from ..model.train import TrainConfig, fit
    from ..simulate import simulate_dataset
    from ..simulation.config import SimulationConfig

    root = out_dir / "population"
    typer.echo(f"[4/{n_steps}] simulating a population of {population} healthy adults in MNI "
               f"space and pretraining a {DEMO_PRESET} model on it ({steps} steps)")
    pop = simulate_dataset(root, SimulationConfig.population(
        n_subjects=population, modalities=("T1w",), maps=("GM",), mni_resolution=resolution,
        seed=seed + 2), progress=True)
    store: CohortStore = build_cohort(
        [pop.mnimaps], out_dir / "population_cohort", modalities=["GM"],
        participants=read_participants(root).reset_index(drop=True),
        conditions=["age", "sex"], resolution=resolution, progress=False)
    model = out_dir / "population_model"
    fit(store, model, TrainConfig(steps=steps, batch_size=8, seed=seed, device="cpu",
                                  lr=default_lr(DEMO_PRESET, fine_tuning=False),
                                  checkpoint_every=max(1, steps // 2)),
        arch=get_preset(DEMO_PRESET).with_(resolution=resolution),
        diffusion=DiffusionConfig(prediction_type=DEMO_PREDICTION))
    return model
