"""Stage 5 of the group level: the privacy gate (synthetic copies of training participants).

The test is :func:`bids_genbrain.evaluate.privacy.check_memorization`: a synthetic image is a
copy when it is much closer to one training participant, and much more like them after
removing the training mean, than any real new person (the held-out participants, or each
training participant against the others) is to theirs. The paper's raw-r check (r >
``--privacy-threshold`` with any training image) is reported beside it, not used to exclude:
the template mean alone passes it on GM maps.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluate.privacy import COPY_MARGIN, MIN_HELDOUT_BASELINE, MemorizationCheck
from ..runlog import RunLog
from ..utils import atomic_write_text
from .plan import GroupPlan
from .site import GroupPaths, SiteCohort
from .synthesis import SyntheticCohort

LOGGER = logging.getLogger(__name__)

COLUMNS = {
    "synthetic_id": "Synthetic participant (synthetic/participants.tsv)",
    "nearest_training_id": "Training participant with the largest raw Pearson r",
    "max_r": "Largest raw Pearson r with a training image (the GenBrain paper's check)",
    "raw_r_copy": "max_r above --privacy-threshold (reported only: the training mean passes "
                  "it on GM maps)",
    "dcr": "Distance to the closest training record: RMS difference over the brain voxels "
           "(the site store's units: [0, 1] per modality; synthetic images rescaled into "
           "them)",
    "dcr_training_id": "The closest training participant",
    "residual_r": "Pearson r with the closest training image after removing the training mean",
    "max_residual_r": "Largest mean-removed r with any training image",
    "max_residual_training_id": "Its training participant",
    "flagged": "Excluded as a copy: dcr below the dcr cut and residual_r above the residual "
               "cut (see DCRCut, ResidualRCut)",
}


@dataclass(frozen=True)
class PrivacyGate:
    """Which synthetic images pass.

    Attributes
    ----------
    check : MemorizationCheck
        Per synthetic image and per baseline image, with the cuts.
    kept : ndarray of int
        Synthetic store rows that passed.
    """

    check: MemorizationCheck
    kept: np.ndarray

    @property
    def memorization(self) -> pd.DataFrame:
        """One row per synthetic image (``group/bwas/memorization.tsv``); ``flagged`` =
        excluded."""
        return self.check.table

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
        ``privacy_threshold`` is the paper's raw-r threshold (reported).
    site, plan, synthetic, paths
    log : RunLog
        Times the ``privacy`` step.

    Returns
    -------
    PrivacyGate
        Also written to ``group/bwas/memorization.tsv`` (+ ``.json``: columns, cuts, baseline)
        and ``group/bwas/memorization_baseline.tsv``.
    """
    from ..cohort import rescaled_rows
    from ..evaluate.privacy import check_memorization

    ids = site.store.table["participant_id"].astype(str).to_numpy()
    with log.step("privacy"):
        # one unit: each store maps a non-probability modality (GMmod, T1w) to [0, 1] by its
        # own percentiles, so distances need the synthetic images in the site's units
        synthetic_data = rescaled_rows(synthetic.store, site.store,
                                       paths.work / "synthetic_in_site_units.f32")
        check = check_memorization(
            synthetic_data, site.store.data,
            training_rows=plan.training_rows, training_ids=list(ids[plan.training_rows]),
            synthetic_ids=list(synthetic.store.table["participant_id"]),
            heldout_rows=plan.heldout_rows, heldout_ids=list(ids[plan.heldout_rows]),
            raw_threshold=config.privacy_threshold)
        paths.bwas.mkdir(parents=True, exist_ok=True)
        memo = paths.bwas / "memorization.tsv"
        atomic_write_text(memo, check.table.to_csv(sep="\t", index=False, na_rep="n/a"))
        atomic_write_text(paths.bwas / "memorization_baseline.tsv",
                          check.baseline.to_csv(sep="\t", index=False, na_rep="n/a"))
        atomic_write_text(memo.with_suffix(".json"), json.dumps({
            **{c: {"Description": d} for c, d in COLUMNS.items()},
            "DCRCut": check.dcr_cut, "ResidualRCut": check.residual_r_cut,
            "CopyMargin": COPY_MARGIN,
            "Baseline": {"Table": "memorization_baseline.tsv",
                         "Sources": sorted(set(check.baseline["source"])),
                         "N": len(check.baseline),
                         "Rule": ("held-out participants against the training images; the "
                                  "training images against other participants' images join "
                                  f"when fewer than {MIN_HELDOUT_BASELINE} images are held "
                                  "out")},
            "RawRThreshold": config.privacy_threshold,
        }, indent=2) + "\n")
        kept = np.flatnonzero(~check.flagged)
        if len(kept) < len(check.table):
            LOGGER.warning("privacy gate: %d synthetic image(s) excluded as copies of a "
                           "training participant", len(check.table) - len(kept))
    return PrivacyGate(check=check, kept=kept)
