"""``OUTPUT_DIR/group.html``: what the group level did, its maps and how far to trust them."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..covariates import TypedCovariates
from ..derivatives import masked_to_image
from ..evaluate.fidelity import LEARNED_R
from ..runlog import package_versions
from ..summaries import write_citation
from ..templates import template_source
from .base import Section, render_report
from .figures import plot_examples, plot_memorization, plot_statmap

N_EXAMPLES = 4


@dataclass(frozen=True)
class MethodCounts:
    """What a finished group level adds to its methods text beyond the settings.

    Attributes
    ----------
    n_site, n_training : int
        Participants of the site's cohort, and those the model trained on.
    n_synthetic : int
        Synthetic images kept by the privacy gate.
    confounds : list of str
        Confounds of the BWAS design.
    holdout_rule : str
        The held-out split, in a sentence (:class:`bids_genbrain.group.plan.HoldoutSplit`).
    fidelity_cohort : str
        The real participants the synthetic effect maps were held against.
    """

    n_site: int
    n_training: int
    n_synthetic: int
    confounds: list[str]
    holdout_rule: str
    fidelity_cohort: str


def group_methods(config: Config, counts: MethodCounts | None = None) -> str:
    """The group level's methods paragraph (group.html, ``logs/CITATION_group.md``).

    Parameters
    ----------
    config : Config
    counts : MethodCounts, optional
        From a finished run; without it (``--boilerplate-only``) the text says what the
        settings determine and names the rules that the data decide.

    Returns
    -------
    str
    """
    versions = package_versions()
    origin = (
        "trained from scratch on the site's images (GenBrain-st; no pretrained checkpoint was"
        f" given), preset '{config.preset}'"
        if config.model is None else f"fine-tuned from the checkpoint {config.model}"
    )
    if counts is None:
        trained_on = "the site's participants'"
        split = f"some held out of training by --holdout {config.holdout}"
        kept = "The synthetic images that remained were analysed."
        real = "held-out real participants (the training participants when none are held out)"
        confounds = ("age and sex where recorded, site when there are several"
                     + "".join(f", {c}" for c in config.confound) + " as")
    else:
        trained_on = f"{counts.n_training} of the site's {counts.n_site} participants'"
        split = counts.holdout_rule
        kept = f"{counts.n_synthetic} synthetic images remained."
        real = counts.fidelity_cohort
        confounds = f"{', '.join(counts.confounds) or 'no'}"
    return (
        f"A GenBrain denoising diffusion transformer was {origin} for {config.steps} steps "
        f"(batch {config.batch_size}, AdamW, EMA) on {trained_on} {config.modality} maps in "
        f"MNI152NLin6Asym space ({split}), "
        f"conditioned on {', '.join(config.condition)} and {config.contrast} (PyTorch "
        f"{versions['torch']}, MONAI {versions['monai']}). Synthetic images, balanced over "
        f"{config.contrast} with the site's age and sex distribution, were sampled with DDIM "
        f"({config.sampling_steps} steps, classifier-free guidance scale {config.cfg_scale}, "
        f"{config.average} sample(s) averaged per image; seed {config.seed}). A synthetic "
        "image was excluded as a copy when its distance to the closest training image was "
        "below half the smallest such distance of real new participants, and its correlation "
        "with that image after removing the training mean was above the point halfway between "
        "theirs and 1; the largest raw Pearson r with a training image is reported (copy "
        f"threshold r = {config.privacy_threshold} in the GenBrain paper). {kept} "
        "For every condition, voxel-wise effect maps (Cohen's d, "
        "t; adjusted for the other conditions) of the synthetic cohort were compared with "
        f"those of the {real} (Pearson r of the d maps, cosine similarity of the t "
        f"maps); a condition counted as learned at r >= {LEARNED_R}. Voxel-wise ordinary least "
        f"squares tested {config.contrast} with {confounds} confound(s), "
        "giving t, two-sided p, Cohen's d and Benjamini-Hochberg q maps, for the real and the "
        "synthetic cohort."
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


FIDELITY_SHOWN = ["contrast", "n_real", "n_synthetic", "r_d", "cosine_t", "r_d_ceiling",
                  "r_d_second", "r_d_real_split", "status"]


def _describe_reference(path: Path) -> str:
    """``name`` and, when its JSON sidecar has one, its Description (e.g. a planted effect)."""
    sidecar = Path(str(path).removesuffix(".gz").removesuffix(".nii") + ".json")
    try:
        description = json.loads(sidecar.read_text(encoding="utf-8")).get("Description")
    except (OSError, ValueError, AttributeError):
        description = None
    return f"{path.name} ({description})" if description else path.name


def _sizes(design) -> str:
    if design.group_sizes:
        return ", ".join(f"{n} {lev}" for lev, n in design.group_sizes.items())
    return f"{design.n} (continuous)"


def write_group_report(config: Config, *, site, plan, model, synthetic, gate, fidelity, bwas,
                       comparison, out: Path) -> Path:
    """Render ``OUTPUT_DIR/group.html`` (and its methods, ``logs/CITATION_group.md``) from
    the results of the group level's stages.

    Parameters
    ----------
    config : Config
    site : bids_genbrain.group.SiteCohort
    plan : bids_genbrain.group.GroupPlan
    model : bids_genbrain.group.TrainedModel
    synthetic : bids_genbrain.group.SyntheticCohort
    gate : bids_genbrain.group.PrivacyGate
    fidelity : bids_genbrain.group.Fidelity
    bwas : bids_genbrain.group.BWASMaps
    comparison : bids_genbrain.group.Comparison or None
    out : pathlib.Path
        The report's path.

    Returns
    -------
    pathlib.Path
    """
    from ..arrays import iter_row_blocks
    from ..evaluate.fidelity import design_stability
    from ..synthetic import balance_table

    store, synth_store, kept = site.store, synthetic.store, gate.kept
    confounds = site.confounds
    n_synthetic = len(kept)
    ids = store.table["participant_id"].astype(str)
    heldout = plan.holdout.heldout
    real_balance = balance_table(plan.real_table, config.contrast).assign(cohort="real")
    grouping = (plan.real_table[config.contrast].astype(str)
                if plan.real_design.kind == "two-group" else
                pd.Series("all", index=plan.real_table.index))
    held = plan.real_table["participant_id"].astype(str).isin(heldout)
    real_balance["held out"] = [int((held & (grouping == lev)).sum())
                                for lev in real_balance["level"]]
    balance = pd.concat([
        real_balance,
        balance_table(bwas.synthetic_table, config.contrast).assign(cohort="synthetic")])
    balance = balance[["cohort", "level", "N", "held out",
                       *[c for c in balance.columns if c not in
                         ("cohort", "level", "N", "held out")]]]
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
            "confounds": ", ".join(confounds) or "none",
            "real N per group (BWAS)": _sizes(plan.real_design),
            "held out of training": len(heldout),
            "synthetic N per group (after privacy gate)": _sizes(bwas.synthetic.design),
            "grid": f"MNI152NLin6Asym {resolution:g} mm", "templates": template_source(),
        }])
        sections = [Section(
            "Summary", tables=[summary, balance],
            text=f"{origin} Held-out participants: {plan.holdout.rule} (group/split.tsv).")]
        sections.append(_covariates_section(site.covariates, store))

        if site.left_out is not None:
            sections.append(Section(
                "Participants left out", tables=[site.left_out] if len(site.left_out) else [],
                text=f"The cohort was selected with --participant-label / "
                     f"--exclude-participants: {site.store.table['participant_id'].nunique()} "
                     f"participant(s) entered it, {len(site.left_out)} with images were left "
                     f"out."))

        warning = fidelity.warning()
        if warning:
            sections.append(Section(
                f"The synthetic BWAS map of {config.contrast} is not to be trusted",
                text=f"{warning} The synthetic statmaps' JSON sidecars say so too (Warning). "
                     "Use the real site map, or a model that learns the condition (more "
                     "training steps, a pretrained --model).", status="error"))

        shown = fidelity.table[[c for c in FIDELITY_SHOWN if c in fidelity.table.columns]]
        problems = fidelity.table[fidelity.table["status"] != "learned"]
        second = ("r_d_second: the same against the training participants; r_d_real_split: the "
                  "held-out against the training participants' real maps (how reproducible "
                  "the real effect is at these sizes). " if "r_d_second" in shown else "")
        sections.append(Section(
            "Conditional fidelity", tables=[shown],
            text=(f"For every condition of the model, the synthetic cohort's effect map "
                  f"(adjusted for the other conditions) against that of the "
                  f"{fidelity.real_cohort}: "
                  "r_d is the Pearson r of the Cohen's d maps (continuous conditions: d = "
                  "2 t / sqrt(df), from the partial correlation), cosine_t the cosine "
                  "similarity of the t maps (the GenBrain paper's age/sex similarity). "
                  "r_d_ceiling: the largest r_d a noise-free synthetic map could reach "
                  "against this noisy real map. "
                  f"{second}A condition counts as learned at r_d >= {LEARNED_R}; below, with "
                  f"a ceiling below {LEARNED_R} too, it is not measured (the real cohort "
                  "shows no effect to check the model against). Full table "
                  "with reasons: group/bwas/fidelity.tsv. "
                  + " ".join(f"{row.contrast}: {row.status}, {row.reason}."
                             for row in problems.itertuples())),
            status="warning" if len(problems) else "ok"))

        figures = []
        for cohort in ("real", "synthetic"):
            for stat in ("d", "t"):
                path = bwas.statmaps[cohort][stat]
                figures.append(plot_statmap(path, tmp / f"{cohort}_{stat}.png",
                                            title=f"{cohort}: {stat} ({config.contrast})"))
        stability = {c: design_stability(getattr(bwas, c).design)
                     for c in ("real", "synthetic")}
        unstable = [f"{c} map: {s.message}." for c, s in stability.items() if not s.stable]
        sections.append(Section(
            "BWAS maps", figures=figures,
            text="Cohen's d and t of the contrast, real site sample "
                 f"({_sizes(bwas.real.design)}; {bwas.real.design.df} residual df) and "
                 f"synthetic cohort ({_sizes(bwas.synthetic.design)}; "
                 f"{bwas.synthetic.design.df} residual df). Maps are in group/bwas/ with JSON "
                 "sidecars (design, N, df). " + " ".join(unstable),
            status="warning" if unstable else "ok"))
        if comparison is not None:
            sections.append(Section(
                "Agreement with the reference map", tables=[comparison.table],
                text=f"Pearson r and Dice of the d maps with --reference-map "
                     f"{_describe_reference(config.reference_map)}; the real map's "
                     "95 % interval is a normal bootstrap interval over its participants "
                     "(estimate +- 1.96 bootstrap standard errors, Fisher z scale for r)."))

        loss_png = model.directory / "loss.png"
        sections.append(Section("Training", figures=[loss_png] if loss_png.is_file() else [],
                                text=f"Checkpoint: {model.directory}; trained on "
                                     f"{plan.training_rows.size} image(s), "
                                     f"{plan.heldout_rows.size} held out."))

        check = gate.check
        memo = check.table
        flagged = memo[memo["flagged"]]
        raw = int(memo["raw_r_copy"].sum())
        sources = " and ".join(sorted(set(check.baseline["source"])))
        sections.append(Section(
            "Memorization check",
            figures=[plot_memorization(check, config.privacy_threshold, tmp / "memo.png")],
            tables=[flagged] if len(flagged) else [],
            text=(f"{len(flagged)} of {len(memo)} synthetic image(s) were excluded as copies: "
                  f"closer to a training participant than {check.dcr_cut:.4g} (half the "
                  f"smallest distance of a real new person to their closest training "
                  f"participant) and correlating above {check.residual_r_cut:.3g} with them "
                  "after removing the training mean (halfway between the largest such "
                  f"correlation of a real new person and 1). Real new people: {sources} "
                  f"({len(check.baseline)} images, group/bwas/memorization_baseline.tsv). The "
                  f"paper's raw check (r > {config.privacy_threshold} with a training image) "
                  f"would call {raw} image(s) copies; on GM maps the training mean alone "
                  "passes it, so it is reported, not used (group/bwas/memorization.tsv)."),
            status="warning" if len(flagged) else "ok"))

        modality = config.modality
        total = np.zeros(int(mask.sum()))
        for _, block in iter_row_blocks(store.data, plan.training_rows):
            total += block.sum(axis=0, dtype=np.float64)
        real_mean = masked_to_image(store.denormalise(
            total / max(1, plan.training_rows.size), modality), mask, resolution)
        examples, labels = [], []
        for row in kept[:N_EXAMPLES]:
            examples.append(masked_to_image(synth_store.denormalise(
                np.asarray(synth_store.data[row]), modality), mask, resolution))
            info = synth_store.table.iloc[row]
            labels.append(", ".join(f"{c}={info[c]:.0f}" if isinstance(info[c], float)
                                    else f"{c}={info[c]}" for c in site.conditions
                                    if c in info))
        if examples:
            sections.append(Section("Synthetic examples", figures=[plot_examples(
                real_mean, examples, tmp / "examples.png",
                labels=labels)]))
        provenance = pd.DataFrame([
            {"item": "command line", "value": " ".join(config.command_line)},
            {"item": "seed", "value": config.seed},
            {"item": "model weights sha256", "value": json.loads(
                (model.directory / "config.json").read_text())["weights_sha256"]},
            *({"item": k, "value": v} for k, v in versions.items()),
        ])
        sections.append(Section("Provenance", tables=[provenance]))
        methods = group_methods(config, MethodCounts(
            n_site=ids.nunique(), n_training=ids.iloc[plan.training_rows].nunique(),
            n_synthetic=n_synthetic, confounds=confounds, holdout_rule=plan.holdout.rule,
            fidelity_cohort=fidelity.real_cohort))
        write_citation(config.output_dir, [methods], level="group")
        return render_report("Group level", sections, out, methods=methods)
