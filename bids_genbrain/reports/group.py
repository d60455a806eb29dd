"""``OUTPUT_DIR/group.html``: what the group level did, its maps and how far to trust them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from ..config import Config
from ..runlog import package_versions
from ..templates import mni_grid, template_source
from .base import Section, render_report
from .figures import plot_examples, plot_memorization, plot_statmap

N_EXAMPLES = 4


def _methods(config: Config, result, confounds: list[str], versions: dict[str, str]) -> str:
    origin = (
        "trained from scratch on the site's images (GenBrain-st; no pretrained checkpoint was"
        f" given), preset '{config.preset}'"
        if result.trained_from_scratch else f"fine-tuned from the checkpoint {config.model}"
    )
    return (
        f"A GenBrain denoising diffusion transformer was {origin} for {config.steps} steps "
        f"(batch {config.batch_size}, AdamW, EMA) on {result.n_real} participants' "
        f"{config.modality} maps in MNI152NLin6Asym space, conditioned on "
        f"{', '.join(config.condition)} and {config.contrast} (PyTorch {versions['torch']}, "
        f"MONAI {versions['monai']}). {result.n_synthetic} synthetic images, balanced over "
        f"{config.contrast} with the site's age and sex distribution, were sampled with DDIM "
        f"({config.sampling_steps} steps, classifier-free guidance scale {config.cfg_scale}, "
        f"{config.average} sample(s) averaged per image; seed {config.seed}). Synthetic images "
        f"correlating above r = {config.privacy_threshold} with any training image were "
        "excluded. Voxel-wise ordinary least squares tested "
        f"{config.contrast} with {', '.join(confounds) or 'no'} confound(s), giving t, two-sided "
        "p, Cohen's d and Benjamini-Hochberg q maps, for the real and the synthetic cohort."
    )


def write_group_report(config: Config, result, *, store, synth_store, kept: np.ndarray,
                       balance: pd.DataFrame, confounds: list[str]) -> Path:
    """Render ``OUTPUT_DIR/group.html``.

    Parameters
    ----------
    config : Config
    result : bids_genbrain.group.GroupResult
    store, synth_store : bids_genbrain.cohort.CohortStore
        Real and synthetic cohorts (store space).
    kept : ndarray of int
        Synthetic rows that passed the privacy gate.
    balance : pandas.DataFrame
        Condition balance of both cohorts.
    confounds : list of str

    Returns
    -------
    pathlib.Path
    """
    versions = package_versions()
    resolution = store.resolution
    shape, affine = mni_grid(resolution)
    mask = store.mask()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        origin = ("Trained from scratch on this site (GenBrain-st): no pretrained checkpoint "
                  "was given (--model)." if result.trained_from_scratch
                  else f"Fine-tuned from {config.model}.")
        summary = pd.DataFrame([{
            "modality": config.modality, "contrast": config.contrast,
            "confounds": ", ".join(confounds) or "none", "real N (BWAS)": result.n_real,
            "synthetic N (after privacy gate)": result.n_synthetic,
            "grid": f"MNI152NLin6Asym {resolution:g} mm", "templates": template_source(),
        }])
        sections = [Section("Summary", text=origin, tables=[summary])]

        figures = []
        for cohort in ("real", "synthetic"):
            for stat in ("d", "t"):
                path = result.statmaps[cohort][stat]
                figures.append(plot_statmap(path, tmp / f"{cohort}_{stat}.png",
                                            title=f"{cohort}: {stat} ({config.contrast})"))
        sections.append(Section(
            "BWAS maps", figures=figures,
            text="Cohen's d and t of the contrast, real site sample and synthetic cohort. "
                 "Maps are in group/bwas/ with JSON sidecars (design, N, df)."))
        if result.comparison is not None:
            sections.append(Section(
                "Agreement with the reference map", tables=[result.comparison],
                text="Pearson r and Dice of the d maps with --reference-map; the real map's "
                     "95 % interval is a normal bootstrap interval over its participants "
                     "(estimate +- 1.96 bootstrap standard errors, Fisher z scale for r)."))

        loss_png = result.model_dir / "loss.png"
        sections.append(Section("Training", figures=[loss_png] if loss_png.is_file() else [],
                                text=f"Checkpoint: {result.model_dir}"))

        memo = result.memorization
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
        real_mean = np.zeros(shape, np.float32)
        real_mean[mask] = store.denormalise(
            np.asarray(store.data).mean(axis=0), modality)
        examples, labels = [], []
        for row in kept[:N_EXAMPLES]:
            vol = np.zeros(shape, np.float32)
            vol[mask] = synth_store.denormalise(np.asarray(synth_store.data[row]), modality)
            examples.append(nb.Nifti1Image(vol, affine))
            info = synth_store.table.iloc[row]
            labels.append(", ".join(f"{c}={info[c]:.0f}" if isinstance(info[c], float)
                                    else f"{c}={info[c]}" for c in config.condition
                                    if c in info))
        if examples:
            sections.append(Section("Synthetic examples", figures=[plot_examples(
                nb.Nifti1Image(real_mean, affine), examples, tmp / "examples.png",
                labels=labels)]))
        sections.append(Section("Condition balance", tables=[balance]))
        provenance = pd.DataFrame([
            {"item": "command line", "value": " ".join(config.command_line)},
            {"item": "seed", "value": config.seed},
            {"item": "model weights sha256", "value": json.loads(
                (result.model_dir / "config.json").read_text())["weights_sha256"]},
            *({"item": k, "value": v} for k, v in versions.items()),
        ])
        sections.append(Section("Provenance", tables=[provenance]))
        return render_report("Group level", sections, config.output_dir / "group.html",
                             methods=_methods(config, result, confounds, versions))
