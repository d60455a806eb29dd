"""The group level as a chain of stages, each a function returning a small dataclass.

    cohort -> plan -> train -> sample -> gate -> fidelity -> BWAS -> compare -> report

1. :func:`~.site.load_site_cohort`: the site's MNI-space maps of ``--modality``
   (participant-level outputs in OUTPUT_DIR and any ``--derivatives``) into an on-disk store,
   with the conditions from participants.tsv (:class:`~.site.SiteCohort`);
2. :func:`~.plan.plan_group_level`: the real and synthetic BWAS designs, built once and checked
   before any training, the held-out participants (``--holdout``), and the synthetic cohort's
   conditions (``--n-synthetic`` balanced over ``--contrast`` with the site's age/sex
   distribution, or ``--synthetic-conditions``) (:class:`~.plan.GroupPlan`);
3. :func:`~.synthesis.train_site_model`: fine-tune ``--model`` (new condition embedders keep the
   pretrained function at step 0) or, without it, train a ``--preset`` model from scratch
   (GenBrain-st), on every participant but the held-out ones (``group/split.tsv``), into
   ``OUTPUT_DIR/group/model`` (:class:`~.synthesis.TrainedModel`);
4. :func:`~.synthesis.sample_synthetic_cohort`: the synthetic cohort in ``OUTPUT_DIR/synthetic``
   (its own derivatives dataset) (:class:`~.synthesis.SyntheticCohort`);
5. :func:`~.gate.privacy_gate`: every synthetic image against every training image (distance to
   the closest record and mean-removed r, against real new people); copies are excluded and
   reported (:class:`~.gate.PrivacyGate`);
6. :func:`~.fidelity.measure_fidelity`: every condition's synthetic effect map against the real
   one (held-out participants when there are any) (:class:`~.fidelity.Fidelity`);
7. :func:`~.bwas.run_bwas`: voxel-wise GLM of the contrast with confounds, for the real and the
   synthetic cohort (t, p, d, q statmaps in ``OUTPUT_DIR/group/bwas``, the synthetic ones
   saying whether the contrast was learned) (:class:`~.bwas.BWASMaps`);
8. :func:`~.bwas.compare_with_reference`: both d maps against ``--reference-map``
   (:class:`~.bwas.Comparison`);
9. :func:`bids_genbrain.reports.group.write_group_report`: ``OUTPUT_DIR/group.html``.

Every stage resumes: a rerun with the same options reuses the finished training state and
synthetic images; the other stages are cheap and are recomputed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..runlog import RunLog
from .bwas import BWASMaps, Comparison, compare_with_reference, run_bwas
from .fidelity import Fidelity, measure_fidelity
from .gate import PrivacyGate, privacy_gate
from .plan import GroupPlan, plan_group_level
from .site import GroupPaths, SiteCohort, load_site_cohort
from .synthesis import SyntheticCohort, TrainedModel, sample_synthetic_cohort, train_site_model

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupResult:
    """Everything the group level produced: the result of each stage.

    Attributes
    ----------
    paths : GroupPaths
    site : SiteCohort
    plan : GroupPlan
    model : TrainedModel
    synthetic : SyntheticCohort
    gate : PrivacyGate
    fidelity : Fidelity
    bwas : BWASMaps
    comparison : Comparison or None
    report : pathlib.Path
    """

    paths: GroupPaths
    site: SiteCohort
    plan: GroupPlan
    model: TrainedModel
    synthetic: SyntheticCohort
    gate: PrivacyGate
    fidelity: Fidelity
    bwas: BWASMaps
    comparison: Comparison | None
    report: Path

    def summary(self) -> str:
        """One line for the terminal: the synthetic cohort, whether the contrast was learned,
        and where the report is."""
        effects = "; ".join(f"{row.contrast} (r of d maps {row.r_d:.2f}, {row.status})"
                            for row in self.fidelity.contrast_rows.itertuples())
        return (f"group level: {len(self.gate.kept)} synthetic image(s) kept of "
                f"{len(self.synthetic.participants)} ({self.gate.n_excluded} excluded as "
                f"copies); synthetic vs real "
                f"{effects or self.fidelity.contrast + ' (not measured)'}; report in "
                f"{self.report}")


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
    import torch

    from ..reports.group import write_group_report

    torch.set_num_threads(config.omp_nthreads)  # --omp-nthreads bounds the model's CPU threads
    paths = GroupPaths.of(config)
    site = load_site_cohort(config, paths, log)
    plan = plan_group_level(config, site)
    LOGGER.info("plan: %d real image(s) in the BWAS; the model trains on %d, %d held out; "
                "%d synthetic image(s) to sample", len(plan.real_rows), len(plan.training_rows),
                len(plan.heldout_rows), len(plan.wanted))
    model = train_site_model(config, site, plan, paths, log)
    LOGGER.info("model: %s, %d step(s), in %s",
                "trained from scratch" if model.from_scratch else f"fine-tuned from "
                f"{config.model}", config.steps, model.directory)
    synthetic = sample_synthetic_cohort(config, site, plan, model, paths, log)
    gate = privacy_gate(config, site, plan, synthetic, paths, log)
    LOGGER.info("privacy gate: %d of %d synthetic image(s) kept", len(gate.kept),
                len(synthetic.participants))
    fidelity = measure_fidelity(config, site, plan, synthetic, gate, paths, log)
    for row in fidelity.table.itertuples():
        LOGGER.info("fidelity of %s (%s): r of d maps %.3f, cosine of t maps %.3f: %s",
                    row.condition, row.contrast, row.r_d, row.cosine_t, row.status)
    if warning := fidelity.warning():
        LOGGER.warning(warning)
    bwas = run_bwas(config, site, plan, model, synthetic, gate, fidelity, paths, log)
    LOGGER.info("BWAS statmaps of %s (real and synthetic) in %s", config.contrast, paths.bwas)
    comparison = compare_with_reference(config, site, plan, bwas, paths, log)
    if comparison is not None:
        LOGGER.info("against %s: %s", config.reference_map, "; ".join(
            f"{row.metric} real {row.real:.3f} [{row.real_ci_low:.3f}, {row.real_ci_high:.3f}],"
            f" synthetic {row.synthetic:.3f}" for row in comparison.table.itertuples()))
    report = write_group_report(config, site=site, plan=plan, model=model, synthetic=synthetic,
                                gate=gate, fidelity=fidelity, bwas=bwas, comparison=comparison,
                                out=paths.report)
    LOGGER.info("report: %s", report)
    return GroupResult(paths=paths, site=site, plan=plan, model=model, synthetic=synthetic,
                       gate=gate, fidelity=fidelity, bwas=bwas, comparison=comparison,
                       report=report)
