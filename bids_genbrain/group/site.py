"""Stage 1 of the group level: the site's cohort (conditions, confounds, the image store)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..bids import read_participants_table
from ..cohort import CohortStore
from ..config import Config
from ..covariates import TypedCovariates, type_covariates, write_covariates_table
from ..errors import InputError
from ..runlog import RunLog

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupPaths:
    """Where the group level writes (one place for every name).

    Attributes
    ----------
    group : pathlib.Path
        ``OUTPUT_DIR/group``.
    model : pathlib.Path
        ``OUTPUT_DIR/group/model``: the fine-tuned (or from-scratch) checkpoint.
    bwas : pathlib.Path
        ``OUTPUT_DIR/group/bwas``: statmaps, memorization, fidelity and comparison tables.
    synthetic : pathlib.Path
        ``OUTPUT_DIR/synthetic``: the synthetic cohort's own derivatives dataset.
    work : pathlib.Path
        ``WORK_DIR/group``: the cohort stores.
    report : pathlib.Path
        ``OUTPUT_DIR/group.html``.
    split : pathlib.Path
        ``OUTPUT_DIR/group/split.tsv``: training and held-out participants.
    """

    group: Path
    model: Path
    bwas: Path
    synthetic: Path
    work: Path
    report: Path
    split: Path

    @classmethod
    def of(cls, config: Config) -> GroupPaths:
        """The paths of a run."""
        group = config.output_dir / "group"
        return cls(group=group, model=group / "model", bwas=group / "bwas",
                   synthetic=config.output_dir / "synthetic", work=config.work_dir / "group",
                   report=config.output_dir / "group.html", split=group / "split.tsv")

    @property
    def covariates(self) -> Path:
        """``OUTPUT_DIR/group/covariates.tsv`` (+ ``.json``): the cohort's typed covariates."""
        return self.group / "covariates.tsv"


@dataclass(frozen=True)
class SiteCohort:
    """The real site, as the later stages use it.

    Attributes
    ----------
    participants : pandas.DataFrame
        participants.tsv with the columns the group level models typed (conditions,
        ``--confound``, and age, sex, site when present; :mod:`bids_genbrain.covariates`),
        and ``<column>_flag`` for censored or ranged values.
    conditions : list of str
        What the model is conditioned on: ``--condition`` and the contrast.
    confounds : list of str
        Confounds of the BWAS: age, sex (when present and not the contrast), site when there
        are several, and ``--confound``.
    store : CohortStore
        Every image of ``--modality`` (all sessions), with the covariate columns.
    site : pandas.DataFrame
        ``store.table`` with the participants' categorical dtypes restored (one row per image).
    covariates : TypedCovariates
        What typing did to each of those columns (for the report).
    """

    participants: pd.DataFrame
    conditions: list[str]
    confounds: list[str]
    store: CohortStore
    site: pd.DataFrame
    covariates: TypedCovariates
    left_out: pd.DataFrame | None = None
    """Participants with images who were not selected (``participant_id``, ``reason``)."""

    @property
    def resolution(self) -> float:
        """Model grid (mm)."""
        return self.store.resolution

    def as_strings(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with categorical covariates as plain strings, as the design builder expects.

        Parameters
        ----------
        table : pandas.DataFrame
            Rows of the real or the synthetic cohort.

        Returns
        -------
        pandas.DataFrame
            A copy.
        """
        table = table.copy()
        for column in table.columns:
            if column in self.participants and isinstance(self.participants[column].dtype,
                                                          pd.CategoricalDtype):
                table[column] = table[column].astype("string")
        return table


def typed_covariates(config: Config, conditions: list[str]) -> TypedCovariates:
    """participants.tsv with the columns the group level models typed, each column's typing
    logged (a value that does not read stops the run here, naming file, column, line, value).

    Parameters
    ----------
    config : Config
    conditions : list of str
        ``--condition`` and the contrast.

    Returns
    -------
    TypedCovariates
        The conditions, ``--confound``, and ``age``, ``sex``, ``site`` (the default
        confounds) when present; every other column is left as written.

    Raises
    ------
    InputError
        A missing or malformed participants.tsv, a condition, contrast or confound that is not
        a column, or a value that does not read.
    """
    table = read_participants_table(config.bids_dir)
    columns = [c for c in table.raw.columns if c != "participant_id"]
    lower = [c.lower() for c in columns]
    missing = [c for c in conditions if c not in columns and c.lower() not in lower]
    if missing:
        raise InputError(f"{table.path}: no column(s) {missing} for --condition/--contrast;"
                         f" columns are {columns}")
    defaults = [c for c in ("age", "sex", "site") if c in lower]
    typed = type_covariates(table, [*conditions, *config.confound, *defaults])
    for column, typing in typed.columns.items():
        if typing.describe():
            LOGGER.warning("%s, column %r: %s", table.path.name, column, typing.describe())
    return typed


def site_confounds(table: pd.DataFrame, config: Config) -> list[str]:
    """Confounds of the BWAS design.

    Parameters
    ----------
    table : pandas.DataFrame
        Typed participants table.
    config : Config

    Returns
    -------
    list of str
        age, sex (when present and not the contrast), site when several, and ``--confound``.

    Raises
    ------
    InputError
        A ``--confound`` that is not a column.
    """
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


def one_image_per_participant(table: pd.DataFrame) -> np.ndarray:
    """Row indices keeping each participant's first session (BWAS needs independent rows).

    Parameters
    ----------
    table : pandas.DataFrame
        With ``participant_id`` and ``session_id`` columns.

    Returns
    -------
    ndarray of int
        Sorted row positions.
    """
    order = table.sort_values(["participant_id", "session_id"], na_position="first")
    return np.sort(order.drop_duplicates("participant_id").index.to_numpy())


def load_site_cohort(config: Config, paths: GroupPaths, log: RunLog) -> SiteCohort:
    """Check the columns and the modality, then gather the site's images into a store.

    Parameters
    ----------
    config : Config
        Validated; ``contrast`` is set.
    paths : GroupPaths
    log : RunLog
        Times the ``cohort`` step.

    Returns
    -------
    SiteCohort

    Raises
    ------
    InputError
        Unknown condition, contrast or confound columns, an unknown modality, or no image.
    """
    from ..cohort import build_cohort, find_images, modality_entities
    from ..selection import cohort_selection
    from ..model.checkpoint import read_config

    conditions = list(dict.fromkeys([*config.condition, config.contrast]))
    covariates = typed_covariates(config, conditions)
    log.record["covariates"] = covariates.summary().to_dict("records")
    participants = covariates.table
    confounds = site_confounds(participants, config)
    modelled = list(dict.fromkeys([*conditions, *confounds]))
    if config.model is not None:
        resolution = float(read_config(config.model)["architecture"]["resolution"])
    else:
        resolution = config.resolution
    modality_entities(config.modality)  # unknown modality names fail here, before any work

    roots = [config.output_dir, *config.derivatives]
    selection = cohort_selection(config.participant_label, config.exclude_participants)
    keep = left_out = None
    if selection.active:
        available = list(find_images(roots, config.modality, resolution)["participant_id"])
        keep = [p for p, k in zip(available, selection.keeps(available), strict=True) if k]
        left_out = selection.summary(available)
        log.record["cohort_selection"] = {"kept": sorted(set(keep)),
                                          "left_out": left_out.to_dict("records")}
    with log.step("cohort"):
        store = build_cohort(roots, paths.work / "cohort", modalities=[config.modality],
                             n_jobs=config.nprocs,
                             participants=participants.reset_index(drop=True),
                             conditions=modelled, resolution=resolution,
                             participant_ids=keep)
    LOGGER.info("cohort: %d %s image(s) of %d participant(s)", len(store.table),
                config.modality, store.table["participant_id"].nunique())
    write_covariates_table(covariates, paths.covariates,
                           store.table["participant_id"].drop_duplicates())
    site = store.table.copy()
    for column in modelled:
        if isinstance(participants[column].dtype, pd.CategoricalDtype):
            site[column] = pd.Categorical(site[column].astype("string"),
                                          categories=participants[column].cat.categories)
    return SiteCohort(participants=participants, conditions=conditions, confounds=confounds,
                      store=store, site=site, left_out=left_out,
                      covariates=covariates)
