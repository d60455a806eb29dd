"""Stage 6 of the group level: conditional fidelity of every condition of the model.

The measures are :func:`bids_genbrain.evaluate.fidelity.condition_fidelity` (the same code
``genbrain evaluate`` runs); this stage chooses the cohorts: the synthetic images that passed
the privacy gate against the held-out real participants when there are any (and the training
participants as a second real cohort), else against the training participants (in-sample).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Config
from ..evaluate.fidelity import LEARNED_R, EffectCohort, condition_fidelity
from ..runlog import RunLog
from ..utils import atomic_write_text
from .gate import PrivacyGate
from .plan import GroupPlan
from .site import GroupPaths, SiteCohort
from .synthesis import SyntheticCohort

HELDOUT = "held-out real participants"
TRAINING = "training participants"
IN_SAMPLE = "real participants (the training set: in-sample)"


@dataclass(frozen=True)
class Fidelity:
    """Conditional fidelity of the run.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per effect (:func:`bids_genbrain.evaluate.fidelity.condition_fidelity`).
    path : pathlib.Path
        ``group/bwas/fidelity.tsv`` (with a JSON sidecar describing the columns).
    real_cohort : str
        What the synthetic maps were held against.
    contrast : str
        The BWAS contrast column.
    """

    table: pd.DataFrame
    path: Path
    real_cohort: str
    contrast: str

    @property
    def contrast_rows(self) -> pd.DataFrame:
        """The rows of the BWAS contrast."""
        return self.table[self.table["condition"] == self.contrast]

    @property
    def contrast_trusted(self) -> bool:
        """Whether every effect of the contrast was learned."""
        rows = self.contrast_rows
        return bool(len(rows)) and bool((rows["status"] == "learned").all())

    def warning(self) -> str:
        """Why the synthetic BWAS map is not to be trusted ('' when it is)."""
        if self.contrast_trusted:
            return ""
        reasons = "; ".join(self.contrast_rows["reason"]) or \
            f"{self.contrast} was not measured"
        return (f"Do not trust this synthetic BWAS map: the model did not demonstrably learn "
                f"{self.contrast} ({reasons}).")

    def sidecar(self) -> dict[str, Any]:
        """Fields for the synthetic statmaps' JSON sidecars."""
        effects = [{"Contrast": row["contrast"], "RealCohort": self.real_cohort,
                    "PearsonRDMaps": _json_float(row["r_d"]),
                    "CosineTMaps": _json_float(row["cosine_t"]), "Status": row["status"]}
                   for _, row in self.contrast_rows.iterrows()]
        fields: dict[str, Any] = {"ConditionalFidelity": {
            "Condition": self.contrast, "Effects": effects, "LearnedThreshold": LEARNED_R,
            "Table": "group/bwas/fidelity.tsv"}}
        warning = self.warning()
        if warning:
            fields["Warning"] = warning
        return fields


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


COLUMN_DESCRIPTIONS = {
    "condition": "Condition of the model (participants.tsv column)",
    "contrast": "The effect: a level against the first level, or a continuous slope",
    "kind": "two-group or continuous",
    "real_cohort": "The real participants the synthetic map is held against",
    "n_real": "Images in the real effect map",
    "n_synthetic": "Synthetic images in the synthetic effect map (after the privacy gate)",
    "df_real": "Residual degrees of freedom of the real map",
    "df_synthetic": "Residual degrees of freedom of the synthetic map",
    "r_d": "Pearson r of the synthetic and real Cohen's d maps",
    "cosine_t": "Cosine similarity of the synthetic and real t maps",
    "r_d_ceiling": "Largest r_d a noise-free map of the true effect could reach against this "
                   "real map: sqrt(1 - null SD of d^2 / SD of the real d map^2) (an estimate)",
    "status": f"learned (r_d >= {LEARNED_R}), not learned, or not measured (not estimable, "
              f"or r_d_ceiling below {LEARNED_R}: no real effect to check against)",
    "reason": "Why, in a sentence",
    "r_d_second": "Pearson r of the synthetic d map with the training participants' d map",
    "cosine_t_second": "Cosine of the synthetic t map with the training participants' t map",
    "r_d_real_split": "Pearson r of the held-out and training participants' d maps (how "
                      "reproducible the real effect is at these sizes)",
}


def measure_fidelity(config: Config, site: SiteCohort, plan: GroupPlan,
                     synthetic: SyntheticCohort, gate: PrivacyGate, paths: GroupPaths,
                     log: RunLog) -> Fidelity:
    """Effect map of every condition, synthetic against real (see the module docstring).

    Parameters
    ----------
    config, site, plan, synthetic, gate, paths
    log : RunLog
        Times the ``fidelity`` step.

    Returns
    -------
    Fidelity
        Also written to ``group/bwas/fidelity.tsv``.
    """
    import numpy as np

    store = site.store
    first = plan.real_rows  # one image per participant
    ids = store.table["participant_id"].astype(str).to_numpy()
    held = np.isin(ids[first], plan.holdout.heldout)
    extra = tuple(c for c in site.confounds if c not in site.conditions)

    def cohort(rows: np.ndarray, name: str) -> EffectCohort:
        table = site.as_strings(store.table.iloc[rows].reset_index(drop=True))
        present = tuple(c for c in extra if table[c].nunique(dropna=True) > 1)
        return EffectCohort(store.data, table, rows=rows, confounds=present, name=name)

    synth = EffectCohort(synthetic.store.data,
                         site.as_strings(synthetic.store.table.iloc[gate.kept]
                                         .reset_index(drop=True)),
                         rows=gate.kept, name="synthetic cohort")
    with log.step("fidelity"):
        if held.any():
            real, second = cohort(first[held], HELDOUT), cohort(first[~held], TRAINING)
        else:
            real, second = cohort(first, IN_SAMPLE), None
        table = condition_fidelity(real, synth, site.conditions, second_real=second)
        path = atomic_write_text(paths.bwas / "fidelity.tsv",
                                 table.to_csv(sep="\t", index=False, na_rep="n/a"))
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {c: {"Description": COLUMN_DESCRIPTIONS[c]} for c in table.columns
             if c in COLUMN_DESCRIPTIONS}, indent=2) + "\n")
    return Fidelity(table=table, path=path, real_cohort=real.name, contrast=config.contrast)
