"""Group level: fine-tune GenBrain on a site, generate a balanced synthetic cohort, BWAS maps.

The level is a chain of stages (:mod:`.pipeline`); each stage is a function in its own module
returning a small dataclass, so a caller (the BIDS-App, ``genbrain evaluate``, a benchmark) can
run or reuse any of them:

============================  =====================================  =====================
stage                         function                               returns
============================  =====================================  =====================
cohort                        :func:`.site.load_site_cohort`         :class:`SiteCohort`
plan                          :func:`.plan.plan_group_level`         :class:`GroupPlan`
train                         :func:`.synthesis.train_site_model`    :class:`TrainedModel`
sample                        :func:`.synthesis.sample_synthetic_cohort`  SyntheticCohort
gate                          :func:`.gate.privacy_gate`             :class:`PrivacyGate`
fidelity                      :func:`.fidelity.measure_fidelity`     :class:`Fidelity`
BWAS                          :func:`.bwas.run_bwas`                 :class:`BWASMaps`
compare                       :func:`.bwas.compare_with_reference`   :class:`Comparison`
report                        :func:`bids_genbrain.reports.group.write_group_report`  Path
============================  =====================================  =====================
"""

from .bwas import BWASMaps, Comparison, compare_with_reference, run_bwas
from .fidelity import Fidelity, measure_fidelity
from .gate import PrivacyGate, privacy_gate
from .pipeline import GroupResult, run_group_level
from .plan import GroupPlan, HoldoutSplit, plan_group_level
from .site import GroupPaths, SiteCohort, load_site_cohort
from .synthesis import SyntheticCohort, TrainedModel, sample_synthetic_cohort, train_site_model

__all__ = [
    "BWASMaps", "Comparison", "Fidelity", "GroupPaths", "GroupPlan", "GroupResult",
    "HoldoutSplit", "PrivacyGate", "SiteCohort", "SyntheticCohort", "TrainedModel",
    "compare_with_reference", "load_site_cohort", "measure_fidelity", "plan_group_level",
    "privacy_gate", "run_bwas", "run_group_level", "sample_synthetic_cohort",
    "train_site_model",
]
