"""``OUTPUT_DIR/group.html``: what the group level did, its maps and how far to trust them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..covariates import TypedCovariates
from ..derivatives import masked_to_image
from ..runlog import package_versions
from ..templates import template_source
from .base import Section, render_report
from .figures import plot_examples, plot_memorization, plot_statmap

N_EXAMPLES = 4


def _methods(config: Config, *, model, n_real: int, n_synthetic: int, confounds: list[str],
             versions: dict[str, str]) -> str:
    origin = (
        "trained from scratch on the site's images (GenBrain-st; no pretrained checkpoint was"
        f" given), preset '{config.preset}'"
        if model.from_scratch else f"fine-tuned from the checkpoint {config.model}"
    )
    return (
        f"A GenBrain denoising diffusion transformer was {origin} for {config.steps} steps "
        f"(batch {config.batch_size}, AdamW, EMA) on {n_real} participants' "
        f"{config.modality} maps in MNI152NLin6Asym space, conditioned on "
        f"{', '.join(config.condition)} and {config.contrast} (PyTorch {versions['torch']}, "
        f"MONAI {versions['monai']}). {n_synthetic} synthetic images, balanced over "
        f"{config.contrast} with the site's age and sex distribution, were sampled with DDIM "
        f"({config.sampling_steps} steps, classifier-free guidance scale {config.cfg_scale}, "
        f"{config.average} sample(s) averaged per image; seed {config.seed}). Synthetic images "
        f"correlating above r = {config.privacy_threshold} with any training image were "
        "excluded. Voxel-wise ordinary least squares tested "
        f"{config.contrast} with {', '.join(confounds) or 'no'} confound(s), giving t, two-sided "
        "p, Cohen's d and Benjamini-Hochberg q maps, for the real and the synthetic cohort."
    )


def _covariates_section(covariates: TypedCovariates, store) -> Section:
    """How each modelled participants.tsv column was typed; the cohort's flagged values."""
    flagged = covariates.flagged()
    flagged = flagged[flagged["participant_id"].isin(store.table["participant_id"])]
    text = (f"Columns of {covariates.source} the group level models, typed by the rules in "
            "docs/usage.md. Censored values (such as 89+) are used as their bound and ranges "
            "(such as 26-30) as their midpoint; both are flagged in the cohort table "
            "(<column>_flag) and in group/covariates.tsv, beside the value as written")
    text += (f"; {len(flagged)} value(s) of the cohort are flagged:" if len(flagged)
             else "; no value of the cohort is flagged.")
    return Section("Covariates", text=text,
                   tables=[covariates.summary(), *([flagged] if len(flagged) else [])],
                   status="warning" if len(flagged) else "ok")


def write_group_report(config: Config, *, site, plan, model, synthetic, gate, bwas,
                       comparison, out: Path) -> Path:
    """Render ``OUTPUT_DIR/group.html`` from the results of the group level's stages.

    Parameters
    ----------
    config : Config
    site : bids_genbrain.group.SiteCohort
    plan : bids_genbrain.group.GroupPlan
    model : bids_genbrain.group.TrainedModel
    synthetic : bids_genbrain.group.SyntheticCohort
    gate : bids_genbrain.group.PrivacyGate
    bwas : bids_genbrain.group.BWASMaps
    comparison : bids_genbrain.group.Comparison or None
    out : pathlib.Path
        The report's path.

    Returns
    -------
    pathlib.Path
    """
    from ..synthetic import balance_table

    store, synth_store, kept = site.store, synthetic.store, gate.kept
    confounds = site.confounds
    n_real, n_synthetic = plan.real_design.n, len(kept)
    balance = pd.concat([
        balance_table(plan.real_table, config.contrast).assign(cohort="real"),
        balance_table(bwas.synthetic_table, config.contrast).assign(cohort="synthetic")])
    versions = package_versions()
    resolution = store.resolution
    mask = store.mask()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        origin = ("Trained from scratch on this site (GenBrain-st): no pretrained checkpoint "
                  "was given (--model)." if model.from_scratch
                  else f"Fine-tuned from {config.model}.")
        summary = pd.DataFrame([{
            "modality": config.modality, "contrast": config.contrast,
            "confounds": ", ".join(confounds) or "none", "real N (BWAS)": n_real,
            "synthetic N (after privacy gate)": n_synthetic,
            "grid": f"MNI152NLin6Asym {resolution:g} mm", "templates": template_source(),
        }])
        sections = [Section("Summary", text=origin, tables=[summary])]
        sections.append(_covariates_section(site.covariates, store))
        if site.left_out is not None:
            sections.append(Section(
                "Participants left out", tables=[site.left_out] if len(site.left_out) else [],
                text=f"The cohort was selected with --participant-label / "
                     f"--exclude-participants: {site.store.table['participant_id'].nunique()} "
                     f"participant(s) entered it, {len(site.left_out)} with images were left "
                     f"out."))

        figures = []
        for cohort in ("real", "synthetic"):
            for stat in ("d", "t"):
                path = bwas.statmaps[cohort][stat]
                figures.append(plot_statmap(path, tmp / f"{cohort}_{stat}.png",
                                            title=f"{cohort}: {stat} ({config.contrast})"))
        sections.append(Section(
            "BWAS maps", figures=figures,
            text="Cohen's d and t of the contrast, real site sample and synthetic cohort. "
                 "Maps are in group/bwas/ with JSON sidecars (design, N, df)."))
        if comparison is not None:
            sections.append(Section(
                "Agreement with the reference map", tables=[comparison.table],
                text="Pearson r and Dice of the d maps with --reference-map; the real map's "
                     "95 % interval is a normal bootstrap interval over its participants "
                     "(estimate +- 1.96 bootstrap standard errors, Fisher z scale for r)."))

        loss_png = model.directory / "loss.png"
        sections.append(Section("Training", figures=[loss_png] if loss_png.is_file() else [],
                                text=f"Checkpoint: {model.directory}"))

        memo = gate.memorization
        flagged = memo[memo["flagged"]]
        sections.append(Section(
            "Memorization check",
            figures=[plot_memorization(memo["max_r"].to_numpy(dtype=float),
                                       config.privacy_threshold, tmp / "memo.png")],
            tables=[flagged] if len(flagged) else [],
            text=f"{len(flagged)} of {len(memo)} synthetic image(s) exceeded r = "
                 f"{config.privacy_threshold} with a training image and were excluded.",
            status="warning" if len(flagged) else "ok"))

        modality = config.modality
        real_mean = masked_to_image(store.denormalise(np.asarray(store.data).mean(axis=0),
                                                      modality), mask, resolution)
        examples, labels = [], []
        for row in kept[:N_EXAMPLES]:
            examples.append(masked_to_image(synth_store.denormalise(
                np.asarray(synth_store.data[row]), modality), mask, resolution))
            info = synth_store.table.iloc[row]
            labels.append(", ".join(f"{c}={info[c]:.0f}" if isinstance(info[c], float)
                                    else f"{c}={info[c]}" for c in config.condition
                                    if c in info))
        if examples:
            sections.append(Section("Synthetic examples", figures=[plot_examples(
                real_mean, examples, tmp / "examples.png",
                labels=labels)]))
        sections.append(Section("Condition balance", tables=[balance]))
        provenance = pd.DataFrame([
            {"item": "command line", "value": " ".join(config.command_line)},
            {"item": "seed", "value": config.seed},
            {"item": "model weights sha256", "value": json.loads(
                (model.directory / "config.json").read_text())["weights_sha256"]},
            *({"item": k, "value": v} for k, v in versions.items()),
        ])
        sections.append(Section("Provenance", tables=[provenance]))
        return render_report("Group level", sections, out, methods=_methods(
            config, model=model, n_real=n_real, n_synthetic=n_synthetic, confounds=confounds,
            versions=versions))
