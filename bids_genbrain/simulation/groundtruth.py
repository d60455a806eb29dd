"""The ground-truth derivatives dataset: file names, writing, and reading back.

``OUT_DIR/derivatives/groundtruth`` (BIDS-Derivatives) holds, per subject and session, on the
MNI152NLin6Asym grid of ``res-<r>`` (the output naming contract of DESIGN.md)::

    sub-<l>[_ses-<s>]_space-MNI152NLin6Asym_res-<r>_desc-preproc_<modality>.nii.gz
        the noise- and bias-free image (the site's tissue intensities)
    ..._space-MNI152NLin6Asym_res-<r>_label-{GM,WM,CSF}_probseg.nii.gz
    ..._space-MNI152NLin6Asym_res-<r>_label-GM_desc-modulated_probseg.nii.gz  (GM x det J)
    ..._space-MNI152NLin6Asym_res-<r>_desc-log_jacobian.nii.gz
    sub-<l>[_ses-<s>]_space-T1w_label-{GM,WM,CSF}_probseg.nii.gz  (``native_tissues`` only)
        the true tissue probabilities on the native T1w's voxel grid (its partial volume)
    sub-<l>[_ses-<s>]_from-MNI152NLin6Asym_to-<modality>_mode-image_res-<r>_desc-coords_xfm.nii.gz
        the true MNI -> scanner mapping of that native image: a 4-D float32 image on the MNI
        grid whose last axis holds, per MNI voxel, the scanner-world RAS mm coordinate (the
        world of the native NIfTI's affine) the voxel maps to. Scanner voxel indices follow
        with ``inv(native_affine)``. Evaluate it anywhere with :func:`mni_to_scanner`.

and at the root the planted effect maps (``[label-<measure>_]desc-<covariate>_effect``, see
their sidecars for units), ``simulation.tsv`` (one row per subject-session with the true
covariates and volumes) and ``simulation.json`` (the full configuration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from scipy.ndimage import map_coordinates

from ..derivatives import derivative_path, kind_path, mni_entities, res_label, sidecar_path
from ..templates import TEMPLATE, TISSUES, brain_mask

GROUNDTRUTH_NAME = "groundtruth"


def truth_paths(gt_root: Path | str, subject: str, session: str | None, resolution: float,
                modalities: tuple[str, ...]) -> dict[str, Path]:
    """Paths of a subject-session's ground-truth files.

    Parameters
    ----------
    gt_root : path-like
        ``OUT_DIR/derivatives/groundtruth``.
    subject, session : str
        Labels without ``sub-``/``ses-`` (session None without sessions).
    resolution : float
        Ground-truth grid (mm).
    modalities : tuple of str

    Returns
    -------
    dict
        Keys ``preproc_<modality>``, ``probseg_<tissue>``, ``gm_modulated``, ``log_jacobian``,
        ``coords_<modality>``, ``native_probseg_<tissue>``.
    """
    root = Path(gt_root)
    ents = {"sub": subject, "ses": session, "resolution": resolution}
    paths = {f"preproc_{m}": kind_path(root, "preproc", modality=m, **ents) for m in modalities}
    for tissue in TISSUES:
        paths[f"probseg_{tissue}"] = kind_path(root, tissue, **ents)
    paths["gm_modulated"] = kind_path(root, "GMmod", **ents)
    paths["log_jacobian"] = kind_path(root, "logjacobian", **ents)
    for m in modalities:
        ents = {"sub": subject, "ses": session, "from": TEMPLATE, "to": m, "mode": "image",
                "res": res_label(resolution), "desc": "coords"}
        paths[f"coords_{m}"] = derivative_path(root, ents, "xfm")
    for tissue in TISSUES:  # with native_tissues: on the native T1w's grid
        paths[f"native_probseg_{tissue}"] = derivative_path(
            root, {"sub": subject, "ses": session, "space": "T1w", "label": tissue}, "probseg")
    return paths


def effect_path(gt_root: Path | str, measure: str, covariate: str, resolution: float) -> Path:
    """Path of a planted effect map (``measure``: GM, jacobian, FA, MD, FC)."""
    ents = mni_entities(resolution, label=measure, desc=covariate)
    return derivative_path(gt_root, ents, "effect")


def mni_to_scanner(coords: np.ndarray, mni_voxels: np.ndarray) -> np.ndarray:
    """Scanner mm of MNI voxel positions, by trilinear interpolation of a coords map.

    Parameters
    ----------
    coords : ndarray, shape (X, Y, Z, 3)
        A ground-truth ``desc-coords_xfm`` image's data.
    mni_voxels : ndarray, shape (N, 3)
        Fractional voxel indices on the ground-truth MNI grid.

    Returns
    -------
    ndarray, shape (N, 3)
        Scanner-world RAS mm (NaN outside the grid).
    """
    points = np.asarray(mni_voxels, dtype=np.float64).T
    return np.stack([map_coordinates(coords[..., c], points, order=1, mode="constant",
                                     cval=np.nan) for c in range(3)], axis=1)


@dataclass
class GroundTruth:
    """A subject-session's ground truth for one modality (see the module docstring).

    Attributes
    ----------
    subject, session, modality : str
    resolution : float
    affine : ndarray, shape (4, 4)
        MNI grid voxel -> mm.
    brain_mask : ndarray of bool
        The template brain mask (the subject's brain in MNI space).
    image : ndarray
        True MNI-space image of ``modality``.
    tissue : dict
        ``GM``, ``WM``, ``CSF`` probabilities.
    gm_modulated, log_jacobian : ndarray
    coords : ndarray or None
        (X, Y, Z, 3) MNI -> scanner mm; None when no native image was written.
    native_path : Path or None
        The raw image the coords refer to.
    metadata : dict
        Sidecar of the coords map (pose, geometry, artefacts) and of the image.
    """

    subject: str
    session: str | None
    modality: str
    resolution: float
    affine: np.ndarray
    brain_mask: np.ndarray
    image: np.ndarray
    tissue: dict[str, np.ndarray]
    gm_modulated: np.ndarray
    log_jacobian: np.ndarray
    coords: np.ndarray | None
    native_path: Path | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def mni_to_scanner(self, mni_voxels: np.ndarray) -> np.ndarray:
        """Scanner mm of MNI voxel positions (N, 3) -> (N, 3); see :func:`mni_to_scanner`."""
        if self.coords is None:
            raise ValueError(f"sub-{self.subject}: no native {self.modality} image was simulated")
        return mni_to_scanner(self.coords, mni_voxels)

    def displacement_error(self, estimated: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Mean distance (mm) between an estimated MNI -> scanner map and the truth.

        Parameters
        ----------
        estimated : ndarray, shape (X, Y, Z, 3)
            Scanner mm per MNI voxel, e.g. a registration's MNI -> native transform applied
            to the grid.
        mask : ndarray of bool, optional
            Voxels to average over; the brain mask by default.

        Returns
        -------
        float
        """
        if self.coords is None:
            raise ValueError(f"sub-{self.subject}: no native {self.modality} image was simulated")
        if estimated.shape != self.coords.shape:
            raise ValueError(f"estimated map has shape {estimated.shape}, expected"
                             f" {self.coords.shape}")
        mask = self.brain_mask if mask is None else mask
        dist = np.sqrt(((estimated - self.coords) ** 2).sum(-1))
        return float(dist[mask].mean())


def _resolution_of(gt_root: Path, subject: str) -> float:
    """The ground-truth grid of a subject, from its file names."""
    for path in sorted((gt_root / f"sub-{subject}").rglob("*_res-*_label-GM_probseg.nii.gz")):
        label = path.name.split("_res-")[1].split("_")[0]
        return float(label.replace("p", "."))
    raise FileNotFoundError(f"{gt_root}: no ground truth for sub-{subject}")


def load_ground_truth(gt_root: Path | str, subject: str, session: str | None = None,
                      modality: str = "T1w") -> GroundTruth:
    """Read a subject-session's ground truth back.

    Parameters
    ----------
    gt_root : path-like
        ``OUT_DIR/derivatives/groundtruth``.
    subject : str
        Label, with or without ``sub-``.
    session : str, optional
        Label, with or without ``ses-`` (None for datasets without sessions).
    modality : str
        Which image and which native mapping to load.

    Returns
    -------
    GroundTruth

    Raises
    ------
    FileNotFoundError
        No such subject, session or modality.
    """
    root = Path(gt_root)
    subject = str(subject).removeprefix("sub-")
    session = None if session is None else str(session).removeprefix("ses-")
    resolution = _resolution_of(root, subject)
    paths = truth_paths(root, subject, session, resolution, (modality,))
    missing = [p for k, p in paths.items()
               if not k.startswith(("coords", "native_")) and not p.is_file()]
    if missing:
        raise FileNotFoundError(f"ground truth missing: {missing[0]}")

    def data(key: str) -> np.ndarray:
        return np.asanyarray(nb.load(paths[key]).dataobj, dtype=np.float32)

    metadata: dict[str, Any] = {"image": _sidecar(paths[f"preproc_{modality}"])}
    coords = native = None
    if paths[f"coords_{modality}"].is_file():
        coords = data(f"coords_{modality}")
        metadata["coords"] = _sidecar(paths[f"coords_{modality}"])
        sources = metadata["coords"].get("Sources") or [""]
        if sources[0].startswith("bids:raw:"):
            native = root.parent.parent / sources[0].removeprefix("bids:raw:")
    return GroundTruth(
        subject=subject, session=session, modality=modality, resolution=resolution,
        affine=nb.load(paths[f"preproc_{modality}"]).affine, brain_mask=brain_mask(resolution),
        image=data(f"preproc_{modality}"),
        tissue={t: data(f"probseg_{t}") for t in TISSUES},
        gm_modulated=data("gm_modulated"), log_jacobian=data("log_jacobian"),
        coords=coords, native_path=native, metadata=metadata,
    )


def load_effect_map(gt_root: Path | str, measure: str, covariate: str,
                    resolution: float) -> tuple[np.ndarray, dict[str, Any]]:
    """A planted effect map and its sidecar (units, regions).

    Parameters
    ----------
    gt_root : path-like
    measure : str
        ``GM``, ``jacobian``, ``FA``, ``MD`` or ``FC``.
    covariate : str
        ``age``, ``sex``, ``diagnosis`` or ``score``.
    resolution : float

    Returns
    -------
    data : ndarray, float32
    sidecar : dict
    """
    path = effect_path(gt_root, measure, covariate, resolution)
    if not path.is_file():
        raise FileNotFoundError(f"no planted effect map {path.name} in {gt_root}")
    return np.asanyarray(nb.load(path).dataobj, dtype=np.float32), _sidecar(path)


def _sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    return json.loads(side.read_text()) if side.is_file() else {}
