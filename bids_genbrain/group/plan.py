"""Stage 2 of the group level: designs, held-out participants and synthetic conditions.

Every design is built here once and checked, so that a contrast that cannot be tested fails
before any training.

Held-out participants
---------------------
Conditional fidelity and the memorization baseline are measured on real participants the model
never saw, when the site is large enough (``--holdout``):

``auto`` (default)
    Hold out ``HOLDOUT_FRACTION`` (20 %) of the participants of the real BWAS, stratified by
    the contrast's levels (a continuous contrast: of all of them), when that holds out at least
    ``MIN_HELDOUT_PER_LEVEL`` (10) participants of every level (20 in all for a continuous
    contrast), i.e. from 50 participants per group. A held-out map of fewer people is too noisy
    to judge a synthetic map against, and a small site needs every participant for training;
    below that nothing is held out and fidelity is measured against the training participants
    (in-sample: the report says so).
``none``
    Nothing held out.
``FRACTION``
    Hold out that fraction of every level (at least one participant each), leaving at least
    two in training.

All images (every session) of a held-out participant are held out; the choice is seeded by
``--seed`` and recorded in ``group/split.tsv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import InputError
from ..stats.glm import Design, DesignError, make_design
from ..utils import atomic_write_text
from .site import SiteCohort, one_image_per_participant


HOLDOUT_FRACTION = 0.2
"""Share of the participants ``--holdout auto`` holds out."""

MIN_HELDOUT_PER_LEVEL = 10
"""Held-out participants every contrast level needs for ``--holdout auto`` to hold out."""


@dataclass(frozen=True)
class HoldoutSplit:
    """Participants kept out of training.

    Attributes
    ----------
    heldout : list of str
        ``participant_id`` of the held-out participants (sorted).
    rule : str
        The rule applied, in a sentence (for the report and ``group/split.tsv``'s sidecar).
    fraction : float
        Share held out (0 when none).
    """

    heldout: list[str] = field(default_factory=list)
    rule: str = ""
    fraction: float = 0.0


def choose_holdout(real_table: pd.DataFrame, design: Design, setting: str,
                   seed: int) -> HoldoutSplit:
    """Pick the held-out participants (see the module docstring).

    Parameters
    ----------
    real_table : pandas.DataFrame
        One row per participant of the real BWAS (``participant_id``, the contrast column).
    design : Design
        The real BWAS design (its kind and levels stratify the choice).
    setting : str
        ``auto``, ``none`` or a fraction.
    seed : int

    Returns
    -------
    HoldoutSplit

    Raises
    ------
    InputError
        A fraction that leaves fewer than two training participants of a level.
    """
    if setting == "none":
        return HoldoutSplit(rule="none held out (--holdout none)")
    if design.kind == "two-group":
        strata = real_table[design.variable].astype(str)
        levels, per_level = list(design.levels), MIN_HELDOUT_PER_LEVEL
    else:
        strata = pd.Series("all", index=real_table.index)
        levels, per_level = ["all"], 2 * MIN_HELDOUT_PER_LEVEL
    sizes = {lev: int((strata == lev).sum()) for lev in levels}
    if setting == "auto":
        fraction = HOLDOUT_FRACTION
        counts = {lev: int(np.floor(fraction * n)) for lev, n in sizes.items()}
        if min(counts.values()) < per_level:
            return HoldoutSplit(rule=(
                f"none held out (--holdout auto holds out {fraction:.0%} when that gives at "
                f"least {per_level} participants per {'group' if len(levels) > 1 else 'site'};"
                f" this site has {', '.join(f'{n} {lev}' for lev, n in sizes.items())})"))
    else:
        fraction = float(setting)
        counts = {lev: max(1, int(round(fraction * n))) for lev, n in sizes.items()}
        short = [lev for lev, n in sizes.items() if n - counts[lev] < 2]
        if short:
            raise InputError(f"--holdout {setting} leaves fewer than 2 training participants "
                             f"of {short} (sizes {sizes}); use a smaller fraction or none")
    rng = np.random.default_rng([seed, 0x4E1D])
    heldout: list[str] = []
    for lev in levels:
        ids = sorted(real_table.loc[strata == lev, "participant_id"].astype(str))
        heldout += [ids[i] for i in rng.choice(len(ids), size=counts[lev], replace=False)]
    per = ", ".join(f"{counts[lev]} of {sizes[lev]} {lev}" for lev in levels)
    return HoldoutSplit(heldout=sorted(heldout), fraction=fraction, rule=(
        f"{fraction:.0%} held out (--holdout {setting}), stratified by {design.variable}: {per}"
        if len(levels) > 1 else f"{fraction:.0%} held out (--holdout {setting}): {per}"))


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
    holdout : HoldoutSplit
        Participants kept out of training.
    training_rows : ndarray of int
        Store rows the model trains on: every image of the other participants.
    heldout_rows : ndarray of int
        Store rows of the held-out participants (every session).
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
    holdout: HoldoutSplit
    training_rows: np.ndarray
    heldout_rows: np.ndarray
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
        A contrast that is not testable in the real or the synthetic cohort, a bad
        ``--synthetic-conditions`` TSV, or a ``--holdout`` fraction too large for the site.
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
    holdout = choose_holdout(real_table, real_design, config.holdout, config.seed)
    held = store.table["participant_id"].astype(str).isin(holdout.heldout).to_numpy()
    return GroupPlan(real_rows=rows, real_table=real_table, real_design=real_design,
                     holdout=holdout, training_rows=np.flatnonzero(~held),
                     heldout_rows=np.flatnonzero(held), wanted=wanted,
                     synthetic_confounds=synth_confounds, synthetic_design=design)


def write_split(site: SiteCohort, plan: GroupPlan, out: Path, seed: int) -> Path:
    """Record which participants trained the model and which were held out.

    Parameters
    ----------
    site : SiteCohort
    plan : GroupPlan
    out : pathlib.Path
        ``group/split.tsv``; a JSON sidecar gives the rule and the seed.
    seed : int

    Returns
    -------
    pathlib.Path
    """
    ids = site.store.table["participant_id"].astype(str)
    table = (ids.to_frame().assign(images=1).groupby("participant_id", as_index=False)
             ["images"].sum())
    table.insert(1, "split", np.where(table["participant_id"].isin(plan.holdout.heldout),
                                      "held-out", "training"))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(sep="\t", index=False))
    atomic_write_text(out.with_suffix(".json"), json.dumps({
        "participant_id": {"Description": "Participant of the site's cohort store"},
        "split": {"Description": "training: every image trained the model; held-out: no image "
                                 "of this participant reached training",
                  "Levels": {"training": "used in training", "held-out": "never trained on"}},
        "images": {"Description": "Images of --modality in the cohort store"},
        "Rule": plan.holdout.rule, "Seed": seed, "TrainingImages": int(plan.training_rows.size),
        "HeldOutImages": int(plan.heldout_rows.size),
    }, indent=2) + "\n")
    return out
