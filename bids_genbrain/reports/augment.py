"""``OUT/augment.html``: does adding synthetic images help the classifier, within and across sites?"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..runlog import package_versions
from .base import Section, render_report
from .evaluation_figures import plot_metric_vs_ratio


def best_ratio(metrics: pd.DataFrame) -> float:
    """The ratio whose chosen classifier has the highest validation AUROC (ties: smallest)."""
    per_ratio = metrics.drop_duplicates("ratio").sort_values("ratio")
    return float(per_ratio.loc[per_ratio["validation_auroc"].idxmax(), "ratio"])


def summary_table(metrics: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Accuracy and AUROC with CIs at ratio 0 and at ``ratio``, per test set."""
    rows = []
    for r, label in ((0.0, "no synthetic images (ratio 0)"),
                     (ratio, f"ratio chosen on validation ({ratio:g})")):
        for _, row in metrics[metrics["ratio"] == r].iterrows():
            rows.append({
                "training set": label, "test set": row["test_set"], "n": int(row["n"]),
                "AUROC [95% CI]": f"{row['auroc']:.3f} [{row['auroc_ci_low']:.3f}, "
                                  f"{row['auroc_ci_high']:.3f}]",
                "accuracy [95% CI]": f"{row['accuracy']:.3f} [{row['accuracy_ci_low']:.3f}, "
                                     f"{row['accuracy_ci_high']:.3f}]"})
    return pd.DataFrame(rows)


def _methods(request, study, generator, atlas, n_synthetic: int, versions: dict) -> str:
    origin = (f"fine-tuned from the checkpoint {request.model}" if request.model is not None
              else f"trained from scratch (preset '{request.preset}')")
    return (
        f"The participants of site {study.train_site} were split 3:1:1 into training, "
        f"validation and test sets, stratified by {study.contrast} (seed {request.seed}). A "
        f"GenBrain model was {origin} for {request.steps} steps on the {request.modality} maps "
        f"of the {len(generator.participant_ids)} training participants only, conditioned on "
        f"{', '.join([*study.conditions, study.contrast])}; {n_synthetic} synthetic images were "
        f"sampled (DDIM, {request.sampling_steps} steps, guidance {request.cfg_scale}, "
        f"{request.average} draw(s) averaged) under conditions copied from the training "
        f"participants. Features were the regional {request.modality} values of the "
        f"{atlas.name} atlas ({atlas.version}; maximum probability, threshold "
        f"{atlas.threshold:g}). At each synthetic:real ratio from 0 to {request.max_ratio:g} "
        f"in steps of {request.ratio_step:g}, {request.n_draws} random LightGBM "
        f"(version {versions['lightgbm']}) hyper-parameter draws were trained on the real "
        "training participants plus synthetic images, the draw with the highest validation "
        "AUROC was kept, and its accuracy and AUROC were measured on the within-site test "
        f"set and on every other site, with percentile bootstrap 95 % CIs ({request.n_boot} "
        "resamples)."
    )


def write_augment_report(names, *, study, generator, synthetic, atlas, metrics, draws,
                         regression, request) -> Path:
    """Render ``OUT/augment.html`` from the results of ``genbrain augment``.

    Parameters
    ----------
    names : bids_genbrain.evaluate.outputs.AugmentOutputs
    study, generator, synthetic
        The stages' results (:mod:`bids_genbrain.evaluate.augmentation`).
    atlas : bids_genbrain.atlases.Atlas
    metrics, draws : pandas.DataFrame
        Every ratio's metrics and hyper-parameter draws.
    regression : pandas.DataFrame or None
    request : bids_genbrain.evaluate.augmentation.AugmentRequest

    Returns
    -------
    pathlib.Path
    """
    from ..evaluate.augment import HYPERPARAMETER_RANGES

    chosen = best_ratio(metrics)
    figures = [plot_metric_vs_ratio(metrics, metric, names.figure(
        f"contrast-{study.contrast}_desc-augmentation{metric}.svg"), best_ratio=chosen,
        title=f"{study.contrast}: {label} against the synthetic:real ratio", ylabel=label)
        for metric, label in (("auroc", "AUROC"), ("accuracy", "accuracy"))]
    counts = (study.table.groupby(["site", "split", "label"]).size()
              .rename("participants").reset_index())
    ranges = pd.DataFrame([{"hyper-parameter": k, "low": v["low"], "high": v["high"],
                            "scale": v["scale"], "note": v.get("note", "")}
                           for k, v in HYPERPARAMETER_RANGES.items()])
    picked = draws[draws["chosen"]].drop(columns=["chosen"])
    sections = [
        Section("Summary", text=(
            f"Classifier of {study.contrast} ({study.positive} = positive class) trained on "
            f"site {study.train_site}; features: {len(atlas.regions)} regional "
            f"{request.modality} values ({atlas.name}). The ratio chosen on validation is "
            f"{chosen:g}; test results are below, at that ratio and without synthetic images."),
            tables=[summary_table(metrics, chosen)]),
        Section("Augmentation curves", text=(
            "Each point is the classifier chosen on validation at that ratio; bands are "
            "percentile bootstrap 95 % CIs over the test participants."), figures=figures),
        Section("Study and splits", text=(
            f"Splits 3:1:1 within {study.train_site}, stratified by {study.contrast}, seed "
            f"{request.seed}; every other site is a cross-site test set."), tables=[counts]),
        Section("Generator and leakage", text=(
            f"The generator ({'trained from scratch' if generator.from_scratch else 'fine-tuned'}"
            f") saw the images and conditions of the {len(generator.participant_ids)} training "
            "participants only: its cohort store holds no other participant, and each of the "
            f"{len(synthetic.table)} synthetic images was sampled under the conditions of a "
            "training participant (contrast-*_desc-syntheticsources_metrics.tsv). No "
            "validation, test or other-site participant reached it.")),
        Section("Hyper-parameter search", text=(
            f"{request.n_draws} random draws per ratio from these ranges (uniform on the "
            "scale given); the chosen draw of every ratio is listed."),
            tables=[ranges, picked]),
        Section("Atlas", text=(
            f"{atlas.name}, {atlas.version}, {len(atlas.regions)} of {len(atlas.labels)} "
            f"regions on the {atlas.resolution:g} mm grid. {atlas.licence}. {atlas.reference}.")),
    ]
    if regression is not None:
        figure = plot_metric_vs_ratio(regression, "mae", names.figure(
            f"contrast-{request.regress}_desc-regressionmae.svg"),
            title=f"{request.regress}: 3D ResNet MAE against the ratio", ylabel="MAE")
        sections.append(Section(f"Regression of {request.regress} (3D ResNet)", text=(
            "MONAI ResNet on the images, trained on the same splits; lower is better."),
            figures=[figure]))
    methods = _methods(request, study, generator, atlas, len(synthetic.table),
                       package_versions())
    return render_report(f"genbrain augment: {study.contrast}", sections, names.report,
                         methods=methods)
