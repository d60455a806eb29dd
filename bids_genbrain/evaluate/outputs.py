"""Where ``genbrain augment`` and ``genbrain evaluate`` write, and how (one place for names).

Both outputs are BIDS-Derivatives datasets: ``dataset_description.json``, tables named by the
naming table (:data:`bids_genbrain.derivatives.KINDS`: ``[contrast-<c>_][atlas-<a>_]desc-<what>
_metrics.tsv``), each with a JSON sidecar describing its columns (BIDS tabular-file
sidecars) and the settings it came from, the atlas on the grid (``space-MNI152NLin6Asym_res-
<r>_atlas-<a>_dseg.nii.gz`` with ``atlas-<a>_dseg.tsv``), ``figures/``, the HTML report and
``logs/``. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..derivatives import kind_path, res_label, sidecar_path, write_dataset_description, \
    write_image, write_json
from ..utils import atomic_write_text

METRIC_COLUMNS = {
    "ratio": "Synthetic:real ratio of the training set",
    "n_real_train": "Real training participants",
    "n_synthetic": "Synthetic images added to the training set",
    "test_set": "Participants the classifier was tested on",
    "n": "Participants in the test set",
    "accuracy": "Fraction classified correctly (probability threshold 0.5)",
    "accuracy_ci_low": "2.5th percentile of the accuracy over bootstrap resamples",
    "accuracy_ci_high": "97.5th percentile of the accuracy over bootstrap resamples",
    "auroc": "Area under the ROC curve",
    "auroc_ci_low": "2.5th percentile of the AUROC over bootstrap resamples",
    "auroc_ci_high": "97.5th percentile of the AUROC over bootstrap resamples",
    "validation_auroc": "Validation AUROC of the chosen hyper-parameter draw",
}


@dataclass(frozen=True)
class Settings:
    """The settings both commands share (the real cohort, the generator's sampling, the run).

    ``genbrain augment`` and ``genbrain evaluate`` extend it with their own
    (:class:`~.augmentation.AugmentRequest`, :class:`~.evaluation.EvaluateRequest`).
    """

    derivatives: list[Path]
    out: Path
    participants: Path | None
    modality: str
    conditions: list[str]
    atlas: str
    resolution: float | None
    model: Path | None
    sampling_steps: int
    cfg_scale: float
    sample_batch_size: int
    seed: int
    device: str
    work_dir: Path | None
    nprocs: int
    progress: bool

    def to_dict(self) -> dict[str, Any]:
        """Paths as strings (lists of paths too), for the run log and the sidecars."""
        return {k: (str(v) if isinstance(v, Path) else
                    [str(x) for x in v] if isinstance(v, list) else v)
                for k, v in self.__dict__.items()}


def _label(text: str) -> str:
    return "".join(ch for ch in str(text) if ch.isalnum())


def ratio_label(ratio: float) -> str:
    """``desc-`` label of a ratio: ``0.5`` -> ``ratio0p5``."""
    return "ratio" + f"{ratio:.1f}".replace(".", "p")


def write_table(path: Path, table: pd.DataFrame, columns: Mapping[str, str],
                **metadata: Any) -> Path:
    """Write a TSV and its sidecar (column descriptions for the columns present, metadata)."""
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a"))
    described = {c: {"Description": columns[c]} for c in table.columns if c in columns}
    write_json(sidecar_path(path), {**described, **metadata})
    return path


class Outputs:
    """Names shared by both commands' output folders.

    Parameters
    ----------
    root : pathlib.Path
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.figures = self.root / "figures"

    def table(self, desc: str, **entities: Any) -> Path:
        """``root/<entities>_desc-<desc>_metrics.tsv``."""
        ents = {k: _label(v) for k, v in entities.items() if v is not None}
        return kind_path(self.root, "metrics", desc=_label(desc), **ents)

    def figure(self, name: str) -> Path:
        """``root/figures/<name>``."""
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / name

    def write_atlas(self, atlas) -> tuple[Path, Path]:
        """The atlas label image on the grid and its label table."""
        image = write_image(atlas.image, kind_path(self.root, "atlas", resolution=atlas.resolution,
                                                   atlas=atlas.name), atlas.describe())
        labels = write_table(kind_path(self.root, "atlas_labels", atlas=atlas.name), atlas.labels,
                             {"index": "Label value in the dseg image",
                              "name": "Region name (as the atlas source spells it)",
                              "n_voxels": f"Brain-mask voxels of the region on the "
                                          f"{res_label(atlas.resolution)} mm grid"},
                             Atlas=atlas.describe())
        return image, labels

    def describe_dataset(self, name: str, sources: list[Path]) -> Path:
        """``dataset_description.json``."""
        return write_dataset_description(
            self.root, name=name,
            source_datasets=[{"URL": f"file://{Path(s).resolve()}"} for s in sources])


class AugmentOutputs(Outputs):
    """Names of ``genbrain augment``'s outputs.

    Parameters
    ----------
    root : pathlib.Path
    contrast : str
    """

    def __init__(self, root: Path, contrast: str) -> None:
        super().__init__(root)
        self.contrast = contrast
        self.generator = self.root / "generator"
        self.synthetic = self.root / "synthetic"
        self.report = self.root / "augment.html"

    def ratio(self, ratio: float) -> Path:
        """The table of one ratio."""
        return self.table(ratio_label(ratio), contrast=self.contrast)

    def write_study(self, study, generator, synthetic, atlas, real, synth, request) -> None:
        """Splits, synthetic sources, atlas and regional features."""
        self.describe_dataset("genbrain augment", request.derivatives)
        table = study.table
        splits = pd.DataFrame({
            "participant_id": table.index, "site": table["site"].to_numpy(),
            "label": table["label"].to_numpy(), "split": table["split"].to_numpy(),
            "generator": table.index.isin(generator.participant_ids)})
        write_table(self.table("splits", contrast=self.contrast), splits, {
            "participant_id": "Participant",
            "site": f"Value of {study.site_column}",
            "label": f"Value of {study.contrast} (the class)",
            "split": "train / validation / test within the training site; 'site' for the "
                     "participants of other sites (cross-site test sets)",
            "generator": "Whether the generator was trained on this participant's image and "
                         "conditions (training split only)"},
            TrainingSite=study.train_site, PositiveClass=study.positive, Seed=request.seed,
            Proportions="3:1:1 (training : validation : test), stratified by the label")
        sources = synthetic.table[["participant_id", "conditions_from", "label"]]
        write_table(self.table("syntheticsources", contrast=self.contrast), sources, {
            "participant_id": "Synthetic image (its file in synthetic/)",
            "conditions_from": "Training participant whose conditions it was generated under",
            "label": f"Its {study.contrast} (the class it counts as)"})
        self.write_atlas(atlas)
        features = pd.concat([
            real.values.assign(participant_id=table.index.to_numpy(), cohort="real",
                               split=table["split"].to_numpy(), label=table["label"].to_numpy()),
            synth.values.assign(participant_id=synthetic.table["participant_id"].to_numpy(),
                                cohort="synthetic", split="synthetic",
                                label=synthetic.table["label"].to_numpy())],
            ignore_index=True)
        front = ["participant_id", "cohort", "split", "label"]
        features = features[front + [c for c in features.columns if c not in front]]
        columns = {"participant_id": "Real participant or synthetic image",
                   "cohort": "real or synthetic", "split": "As in the splits table",
                   "label": f"Value of {study.contrast}"}
        columns.update({r: f"Regional {real.kind} ({real.unit}) of {real.modality}"
                        for r in real.values.columns})
        write_table(self.table("features", atlas=atlas.name), features, columns,
                    Atlas=atlas.describe())

    def write_ratio(self, ratio: float, metrics: pd.DataFrame, request) -> Path:
        """One ratio's metrics."""
        return write_table(self.ratio(ratio), metrics, METRIC_COLUMNS,
                           Ratio=ratio, Bootstrap=request.n_boot)

    def write_curve(self, metrics: pd.DataFrame, draws: pd.DataFrame, request) -> None:
        """Every ratio's metrics and every hyper-parameter draw."""
        from .augment import HYPERPARAMETER_RANGES

        write_table(self.table("augmentation", contrast=self.contrast), metrics,
                    METRIC_COLUMNS, Settings=request.to_dict())
        columns = {"ratio": METRIC_COLUMNS["ratio"], "draw": "Index of the draw at the ratio",
                   "validation_auroc": "AUROC on the validation participants",
                   "validation_accuracy": "Accuracy on the validation participants",
                   "chosen": "The draw kept at this ratio (highest validation AUROC)"}
        columns.update({k: f"LightGBM {k}" for k in HYPERPARAMETER_RANGES})
        write_table(self.table("hyperparameters", contrast=self.contrast), draws, columns,
                    Ranges=HYPERPARAMETER_RANGES, DrawsPerRatio=request.n_draws,
                    MaxTrees=request.max_trees)

    def write_regression(self, table: pd.DataFrame, request) -> Path:
        """The ResNet regression's MAE per ratio."""
        from .resnet import REGRESSION_COLUMNS

        return write_table(self.table("regression", contrast=request.regress), table,
                           REGRESSION_COLUMNS, Settings=request.to_dict())


SIMILARITY_COLUMNS = {
    "effect": "The condition's effect mapped (continuous slope, or a level against the first)",
    "condition": "The condition",
    "cohort": "real (samples of the real cohort) or synthetic",
    "average": "Draws averaged per synthetic image (K)",
    "n": "Images per sample",
    "n_reference": "Images of the reference cohort the sample is compared with",
    "n_draws": "Seeded draws the statistics are over",
    "cosine_t": "Mean over draws of the cosine similarity of the t map with the reference's",
    "ci_low": "2.5th percentile of the cosine over draws",
    "ci_high": "97.5th percentile of the cosine over draws",
    "r_d": "Mean over draws of the Pearson r of the d map with the reference's",
    "fraction_ge_real": "Fraction of draws where the synthetic cosine is at least the real "
                        "sample's of the same draw",
}
DISTRIBUTION_COLUMNS = {
    "set": "real or synthetic",
    "average": "Draws averaged per synthetic image (K)",
    "n": "Images used (a seeded subsample of larger sets)",
    "mmd_rbf": "Unbiased squared MMD against the real images, Gaussian kernel (real row: "
               "between two random halves of the real images)",
    "mmd_linear": "Unbiased squared MMD, linear kernel (distance of the mean images)",
    "bandwidth": "Width of the Gaussian kernel: median distance between real images",
    "ms_ssim_diversity": "Mean MS-SSIM between random pairs of the set (1: identical images; "
                         "lower is more diverse)",
    "n_pairs": "Pairs of the MS-SSIM diversity",
}
MEMORIZATION_COLUMNS = {
    "synthetic_id": "Synthetic image",
    "nearest_training_id": "Training participant with the largest raw Pearson r",
    "max_r": "Largest raw Pearson r with a training image (the paper's check)",
    "raw_r_copy": "max_r above the paper's 0.95 (reported; the template mean passes it)",
    "dcr": "Distance (RMS, store units) to the closest training record",
    "dcr_training_id": "That closest training participant",
    "residual_r": "Pearson r with the closest record after removing the training mean",
    "max_residual_r": "Largest mean-removed r with any training image",
    "max_residual_training_id": "Participant of max_residual_r",
    "flagged": "Flagged as a copy by the gate (dcr below the cut and residual r above it)",
}
REGIONAL_COLUMNS = {
    "index": "Atlas label value", "region": "Atlas region", "n_voxels": "Voxels on the grid",
    "unit": "Unit of the regional values", "mean_real": "Mean over real images",
    "sd_real": "SD over real images", "mean_synthetic": "Mean over synthetic images",
    "sd_synthetic": "SD over synthetic images",
    "cohens_d": "Cohen's d, synthetic - real (pooled SD)",
    "d_ci_low": "Lower end of the large-sample 95 % CI of d",
    "d_ci_high": "Upper end of the large-sample 95 % CI of d",
    "age_slope_real": "OLS slope on age per decade in the real images (other conditions as "
                      "covariates)",
    "age_slope_real_ci_low": "Its 95 % CI, lower end", "age_slope_real_ci_high": "upper end",
    "age_slope_synthetic": "The same in the synthetic images",
    "age_slope_synthetic_ci_low": "Its 95 % CI, lower end",
    "age_slope_synthetic_ci_high": "upper end",
}


class EvaluateOutputs(Outputs):
    """Names of ``genbrain evaluate``'s outputs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.synthetic = self.root / "synthetic"
        self.report = self.root / "evaluate.html"

    def write_all(self, request, *, real, reference, synthetic, similarity, memorization,
                  distribution, regional) -> None:
        """Every table of the evaluation, the atlas and ``dataset_description.json``."""
        self.describe_dataset("genbrain evaluate", [*request.derivatives, *request.reference,
                                                    *([request.synthetic] if request.synthetic
                                                      else [])])
        settings = request.to_dict()
        write_table(self.table("similarity"), similarity, SIMILARITY_COLUMNS,
                    Reference=(reference.name if reference is not None else
                               "the real cohort minus each draw's real sample"),
                    Conditions=request.conditions, Settings=settings)
        check = memorization.check
        write_table(self.table("memorization"), check.table, MEMORIZATION_COLUMNS,
                    Training=memorization.training, DCRCut=check.dcr_cut,
                    ResidualRCut=check.residual_r_cut,
                    NFlagged=int(check.table["flagged"].sum()), Settings=settings)
        write_table(self.table("memorizationbaseline"), check.baseline, {
            "image_id": "Real image of the baseline", "source": "Its role",
            "dcr": "Distance to its closest training record (other participants)",
            "dcr_training_id": "That record's participant",
            "residual_r": "Mean-removed r with it"})
        write_table(self.table("distribution"), distribution, DISTRIBUTION_COLUMNS,
                    Settings=settings)
        self.write_atlas(regional.atlas)
        write_table(self.table("regional", atlas=regional.atlas.name), regional.table,
                    REGIONAL_COLUMNS, Atlas=regional.atlas.describe(),
                    Summary=regional.summary, Modality=request.modality,
                    Feature=regional.kind)
