"""Stages 7 and 8 of the group level: BWAS maps of both cohorts, agreement with a reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import pandas as pd

from ..config import Config
from ..errors import InputError
from ..runlog import RunLog
from ..stats.glm import Design, GLMResult
from ..utils import atomic_write_text
from .fidelity import Fidelity
from .gate import PrivacyGate
from .plan import GroupPlan, synthetic_design
from .site import GroupPaths, SiteCohort
from .synthesis import SyntheticCohort, TrainedModel

N_BOOT = 200
"""Bootstrap draws of the real sample for the comparison's confidence intervals."""


@dataclass(frozen=True)
class BWASMaps:
    """The contrast's voxel-wise GLM in the real and the synthetic cohort.

    Attributes
    ----------
    real, synthetic : GLMResult
    synthetic_table : pandas.DataFrame
        Conditions of the synthetic images that passed the gate (strings), in design order.
    statmaps : dict
        ``{"real": {stat: path}, "synthetic": {stat: path}}`` in ``group/bwas``.
    """

    real: GLMResult
    synthetic: GLMResult
    synthetic_table: pd.DataFrame
    statmaps: dict[str, dict[str, Path]]


@dataclass(frozen=True)
class Comparison:
    """Agreement of both d maps with ``--reference-map``.

    Attributes
    ----------
    table : pandas.DataFrame
        ``metric``, ``real``, ``real_ci_low``, ``real_ci_high``, ``synthetic``.
    path : pathlib.Path
        ``group/bwas/contrast-<label>_comparison.tsv``.
    """

    table: pd.DataFrame
    path: Path


def contrast_label(text: str) -> str:
    """The BIDS label of a column name (alphanumerics only)."""
    return "".join(ch for ch in text if ch.isalnum())


def run_bwas(config: Config, site: SiteCohort, plan: GroupPlan, model: TrainedModel,
             synthetic: SyntheticCohort, gate: PrivacyGate, fidelity: Fidelity,
             paths: GroupPaths, log: RunLog) -> BWASMaps:
    """Fit the contrast voxel-wise in both cohorts and write the t, p, d, q statmaps.

    The synthetic maps' sidecars carry the contrast's conditional fidelity and, when the model
    did not demonstrably learn the contrast, a ``Warning`` that the map is not to be trusted;
    either map's sidecars carry a ``StabilityWarning`` when its design leaves too few residual
    degrees of freedom (:func:`bids_genbrain.evaluate.fidelity.design_stability`).

    Parameters
    ----------
    config, site, plan, model, synthetic, gate, fidelity, paths
    log : RunLog
        Times the ``bwas`` step.

    Returns
    -------
    BWASMaps
    """
    from ..evaluate.fidelity import design_stability
    from ..stats.glm import fit_glm, write_statmaps

    with log.step("bwas"):
        synth_table = site.as_strings(
            synthetic.store.table.iloc[gate.kept].reset_index(drop=True))
        design: Design = (plan.synthetic_design if len(gate.kept) == len(plan.wanted) else
                          synthetic_design(site, synth_table, config.contrast,
                                           plan.synthetic_confounds))
        real_fit = fit_glm(site.store.data, plan.real_design, rows=plan.real_rows, progress=True)
        synth_fit = fit_glm(synthetic.store.data, design, rows=gate.kept, progress=True)
        common = {"Modality": config.modality, "ModelDirectory": "group/model",
                  "TrainedFromScratch": model.from_scratch}
        metadata = {
            "real": {**common, "Cohort": "real site sample"},
            "synthetic": {**common, "Cohort": "synthetic (privacy-filtered)",
                          "ExcludedCopies": gate.n_excluded, **fidelity.sidecar()},
        }
        fits = {"real": real_fit, "synthetic": synth_fit}
        mask = site.store.mask()
        statmaps = {}
        for desc, fit in fits.items():
            stability = design_stability(fit.design)
            extra = {"NullSDOfD": stability.null_sd_d if stability.null_sd_d < float("inf")
                     else None}
            if not stability.stable:
                extra["StabilityWarning"] = stability.message
            statmaps[desc] = write_statmaps(fit, paths.bwas, desc=desc,
                                            resolution=site.resolution, mask=mask,
                                            metadata={**metadata[desc], **extra})
    return BWASMaps(real=real_fit, synthetic=synth_fit, synthetic_table=synth_table,
                    statmaps=statmaps)


def compare_with_reference(config: Config, site: SiteCohort, plan: GroupPlan, bwas: BWASMaps,
                           paths: GroupPaths, log: RunLog) -> Comparison | None:
    """Agreement of the real and synthetic d maps with ``--reference-map``, with bootstrap CIs.

    The interval of the real map comes from resampling the real participants; the synthetic
    map's row is its agreement as generated.

    Parameters
    ----------
    config, site, plan, bwas, paths
    log : RunLog
        Times the ``comparison`` step.

    Returns
    -------
    Comparison or None
        None without ``--reference-map``.

    Raises
    ------
    InputError
        The reference map cannot be read or resampled to the model grid.
    """
    if config.reference_map is None:
        return None
    from ..stats.compare import bootstrap_comparison, compare_maps, reference_vector

    with log.step("comparison"):
        try:
            reference = reference_vector(nb.load(config.reference_map),
                                         resolution=site.resolution, mask=site.store.mask())
        except Exception as exc:  # noqa: BLE001 - any unreadable map is a user input problem
            raise InputError(f"{config.reference_map}: cannot be used as --reference-map "
                             f"({exc})") from None
        boot = bootstrap_comparison(site.store.data, plan.real_table, reference,
                                    rows=plan.real_rows, contrast=config.contrast,
                                    confounds=site.confounds, n_boot=N_BOOT, seed=config.seed)
        synth = compare_maps(bwas.synthetic.d, reference)
        real = compare_maps(bwas.real.d, reference)
        rows = []
        for metric, value in real.items():
            ci = boot.summary.loc[metric]
            rows.append({"metric": metric, "real": value, "real_ci_low": ci["ci_low"],
                         "real_ci_high": ci["ci_high"], "synthetic": synth[metric]})
        table = pd.DataFrame(rows)
        path = atomic_write_text(
            paths.bwas / f"contrast-{contrast_label(config.contrast)}_comparison.tsv",
            table.to_csv(sep="\t", index=False, na_rep="n/a"))
    return Comparison(table=table, path=path)
