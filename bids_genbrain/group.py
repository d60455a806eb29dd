"""Group level: fine-tune GenBrain on a site, generate a balanced synthetic cohort, BWAS maps.

Steps (each resumable: a rerun with the same options reuses what is finished):

1. cohort: the site's MNI-space maps of ``--modality`` (participant-level outputs in OUTPUT_DIR
   and any ``--derivatives``) into an on-disk store, with the conditions from participants.tsv;
2. model: fine-tune ``--model`` (new condition embedders start at zero) or, without it, train a
   ``--preset`` model from scratch (GenBrain-st), into ``OUTPUT_DIR/group/model``;
3. synthetic cohort: ``--n-synthetic`` images balanced over ``--contrast`` with the site's
   age/sex distribution, written to ``OUTPUT_DIR/synthetic`` (its own derivatives dataset);
4. privacy gate: every synthetic image against every training image (Pearson r); copies above
   ``--privacy-threshold`` are excluded and reported;
5. BWAS: voxel-wise GLM of the contrast with confounds, for the real and the synthetic cohort
   (t, p, d, q statmaps in ``OUTPUT_DIR/group/bwas``), compared with ``--reference-map``;
6. ``OUTPUT_DIR/group.html``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from .bids import read_participants
from .config import Config
from .errors import InputError
from .runlog import RunLog

LOGGER = logging.getLogger(__name__)


@dataclass
class GroupResult:
    """What the group level produced (paths and tables for the report and the caller)."""

    model_dir: Path
    trained_from_scratch: bool
    synthetic_dir: Path
    n_real: int
    n_synthetic: int
    memorization: pd.DataFrame
    statmaps: dict[str, dict[str, Path]] = field(default_factory=dict)
    comparison: pd.DataFrame | None = None
    report: Path | None = None


def _site_confounds(table: pd.DataFrame, config: Config) -> list[str]:
    """age, sex (when present and not the contrast), site when several, and --confound."""
    confounds = [c for c in ("age", "sex") if c in table.columns and c != config.contrast]
    if "site" in table.columns and table["site"].nunique(dropna=True) > 1 \
            and config.contrast != "site":
        confounds.append("site")
    for column in config.confound:
        if column not in table.columns:
            raise InputError(f"--confound {column!r} is not a participants.tsv column")
        if column not in confounds and column != config.contrast:
            confounds.append(column)
    return confounds


def _as_strings(table: pd.DataFrame, participants: pd.DataFrame) -> pd.DataFrame:
    """Categorical covariates as plain strings, as the design builder expects."""
    table = table.copy()
    for column in table.columns:
        if column in participants and isinstance(participants[column].dtype,
                                                 pd.CategoricalDtype):
            table[column] = table[column].astype("string")
    return table


def _one_image_per_participant(table: pd.DataFrame) -> np.ndarray:
    """Row indices keeping each participant's first session (BWAS needs independent rows)."""
    order = table.sort_values(["participant_id", "session_id"], na_position="first")
    return np.sort(order.drop_duplicates("participant_id").index.to_numpy())


def run_group_level(config: Config, log: RunLog) -> GroupResult:
    """Run the whole group level (see the module docstring).

    Parameters
    ----------
    config : Config
        Validated configuration; ``contrast`` names the tested column.
    log : RunLog
        Receives timings of each step.

    Returns
    -------
    GroupResult

    Raises
    ------
    InputError
        No participant-level outputs of the modality, unknown columns, a contrast that is not
        testable (one level, or confounded).
    """
    from .cohort import build_cohort, modality_entities
    from .evaluate.privacy import memorization_table
    from .model.checkpoint import read_config
    from .model.presets import get_preset
    from .model.sampling import write_synthetic_dataset
    from .model.train import TrainConfig, fit, resolve_device
    from .stats.glm import DesignError, fit_glm, make_design, write_statmaps
    from .synthetic import balance_table, balanced_conditions, read_conditions_tsv

    if config.contrast is None:
        raise InputError("the group level needs --contrast COLUMN (e.g. --contrast diagnosis)")
    import torch

    torch.set_num_threads(config.omp_nthreads)  # --omp-nthreads bounds the model's CPU threads
    participants = read_participants(config.bids_dir)
    conditions = list(dict.fromkeys([*config.condition, config.contrast]))
    missing = [c for c in conditions if c not in participants.columns]
    if missing:
        raise InputError(
            f"{participants.attrs['source']}: no column(s) {missing} for --condition/--contrast;"
            f" columns are {[c for c in participants.columns if c != 'participant_id']}"
        )
    confounds = _site_confounds(participants, config)
    covariates = list(dict.fromkeys([*conditions, *confounds]))
    if config.model is not None:
        resolution = float(read_config(config.model)["architecture"]["resolution"])
    else:
        resolution = config.resolution
    modality_entities(config.modality)  # unknown modality names fail here, before any work

    group_dir = config.output_dir / "group"
    roots = [config.output_dir, *config.derivatives]
    with log.step("cohort"):
        store = build_cohort(roots, config.work_dir / "group" / "cohort",
                             modalities=[config.modality], participants=participants.reset_index(
                                 drop=True), conditions=covariates, resolution=resolution)
    real = store.table
    LOGGER.info("cohort: %d %s image(s) of %d participant(s)", len(real), config.modality,
                real["participant_id"].nunique())
    # the real BWAS design is checked before any training, so a bad contrast fails fast
    rows = _one_image_per_participant(real)
    real_table = real.iloc[rows].reset_index(drop=True)
    real_table = _as_strings(real_table, participants)
    complete = real_table.dropna(subset=[config.contrast, *confounds]).index.to_numpy()
    real_table, rows = real_table.iloc[complete].reset_index(drop=True), rows[complete]
    try:
        real_design = make_design(real_table, config.contrast, confounds)
    except DesignError as exc:
        raise InputError(f"BWAS design for --contrast {config.contrast!r}: {exc}") from None

    site = real.copy()
    for column in covariates:
        if isinstance(participants[column].dtype, pd.CategoricalDtype):
            site[column] = pd.Categorical(site[column].astype("string"),
                                          categories=participants[column].cat.categories)
    if config.synthetic_conditions is not None:
        wanted = read_conditions_tsv(config.synthetic_conditions, conditions, site)
    else:
        wanted = balanced_conditions(site, conditions, config.n_synthetic,
                                     contrast=config.contrast, seed=config.seed)
    synth_confounds = [c for c in confounds if c in wanted.columns]
    try:
        make_design(_as_strings(wanted, participants), config.contrast, synth_confounds)
    except DesignError as exc:
        raise InputError(f"BWAS design of the synthetic cohort: {exc}") from None

    with log.step("model"):
        train_cfg = TrainConfig(steps=config.steps, batch_size=config.batch_size,
                                lr=config.lr, seed=config.seed, device=config.device,
                                checkpoint_every=max(1, min(500, config.steps // 4)))
        if config.model is not None:
            bundle = fit(store, group_dir / "model", train_cfg, init=config.model)
        else:
            arch = get_preset(config.preset).with_(resolution=resolution)
            bundle = fit(store, group_dir / "model", train_cfg, arch=arch)

    with log.step("synthesis"):
        synth_dir = config.output_dir / "synthetic"
        synthetic = write_synthetic_dataset(
            bundle, wanted, synth_dir, config.seed, steps=config.sampling_steps,
            cfg_scale=config.cfg_scale, average=config.average,
            device=resolve_device(config.device))
        synth_participants = synthetic.drop(columns=["path", "modality"], errors="ignore")
        synth_store = build_cohort([synth_dir], config.work_dir / "group" / "synthetic_cohort",
                                   modalities=[config.modality],
                                   participants=synth_participants, conditions=conditions,
                                   resolution=resolution)

    with log.step("privacy"):
        memo = memorization_table(synth_store.data, store.data,
                                  synthetic_ids=list(synth_store.table["participant_id"]),
                                  training_ids=list(real["participant_id"]),
                                  threshold=config.privacy_threshold)
        bwas_dir = group_dir / "bwas"
        bwas_dir.mkdir(parents=True, exist_ok=True)
        memo.to_csv(bwas_dir / "memorization.tsv", sep="\t", index=False, na_rep="n/a")
        kept = np.flatnonzero(~memo["flagged"].to_numpy())
        if len(kept) < len(memo):
            LOGGER.warning("privacy gate: %d synthetic image(s) excluded as copies (r > %g)",
                           len(memo) - len(kept), config.privacy_threshold)

    result = GroupResult(model_dir=group_dir / "model",
                         trained_from_scratch=config.model is None, synthetic_dir=synth_dir,
                         n_real=0, n_synthetic=len(kept), memorization=memo)
    with log.step("bwas"):
        synth_table = _as_strings(synth_store.table.iloc[kept].reset_index(drop=True),
                                  participants)
        try:
            synth_design = make_design(synth_table, config.contrast, synth_confounds)
        except DesignError as exc:
            raise InputError(f"BWAS design of the synthetic cohort: {exc}") from None
        real_fit = fit_glm(store.data, real_design, rows=rows, progress=True)
        synth_fit = fit_glm(synth_store.data, synth_design, rows=kept, progress=True)
        result.n_real = real_design.n
        common = {"Modality": config.modality, "ModelDirectory": "group/model",
                  "TrainedFromScratch": config.model is None}
        result.statmaps["real"] = write_statmaps(
            real_fit, bwas_dir, desc="real", resolution=resolution, mask=store.mask(),
            metadata={**common, "Cohort": "real site sample"})
        result.statmaps["synthetic"] = write_statmaps(
            synth_fit, bwas_dir, desc="synthetic", resolution=resolution, mask=store.mask(),
            metadata={**common, "Cohort": "synthetic (privacy-filtered)",
                      "ExcludedCopies": int(len(memo) - len(kept))})

    if config.reference_map is not None:
        with log.step("comparison"):
            result.comparison = _compare(config, store, real_fit, synth_fit, rows,
                                         real_table, confounds, resolution, bwas_dir)

    from .reports.group import write_group_report

    balance = pd.concat([balance_table(real_table, config.contrast).assign(cohort="real"),
                         balance_table(synth_table, config.contrast).assign(cohort="synthetic")])
    result.report = write_group_report(config, result, store=store, synth_store=synth_store,
                                       kept=kept, balance=balance, confounds=confounds)
    return result


N_BOOT = 200
"""Bootstrap draws of the real sample for the comparison's confidence intervals."""


def _compare(config: Config, store, real_fit, synth_fit, rows: np.ndarray,
             real_table: pd.DataFrame, confounds: list[str], resolution: float,
             bwas_dir: Path) -> pd.DataFrame:
    """Agreement of the real and synthetic d maps with the reference map, with bootstrap CIs.

    The interval of the real map comes from resampling the real participants; the synthetic
    map's row is its agreement as generated.
    """
    from .stats.compare import bootstrap_comparison, compare_maps, reference_vector
    from .utils import atomic_write_text

    try:
        reference = reference_vector(nb.load(config.reference_map), resolution=resolution,
                                     mask=store.mask())
    except Exception as exc:  # noqa: BLE001 - any unreadable map is a user input problem
        raise InputError(f"{config.reference_map}: cannot be used as --reference-map ({exc})"
                         ) from None
    boot = bootstrap_comparison(store.data, real_table, reference, rows=rows,
                                contrast=config.contrast, confounds=confounds, n_boot=N_BOOT,
                                seed=config.seed)
    synth = compare_maps(synth_fit.d, reference)
    real = compare_maps(real_fit.d, reference)
    rows_out = []
    for metric, value in real.items():
        ci = boot.summary.loc[metric]
        rows_out.append({"metric": metric, "real": value, "real_ci_low": ci["ci_low"],
                         "real_ci_high": ci["ci_high"], "synthetic": synth[metric]})
    table = pd.DataFrame(rows_out)
    atomic_write_text(bwas_dir / f"contrast-{_label(config.contrast)}_comparison.tsv",
                      table.to_csv(sep="\t", index=False, na_rep="n/a"))
    return table


def _label(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())
