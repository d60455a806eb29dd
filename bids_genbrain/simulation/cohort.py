"""Who is scanned where: sites (scanner profiles) and participants (covariates, sessions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .anatomy import BASE_INTENSITY
from .config import SimulationConfig

SCORE_MEAN = 100.0
SCORE_SD = 15.0
"""Continuous score of controls: mean and standard deviation."""

_SCANNERS = (
    ("Siemens", "Prisma", 3.0),
    ("GE", "Discovery MR750", 3.0),
    ("Philips", "Ingenia", 1.5),
    ("Siemens", "Skyra", 3.0),
    ("Philips", "Achieva", 3.0),
    ("GE", "Signa HDxt", 1.5),
)

PROTOCOLS = {
    # RepetitionTime (s), EchoTime (s), InversionTime (s) or None, FlipAngle (deg)
    "T1w": (2.3, 0.00298, 0.9, 9),
    "T2w": (3.2, 0.409, None, 120),
    "FLAIR": (5.0, 0.388, 1.8, 120),
}


@dataclass(frozen=True)
class Site:
    """A scanner: what it writes in sidecars and how it changes intensities.

    Attributes
    ----------
    label : str
        ``site1``, ``site2`` ...
    manufacturer, model : str
    field_strength : float
        Tesla.
    gain : float
        Global intensity scale.
    intensity : dict
        Modality -> tissue -> intensity (base contrast times a site factor times ``gain``).
    noise : float
        Rician noise level as a fraction of the brightest brain tissue.
    bias : float
        Bias field strength.
    gm_bias : float
        Multiplicative bias of the site's GM estimates (``derivatives/mnimaps`` only).
    """

    label: str
    manufacturer: str
    model: str
    field_strength: float
    gain: float
    intensity: dict[str, dict[str, float]]
    noise: float
    bias: float
    gm_bias: float


def draw_sites(config: SimulationConfig) -> list[Site]:
    """Scanner profiles of the ``config.n_sites`` sites (one random stream per site)."""
    acq = config.acquisition
    sites = []
    for k in range(config.n_sites):
        rng = np.random.default_rng([config.seed, 1, k])
        manufacturer, model, tesla = _SCANNERS[k % len(_SCANNERS)]
        gain = float(rng.uniform(600, 1400))
        intensity = {
            modality: {
                tissue: round(float(value * gain * np.exp(rng.normal(0, acq.contrast_sd))), 3)
                for tissue, value in tissues.items()}
            for modality, tissues in BASE_INTENSITY.items()
        }
        sites.append(Site(
            label=f"site{k + 1}", manufacturer=manufacturer, model=model, field_strength=tesla,
            gain=round(gain, 3), intensity=intensity,
            noise=round(float(rng.uniform(*acq.noise_range)), 5),
            bias=round(float(rng.uniform(*acq.bias_range)), 5),
            gm_bias=round(float(np.exp(rng.normal(0, 0.03))), 5),
        ))
    return sites


def draw_participants(config: SimulationConfig) -> pd.DataFrame:
    """Covariates of every subject and session.

    Subjects go to sites in turn (balanced); sex, baseline age (uniform), diagnosis
    (``patient`` with probability ``patient_fraction``) and the score (normal, shifted for
    patients) are independent draws from one stream; later sessions are 1-2 years apart.

    Returns
    -------
    pandas.DataFrame
        One row per subject and session: ``participant_id``, ``session_id`` (None without
        sessions), ``age`` (at the session), ``baseline_age``, ``sex`` (M/F), ``diagnosis``
        (CN/patient), ``site``, ``score``, ``score_z`` (control SD units),
        ``subject_index``, ``session_index``.
    """
    rng = np.random.default_rng([config.seed, 2])
    n = config.n_subjects
    width = max(2, len(str(n)))
    sex = np.where(rng.uniform(size=n) < 0.5, "F", "M")
    age = rng.uniform(*config.age_range, size=n)
    patient = rng.uniform(size=n) < config.patient_fraction
    score_z = rng.standard_normal(n) + config.effects.score_diagnosis_shift * patient
    gaps = rng.uniform(1.0, 2.0, size=(n, config.n_sessions))
    rows = []
    for i in range(n):
        score = round(float(SCORE_MEAN + SCORE_SD * score_z[i]), 2)
        session_age = age[i]
        for s in range(config.n_sessions):
            if s > 0:
                session_age += gaps[i, s]
            rows.append({
                "participant_id": f"sub-{i + 1:0{width}d}",
                "session_id": f"ses-{s + 1}" if config.n_sessions > 1 else None,
                "age": round(float(session_age), 2),
                "baseline_age": round(float(age[i]), 2),
                "sex": sex[i],
                "diagnosis": "patient" if patient[i] else "CN",
                "site": f"site{i % config.n_sites + 1}",
                "score": score,
                "score_z": (score - SCORE_MEAN) / SCORE_SD,
                "subject_index": i,
                "session_index": s,
            })
    return pd.DataFrame(rows)
