"""``OUT/evaluate.html``: does the synthetic cohort carry the biology of the real one?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..derivatives import masked_to_image
from ..runlog import package_versions
from .base import Section, render_report
from .evaluation_figures import (plot_age_slopes, plot_distances, plot_regional_d,
                                 plot_regional_map, plot_similarity_curve)
from .figures import plot_examples

N_EXAMPLES = 4


def _similarity_summary(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for effect, part in table.groupby("effect", sort=False):
        real = part[part["cohort"] == "real"]
        syn = part[part["cohort"] == "synthetic"].sort_values("average")
        row = {"effect": effect, "n per sample": int(part["n"].iloc[0])}
        if len(real):
            r = real.iloc[0]
            row["real sample [95% range]"] = (f"{r['cosine_t']:.3f} [{r['ci_low']:.3f}, "
                                              f"{r['ci_high']:.3f}]")
        for _, s in syn.iterrows():
            row[f"synthetic K={int(s['average'])}"] = f"{s['cosine_t']:.3f}"
        best = syn.loc[syn["cosine_t"].idxmax()] if len(syn) else None
        if best is not None and len(real):
            row["synthetic >= real"] = (f"K={int(best['average'])}: "
                                        f"{best['fraction_ge_real']:.0%} of draws")
        rows.append(row)
    return pd.DataFrame(rows)


def _examples(real, synthetic, out: Path) -> Path:
    from ..arrays import iter_row_blocks

    store = real.store
    mask = store.mask()
    norm = store.normalisation[store.modalities[0]]
    total = np.zeros(store.data.shape[1])
    for _, block in iter_row_blocks(store.data, real.rows):
        total += block.sum(axis=0)
    mean = norm["lo"] + total / len(real.rows) * (norm["hi"] - norm["lo"])
    syn = synthetic.store
    snorm = syn.normalisation[syn.modalities[0]]
    pick = synthetic.rows[:N_EXAMPLES]
    images = [masked_to_image(snorm["lo"] + v * (snorm["hi"] - snorm["lo"]), mask,
                              store.resolution) for v in syn.read(pick)]
    columns = [c for c in ("age", "sex") if c in synthetic.table.columns]
    labels = [", ".join(f"{synthetic.table[c].iloc[i]}" for c in columns) or f"synthetic {i + 1}"
              for i in range(len(pick))]
    return plot_examples(masked_to_image(mean, mask, store.resolution), images, out,
                         labels=labels)


def _methods(request, real, reference, synthetic, regional, versions) -> str:
    source = (f"sampled from the checkpoint {request.model} under the real participants' "
              f"conditions (DDIM, {request.sampling_steps} steps, guidance {request.cfg_scale};"
              f" K = 1 to {request.max_average} draws averaged per image)"
              if request.model is not None else f"read from {request.synthetic}")
    ref = (f"a reference cohort of {len(reference)} participants" if reference is not None
           else "the rest of the real cohort in each draw")
    return (
        f"{len(synthetic[0])} synthetic {request.modality} images were {source} and compared "
        f"with {len(real)} real participants' images in MNI152NLin6Asym space (bids_genbrain "
        f"{versions['bids_genbrain']}). Age and sex similarity: voxel-wise OLS t maps of each "
        f"of {', '.join(request.conditions)} (adjusted for the others, and for site in real "
        f"cohorts), cosine similarity with the t map of {ref}, over {request.n_draws} seeded "
        "draws of real samples of the synthetic size. Memorization: each synthetic image's "
        "distance to its closest real record and mean-removed correlation with it, against a "
        "leave-one-participant-out baseline of real images. Distribution: unbiased squared MMD "
        "(Gaussian kernel, width the median real-real distance) and MS-SSIM diversity "
        f"(MONAI {versions['monai']}). Regional plausibility: {regional.kind}s of the "
        f"{regional.atlas.name} atlas ({regional.atlas.version}) regions, Cohen's d of "
        "synthetic against real and OLS age slopes per decade."
    )


def write_evaluate_report(names, *, request, real, reference, synthetic, similarity,
                          memorization, distribution, regional) -> Path:
    """Render ``OUT/evaluate.html`` from the results of ``genbrain evaluate``.

    Parameters
    ----------
    names : bids_genbrain.evaluate.outputs.EvaluateOutputs
    request : bids_genbrain.evaluate.evaluation.EvaluateRequest
    real, reference, synthetic, similarity, memorization, distribution, regional
        The stages' results (:mod:`bids_genbrain.evaluate.evaluation`).

    Returns
    -------
    pathlib.Path
    """
    check = memorization.check
    n_flag = int(check.table["flagged"].sum())
    summary = regional.summary
    top = regional.table.reindex(regional.table["cohens_d"].abs()
                                 .sort_values(ascending=False).index).head(10)
    columns = [c for c in ("region", "mean_real", "mean_synthetic", "cohens_d", "d_ci_low",
                           "d_ci_high", "age_slope_real", "age_slope_synthetic")
               if c in top.columns]
    regional_figures = [
        plot_regional_d(regional.table, names.figure("desc-regionald_bar.svg"),
                        title=f"Regional {regional.kind}: Cohen's d, synthetic - real"),
        plot_regional_map(regional.table["cohens_d"].to_numpy(), regional.atlas,
                          names.figure("desc-regionald_glass.svg"),
                          title="Cohen's d per region (synthetic - real)")]
    if "age_slope_synthetic" in regional.table and "age_slope_real" in regional.table:
        regional_figures.append(plot_age_slopes(regional.table,
                                                names.figure("desc-ageslopes_scatter.svg"),
                                                unit=regional.unit,
                                                title="Regional age slopes"))
    similarity_figure = plot_similarity_curve(
        similarity, names.figure("desc-similarity_curve.svg"),
        title="Cosine of t maps with the reference: synthetic against real samples")
    memo_figure = plot_distances(
        [check.table["dcr"], check.baseline["dcr"]],
        ["synthetic to closest real record", "real to closest other participant"],
        names.figure("desc-memorization_hist.svg"), xlabel="distance to the closest record",
        title=f"Memorization: {n_flag} of {len(check.table)} synthetic images flagged")
    lines = [f"{len(synthetic[0])} synthetic images against {len(real)} real participants"
             + (f" and a reference cohort of {len(reference)}" if reference is not None else
                "") + f"; {n_flag} flagged as copies.",
             f"Regional plausibility ({regional.atlas.name}, {len(regional.table)} regions): "
             f"median |d| {summary['median_abs_d']:.2f}, "
             f"{summary['fraction_abs_d_below_0.5']:.0%} of regions with |d| < 0.5"
             + (f"; age slopes correlate r = {summary['r_age_slopes']:.2f} with the real ones"
                if "r_age_slopes" in summary else "") + "."]
    sections = [
        Section("Summary", text="\n\n".join(lines),
                tables=[_similarity_summary(similarity)]),
        Section("Age and sex similarity", text=(
            "Cosine similarity of each condition's t map with the reference cohort's, for "
            "synthetic images averaging K draws and for real samples of the same size (the "
            "band: 2.5th to 97.5th percentile over draws). Synthetic >= real means the model's "
            "images carry the effect at least as well as as many real people."),
            tables=[similarity.round(4)], figures=[similarity_figure]),
        Section("Memorization", text=(
            f"The group level's copy gate: a synthetic image is a copy when its distance to "
            f"the closest real record is below {check.dcr_cut:.4g} and its mean-removed "
            f"correlation with it above {check.residual_r_cut:.3f} (cuts from the baseline of "
            f"real images against other participants). Compared with the "
            f"{memorization.training}."),
            tables=[check.table.sort_values("residual_r", ascending=False).head(10)],
            figures=[memo_figure], status="warning" if n_flag else "ok"),
        Section("Distribution and diversity", text=(
            "MMD of every synthetic set against the real images (the real row: two real "
            "halves, the floor); MS-SSIM diversity, lower is more diverse."),
            tables=[distribution]),
        Section("Regional plausibility", text=(
            f"Regional {regional.kind}s ({regional.unit}) of the {regional.atlas.name} atlas "
            f"({regional.atlas.version}; {regional.atlas.licence}). The ten regions with the "
            "largest |d| are listed."), tables=[top[columns]], figures=regional_figures),
        Section("Example images", text="The real cohort's mean beside synthetic images.",
                figures=[_examples(real, synthetic[0], names.figure("desc-examples.png"))]),
    ]
    methods = _methods(request, real, reference, synthetic, regional, package_versions())
    return render_report("genbrain evaluate", sections, names.report, methods=methods)
