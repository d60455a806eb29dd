"""Simulated BIDS cohorts with planted, known effects (test bed and demo).

:func:`simulate_dataset` writes, under ``out_dir``:

* a raw BIDS dataset (``dataset_description.json`` with ``DatasetType: raw``,
  ``participants.tsv``/``.json`` with age, sex, diagnosis, site and a continuous score,
  ``README``, ``CHANGES``, optional sessions with ``sessions.tsv``) whose native images have
  random pose, voxel size (0.8-1.5 mm by default, also anisotropic), axis order, obliquity,
  field of view, bias field, Rician noise and occasional motion ghosting;
* ``derivatives/groundtruth``: per subject-session the true MNI-space images, tissue maps,
  modulated GM, log-Jacobian and the true MNI -> scanner mapping of every native image (unless
  ``subject_truth`` is off), plus the planted effect maps and the truth table (see
  :mod:`bids_genbrain.simulation.groundtruth`; read it back with :func:`load_ground_truth`);
* optionally ``derivatives/mnimaps``: preprocessed-like MNI maps (images, tissue
  probabilities, VBM, FA, MD, seed FC, or the ``maps`` chosen) for the group level and the
  model without preprocessing.

:meth:`SimulationConfig.population` makes a healthy population for pretraining (thousands of
participants, MNI maps only).

How subjects are made is described in :mod:`bids_genbrain.simulation.anatomy` (tissue maps
and effects) and :mod:`bids_genbrain.simulation.geometry` (mappings and native grids). The same
configuration and seed give identical files.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .derivatives import bids_uri, write_dataset_description, write_image, write_json
from .simulation.anatomy import TemplateAnatomy, grid_axes_mm, grid_points_mm
from .simulation.bidsio import SIMULATED_MARKER, raw_image_path, raw_sidecar, write_raw_metadata
from .simulation.cohort import Site, draw_participants, draw_sites
from .simulation.config import Acquisition, Effects, Region, SimulationConfig
from .simulation.effects import effect_maps
from .simulation.groundtruth import (GROUNDTRUTH_NAME, GroundTruth, effect_path,
                                     load_effect_map, load_ground_truth, mni_to_scanner,
                                     truth_paths)
from .simulation.mnimaps import MNIMAPS_NAME, write_session_mnimaps
from .simulation.geometry import render
from .simulation.subject import (SessionTruth, SubjectTraits, partial_volume, draw_subject,
                                 native_image, session_deformation, session_tissues,
                                 session_truth, ventricle_displacement)
from .templates import TEMPLATE, TISSUES, brain_mask, load_template, mni_grid, template_source
from .utils import atomic_write_text

__all__ = [
    "Acquisition", "Effects", "GroundTruth", "Region", "SimulationConfig", "SimulationResult",
    "load_effect_map", "load_ground_truth", "mni_to_scanner", "simulate_dataset",
]

Grid = tuple[tuple[int, int, int], np.ndarray]
"""``(shape, affine)`` of an MNI grid (:func:`bids_genbrain.templates.mni_grid`)."""


@dataclass
class SimulationResult:
    """What :func:`simulate_dataset` wrote.

    Attributes
    ----------
    root : Path
        The raw BIDS dataset.
    groundtruth : Path
        ``root/derivatives/groundtruth``.
    mnimaps : Path or None
        ``root/derivatives/mnimaps`` when written.
    table : pandas.DataFrame
        One row per subject-session: covariates (``participant_id``, ``session_id``,
        ``age``, ``sex``, ``diagnosis``, ``site``, ``score``, ``score_z``) and true values
        (``head_scale``, ``gm_ml``, ``wm_ml``, ``csf_ml``, ``icv_ml``).
    images : pandas.DataFrame
        One row per native image: ``participant_id``, ``session_id``, ``modality``, ``path``.
    config : SimulationConfig
    elapsed_s : float
        Wall time of the simulation.
    """

    root: Path
    groundtruth: Path
    mnimaps: Path | None
    table: pd.DataFrame
    images: pd.DataFrame
    config: SimulationConfig
    elapsed_s: float


def simulate_dataset(out_dir: Path | str, config: SimulationConfig | None = None, *,
                     overwrite: bool = False, progress: bool = False, n_jobs: int = 1,
                     **params: Any) -> SimulationResult:
    """Simulate a BIDS dataset with known ground truth.

    Parameters
    ----------
    out_dir : path-like
        Dataset root; must be absent or empty (or a previous simulation with ``overwrite``).
    config : SimulationConfig, optional
        Defaults to ``SimulationConfig()``.
    overwrite : bool
        Replace a previous simulated dataset in ``out_dir`` (never any other folder).
    progress : bool
        Show a progress bar on stderr.
    n_jobs : int
        Subjects simulated at once (threads); the files do not depend on it.
    **params
        Fields of :class:`SimulationConfig` overriding ``config`` (``n_subjects=4, seed=1``).

    Returns
    -------
    SimulationResult

    Raises
    ------
    ValueError
        Invalid parameters.
    FileExistsError
        ``out_dir`` holds other files (or a simulation, without ``overwrite``).
    """
    start = time.perf_counter()
    config = (config or SimulationConfig()).replace(**params)
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    root = _prepare(Path(out_dir), overwrite)
    gt_root = root / "derivatives" / GROUNDTRUTH_NAME
    maps_root = root / "derivatives" / MNIMAPS_NAME if config.mnimaps else None
    sites = {s.label: s for s in draw_sites(config)}
    table = draw_participants(config)
    template = _template_anatomy(config.anatomy_resolution, config.effects,
                                 config.acquisition.skull)
    grid = mni_grid(config.mni_resolution)
    mask = brain_mask(config.mni_resolution)

    write_raw_metadata(root, config, list(sites.values()), table)
    _write_groundtruth_metadata(gt_root, config, template, grid, mask)
    if maps_root is not None:
        write_dataset_description(
            maps_root, name="Simulated MNI-space maps",
            description=f"{SIMULATED_MARKER}: preprocessed-like MNI maps with planted effects.",
            extra={"DatasetLinks": {"raw": "../../"}})

    def run_subject(rows: pd.DataFrame) -> list[tuple[dict, list[dict]]]:
        records = rows.to_dict("records")
        extremes = tuple(ventricle_displacement(config, r["age"])
                         for r in (records[0], records[-1]))
        traits = draw_subject(config, template, int(records[0]["subject_index"]),
                              records[0]["sex"], extremes)
        out = []
        for row in records:
            out.append(_simulate_session(config, template, traits, row, sites[row["site"]], grid,
                                         mask, root, gt_root, maps_root))
            bar.advance(task)
        return out

    groups = [rows for _, rows in table.groupby("subject_index", sort=True)]
    with _progress(progress) as bar, ThreadPoolExecutor(n_jobs) as pool:
        task = bar.add_task("simulating", total=len(table))
        results = [item for subject in pool.map(run_subject, groups) for item in subject]
    truth_rows = [truth for truth, _ in results]
    image_rows = [image for _, images in results for image in images]

    truth_table = pd.DataFrame(truth_rows)
    _write_simulation_table(gt_root, truth_table, config)
    return SimulationResult(
        root=root, groundtruth=gt_root, mnimaps=maps_root, table=truth_table,
        images=pd.DataFrame(image_rows, columns=["participant_id", "session_id", "modality",
                                                 "path"]),
        config=config, elapsed_s=time.perf_counter() - start,
    )


def _simulate_session(config: SimulationConfig, template: TemplateAnatomy,
                      traits: SubjectTraits, row: dict, site: Site, grid: Grid,
                      mask: np.ndarray, root: Path, gt_root: Path,
                      maps_root: Path | None) -> tuple[dict, list[dict]]:
    """Simulate and write one subject-session; return its truth row and native images."""
    subject = row["participant_id"].removeprefix("sub-")
    session = row["session_id"].removeprefix("ses-") if row["session_id"] else None
    deformation = session_deformation(config, template, traits, row["age"])
    maps = session_tissues(template, traits, row)
    intensities = {m: site.intensity[m] for m in config.modalities}
    truth = session_truth(template, maps, deformation, intensities, grid)
    shape, affine = grid
    paths = truth_paths(gt_root, subject, session, config.mni_resolution, config.modalities)
    if config.subject_truth:
        _write_truth(truth, paths, affine, site)

    images = []
    if config.native:
        subject_mm = deformation.forward_grid(grid_axes_mm(shape, affine))
        for modality in config.modalities:
            source = template.contrast(maps, site.intensity[modality])
            native = native_image(config, template, source, deformation, site, modality,
                                  (row["subject_index"], row["session_index"]))
            path = raw_image_path(root, subject, session, modality)
            img = nb.Nifti1Image(native.data, native.geometry.affine)
            img.header.set_xyzt_units("mm", "sec")
            img.header.set_qform(native.geometry.affine, code=1)
            img.header.set_sform(native.geometry.affine, code=1)
            write_image(img, path, raw_sidecar(site, modality, native.geometry))
            if config.native_tissues and modality == "T1w":
                _write_native_tissues(template, maps, native, deformation, paths)
            scanner = np.moveaxis(native.pose.apply(subject_mm), 0, -1)
            write_image(nb.Nifti1Image(scanner.astype(np.float32), affine),
                        paths[f"coords_{modality}"], {
                            "Description": "True MNI -> scanner mapping: per MNI voxel, the"
                                           " scanner-world RAS mm (world of the native"
                                           " image's affine) it maps to",
                            "Units": "mm",
                            "Sources": [bids_uri(path, root, "raw")],
                            "HeadScale": [round(float(s), 6) for s in traits.scale],
                            "Pose": native.pose.describe(),
                            "Geometry": native.geometry.describe(),
                            "Artefacts": native.artefacts,
                        })
            images.append({"participant_id": row["participant_id"],
                           "session_id": row["session_id"], "modality": modality,
                           "path": path})
    if maps_root is not None:
        rng = np.random.default_rng([config.seed, 6, row["subject_index"], row["session_index"]])
        write_session_mnimaps(maps_root, subject, session, truth, grid_points_mm(shape, affine),
                              mask, affine, row, config.effects, site.gm_bias, site.noise, rng,
                              config.mni_resolution, config.maps)

    voxel_ml = float(np.prod(np.abs(np.diag(affine)[:3]))) / 1000.0
    jacobian = np.exp(truth.log_jacobian)
    volumes = {f"{t.lower()}_ml": round(float((data * jacobian)[mask].sum() * voxel_ml), 3)
               for t, data in truth.tissue.items()}
    truth_row = {k: row[k] for k in ("participant_id", "session_id", "age", "sex", "diagnosis",
                                      "site", "score", "score_z")}
    truth_row.update(head_scale=round(float(np.prod(traits.scale) ** (1 / 3)), 6), **volumes,
                     icv_ml=round(sum(volumes.values()), 3))
    return truth_row, images


def _write_native_tissues(template: TemplateAnatomy, maps, native, deformation,
                          paths: dict[str, Path]) -> None:
    """True GM/WM/CSF probabilities on a native T1w's grid, drawn as its intensities are."""
    classes = template.class_volumes(maps)
    for tissue in TISSUES:
        blurred = partial_volume(classes[("brain", tissue)], template.resolution,
                                  native.geometry.voxel_size)
        data = np.clip(render(blurred, template.affine, native.geometry, native.pose,
                              deformation), 0.0, 1.0)
        write_image(nb.Nifti1Image(data.astype(np.float32), native.geometry.affine),
                    paths[f"native_probseg_{tissue}"],
                    {"Description": f"True {tissue} probability on the native T1w's grid "
                                    "(partial volume of its voxels)"})


def _write_truth(truth: SessionTruth, paths: dict[str, Path], affine: np.ndarray,
                 site: Site) -> None:
    """Write a session's true MNI maps."""
    def save(data: np.ndarray, key: str, sidecar: dict) -> None:
        write_image(nb.Nifti1Image(data.astype(np.float32), affine), paths[key], sidecar)

    for modality, image in truth.images.items():
        save(image, f"preproc_{modality}", {
            "Description": "True MNI-space image: noise-, bias- and artefact-free, with the"
                           " site's tissue intensities", "Site": site.label,
            "TissueIntensity": site.intensity[modality], "SkullStripped": False})
    for tissue, data in truth.tissue.items():
        save(data, f"probseg_{tissue}", {"Description": f"True {tissue} probability"})
    save(truth.gm_modulated, "gm_modulated",
         {"Description": "True GM probability times the Jacobian determinant of the MNI ->"
                         " subject mapping (VBM modulation, global scaling included)"})
    save(truth.log_jacobian, "log_jacobian",
         {"Description": "True log det of the Jacobian of the MNI -> subject mapping"})


def _write_groundtruth_metadata(gt_root: Path, config: SimulationConfig,
                                template: TemplateAnatomy, grid: Grid, mask: np.ndarray) -> None:
    """dataset_description, configuration and planted effect maps of the ground truth."""
    write_dataset_description(
        gt_root, name="Simulation ground truth",
        description=f"{SIMULATED_MARKER}: true MNI-space maps, MNI -> scanner mappings and planted"
                    " effects.",
        extra={"DatasetLinks": {"raw": "../../"}})
    write_json(gt_root / "simulation.json", {
        "Config": asdict(config), "TemplateSource": template_source(), "Template": TEMPLATE,
        "Coordinates": "coords maps hold scanner-world RAS mm per MNI voxel"})
    shape, affine = grid
    wm = np.asanyarray(load_template(config.mni_resolution, suffix="probseg", label="WM").dataobj,
                       dtype=np.float32)
    for (measure, covariate), (data, sidecar) in effect_maps(
            template, grid, mask, wm, mnimaps=config.mnimaps).items():
        sidecar = {**sidecar, "Description": f"Planted effect (simulated ground truth): "
                                             f"{sidecar['Description'][0].lower()}"
                                             f"{sidecar['Description'][1:]}"}
        write_image(nb.Nifti1Image(data, affine),
                    effect_path(gt_root, measure, covariate, config.mni_resolution), sidecar)


def _write_simulation_table(gt_root: Path, table: pd.DataFrame, config: SimulationConfig) -> None:
    atomic_write_text(gt_root / "simulation.tsv",
                      table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n"))
    write_json(gt_root / "simulation_columns.json", {
        "score_z": {"Description": "Score in control SD units (what the GM effect scales with)"},
        "head_scale": {"Description": "Geometric mean of the MNI -> subject scaling"},
        "gm_ml": {"Description": "True GM volume in the subject", "Units": "ml"},
        "wm_ml": {"Description": "True WM volume in the subject", "Units": "ml"},
        "csf_ml": {"Description": "True intracranial CSF volume (template brain mask)",
                   "Units": "ml"},
        "icv_ml": {"Description": "gm_ml + wm_ml + csf_ml", "Units": "ml"},
        "seed": config.seed,
    })


def _prepare(root: Path, overwrite: bool) -> Path:
    """Create ``root``; refuse to touch a non-empty folder that is not a previous simulation."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        description = root / "dataset_description.json"
        simulated = False
        if description.is_file():
            try:
                info = json.loads(description.read_text())
                generated = info.get("GeneratedBy", [{}])[0]
                simulated = SIMULATED_MARKER in generated.get("Description", "")
            except (json.JSONDecodeError, IndexError, AttributeError):
                simulated = False
        if not simulated:
            raise FileExistsError(f"{root} is not empty and not a simulated dataset; choose"
                                  " an empty or new folder")
        if not overwrite:
            raise FileExistsError(f"{root} holds a simulated dataset; pass overwrite to"
                                  " replace it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


@functools.lru_cache(maxsize=2)
def _template_anatomy(resolution: float, effects: Effects, skull: bool) -> TemplateAnatomy:
    """The template on the anatomy grid (read-only; kept for the next run in this process)."""
    return TemplateAnatomy(resolution, effects, skull=skull)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled, transient=False)

