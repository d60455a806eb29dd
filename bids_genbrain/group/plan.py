"""Stage 2 of the group level: the designs and the synthetic cohort's conditions, before training.

Every design is built here once and checked, so that a contrast that cannot be tested fails
before any training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import InputError
from ..stats.glm import Design, DesignError, make_design
from .site import SiteCohort, one_image_per_participant


@dataclass(frozen=True)
class GroupPlan:
    """What the run will train on, generate and test.

    Attributes
    ----------
    real_rows : ndarray of int
        Store rows of the real BWAS: each participant's first session, complete contrast and
        confounds.
    real_table : pandas.DataFrame
        Those rows (categorical columns as strings), in the order of ``real_rows``.
    real_design : Design
        The real BWAS design (contrast and confounds).
    training_rows : ndarray of int
        Store rows the model trains on (every image).
    wanted : pandas.DataFrame
        Conditions of the synthetic cohort, one row per image (typed as the site).
    synthetic_confounds : list of str
        The confounds of the BWAS that the synthetic cohort has (no site).
    synthetic_design : Design
        The synthetic BWAS design on every row of ``wanted``.
    """

    real_rows: np.ndarray
    real_table: pd.DataFrame
    real_design: Design
    training_rows: np.ndarray
    wanted: pd.DataFrame
    synthetic_confounds: list[str]
    synthetic_design: Design


def synthetic_design(site: SiteCohort, table: pd.DataFrame, contrast: str,
                     confounds: list[str]) -> Design:
    """The BWAS design of a synthetic cohort's conditions.

    Parameters
    ----------
    site : SiteCohort
    table : pandas.DataFrame
        Synthetic conditions (typed or strings).
    contrast : str
    confounds : list of str

    Returns
    -------
    Design

    Raises
    ------
    InputError
        The design is not estimable.
    """
    try:
        return make_design(site.as_strings(table), contrast, confounds)
    except DesignError as exc:
        raise InputError(f"BWAS design of the synthetic cohort: {exc}") from None


def plan_group_level(config: Config, site: SiteCohort) -> GroupPlan:
    """Build and check the real and synthetic designs; choose the synthetic conditions.

    Parameters
    ----------
    config : Config
    site : SiteCohort

    Returns
    -------
    GroupPlan

    Raises
    ------
    InputError
        A contrast that is not testable in the real or the synthetic cohort, or a bad
        ``--synthetic-conditions`` TSV.
    """
    from ..synthetic import balanced_conditions, read_conditions_tsv

    store = site.store
    rows = one_image_per_participant(store.table)
    real_table = site.as_strings(store.table.iloc[rows].reset_index(drop=True))
    complete = real_table.dropna(subset=[config.contrast, *site.confounds]).index.to_numpy()
    real_table, rows = real_table.iloc[complete].reset_index(drop=True), rows[complete]
    try:
        real_design = make_design(real_table, config.contrast, site.confounds)
    except DesignError as exc:
        raise InputError(f"BWAS design for --contrast {config.contrast!r}: {exc}") from None

    if config.synthetic_conditions is not None:
        wanted = read_conditions_tsv(config.synthetic_conditions, site.conditions, site.site)
    else:
        wanted = balanced_conditions(site.site, site.conditions, config.n_synthetic,
                                     contrast=config.contrast, seed=config.seed)
    synth_confounds = [c for c in site.confounds if c in wanted.columns]
    design = synthetic_design(site, wanted, config.contrast, synth_confounds)
    return GroupPlan(real_rows=rows, real_table=real_table, real_design=real_design,
                     training_rows=np.arange(len(store)), wanted=wanted,
                     synthetic_confounds=synth_confounds, synthetic_design=design)
