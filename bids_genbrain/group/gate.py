"""Stage 5 of the group level: the privacy gate (synthetic copies of training images)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import Config
from ..runlog import RunLog
from ..utils import atomic_write_text
from .plan import GroupPlan
from .site import GroupPaths, SiteCohort
from .synthesis import SyntheticCohort

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrivacyGate:
    """Which synthetic images pass.

    Attributes
    ----------
    memorization : pandas.DataFrame
        One row per synthetic image (``group/bwas/memorization.tsv``), ``flagged`` = excluded.
    kept : ndarray of int
        Synthetic store rows that passed.
    """

    memorization: pd.DataFrame
    kept: np.ndarray

    @property
    def n_excluded(self) -> int:
        """Synthetic images excluded as copies."""
        return int(len(self.memorization) - len(self.kept))


def privacy_gate(config: Config, site: SiteCohort, plan: GroupPlan, synthetic: SyntheticCohort,
                 paths: GroupPaths, log: RunLog) -> PrivacyGate:
    """Compare every synthetic image with every training image; exclude copies.

    Parameters
    ----------
    config : Config
        ``privacy_threshold`` is the largest allowed Pearson r.
    site, plan, synthetic, paths
    log : RunLog
        Times the ``privacy`` step.

    Returns
    -------
    PrivacyGate
        Also written to ``group/bwas/memorization.tsv``.
    """
    from ..evaluate.privacy import memorization_table

    with log.step("privacy"):
        memo = memorization_table(
            synthetic.store.data, site.store.data,
            synthetic_ids=list(synthetic.store.table["participant_id"]),
            training_ids=list(site.store.table["participant_id"]),
            threshold=config.privacy_threshold)
        paths.bwas.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.bwas / "memorization.tsv",
                          memo.to_csv(sep="\t", index=False, na_rep="n/a"))
        kept = np.flatnonzero(~memo["flagged"].to_numpy())
        if len(kept) < len(memo):
            LOGGER.warning("privacy gate: %d synthetic image(s) excluded as copies (r > %g)",
                           len(memo) - len(kept), config.privacy_threshold)
    return PrivacyGate(memorization=memo, kept=kept)
