"""The raw BIDS side of a simulated dataset: metadata files, image paths and sidecars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..derivatives import derivative_path, write_dataset_description, write_json
from ..utils import atomic_write_text
from .cohort import PROTOCOLS, SCORE_MEAN, SCORE_SD, Site
from .config import SimulationConfig
from .geometry import ImageGeometry

SIMULATED_MARKER = "Simulated by 'genbrain simulate'"
"""Start of ``GeneratedBy[0].Description`` of every simulated dataset (and its derivatives)."""
PARTICIPANT_COLUMNS = ("participant_id", "age", "sex", "diagnosis", "site", "score")


def raw_image_path(root: Path | str, subject: str, session: str | None, modality: str) -> Path:
    """``root/sub-<l>[/ses-<s>]/anat/sub-<l>[_ses-<s>]_<modality>.nii.gz``."""
    return derivative_path(root, {"sub": subject, "ses": session}, modality)


def raw_sidecar(site: Site, modality: str, geometry: ImageGeometry) -> dict[str, Any]:
    """Acquisition metadata of a native image (nothing of the ground truth).

    Parameters
    ----------
    site : Site
    modality : str
    geometry : ImageGeometry
    """
    tr, te, ti, flip = PROTOCOLS[modality]
    thick = max(geometry.voxel_size)
    out: dict[str, Any] = {
        "Modality": "MR",
        "MagneticFieldStrength": site.field_strength,
        "Manufacturer": site.manufacturer,
        "ManufacturersModelName": site.model,
        "InstitutionName": site.label,
        "MRAcquisitionType": "3D",
        "SeriesDescription": f"{modality} (simulated)",
        "RepetitionTime": tr,
        "EchoTime": te,
        "FlipAngle": flip,
        "SliceThickness": round(thick, 4),
    }
    if ti is not None:
        out["InversionTime"] = ti
    return out


def write_raw_metadata(root: Path, config: SimulationConfig, sites: list[Site],
                       table: pd.DataFrame) -> None:
    """Write dataset_description, README, CHANGES, participants and sessions files.

    Parameters
    ----------
    root : Path
        Raw dataset root.
    config : SimulationConfig
    sites : list of Site
    table : pandas.DataFrame
        :func:`bids_genbrain.simulation.cohort.draw_participants`.
    """
    write_dataset_description(
        root, name=f"GenBrain simulated cohort (seed {config.seed})", dataset_type="raw",
        description=f"{SIMULATED_MARKER}: MNI152 tissue priors with planted"
                    " effects, individual warps and scanner artefacts; ground truth in"
                    " derivatives/groundtruth.",
        extra={"Authors": ["bids_genbrain simulate"], "License": "CC0",
               "HowToAcknowledge": "Simulated data; cite bids_genbrain."},
    )
    baseline = table[table["session_index"] == 0].copy()
    baseline["age"] = baseline["baseline_age"]
    _write_tsv(root / "participants.tsv", baseline[list(PARTICIPANT_COLUMNS)])
    write_json(root / "participants.json", _participants_json(sites))
    atomic_write_text(root / "README", _readme(config, sites))
    atomic_write_text(root / "CHANGES", f"1.0.0\n  - Simulated by bids_genbrain {__version__}"
                                        f" with seed {config.seed}.\n")
    if config.n_sessions > 1:
        # no sessions.json: pybids turns a sidecar's column descriptions into entities and its
        # get_collections() then fails (bids-standard/pybids#700); the age column is described
        # in participants.json
        for pid, rows in table.groupby("participant_id", sort=True):
            _write_tsv(root / pid / f"{pid}_sessions.tsv", rows[["session_id", "age"]])


def _write_tsv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n"))


def _participants_json(sites: list[Site]) -> dict[str, Any]:
    return {
        "participant_id": {"Description": "Participant label"},
        "age": {"Description": "Age at the first session", "Units": "year"},
        "sex": {"Description": "Sex", "Levels": {"M": "male", "F": "female"}},
        "diagnosis": {"Description": "Diagnostic group",
                      "Levels": {"CN": "control (cognitively normal)",
                                 "patient": "patient (focal grey matter loss)"}},
        "site": {"Description": "Acquisition site",
                 "Levels": {s.label: f"{s.manufacturer} {s.model} {s.field_strength:g} T"
                            for s in sites}},
        "score": {"Description": f"Continuous (cognitive-like) score; controls have mean"
                                 f" {SCORE_MEAN:g} and SD {SCORE_SD:g}",
                  "Units": "arbitrary"},
    }


def _readme(config: SimulationConfig, sites: list[Site]) -> str:
    eff = config.effects
    regions = ", ".join(r.name for r in eff.diagnosis_regions)
    return (
        "# GenBrain simulated cohort\n\n"
        f"{config.n_subjects} participants, {config.n_sites} sites, {config.n_sessions}"
        f" session(s), contrasts {', '.join(config.modalities)}; seed {config.seed}.\n\n"
        "Every image is simulated from the MNI152 tissue priors: each participant has an"
        " individual smooth deformation, head size (sex, individual), grey-matter density"
        " variation and planted effects (age: grey-matter loss and ventricle growth;"
        f" diagnosis: {eff.diagnosis_gm_loss:.0%} grey-matter loss in {regions}; score:"
        f" {eff.score_gm_effect:.0%} per SD). Scanner geometry (pose, voxel size,"
        " orientation, obliquity, field of view), bias field, Rician noise and motion vary"
        " per image; contrast, noise and bias strength per site"
        f" ({', '.join(s.label for s in sites)}).\n\n"
        + ("The ground truth (true MNI-space images and tissue maps, the true MNI -> scanner"
           " mapping of every image, planted effect maps) is in derivatives/groundtruth.\n"
           if config.subject_truth else
           "derivatives/groundtruth holds the true covariates and volumes (simulation.tsv) and"
           " the planted effect maps.\n")
        + ("Preprocessed-like MNI-space maps (no native images needed) are in"
           " derivatives/mnimaps.\n" if config.mnimaps else "")
    )
