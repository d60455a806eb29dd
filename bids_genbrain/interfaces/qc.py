"""Quality-control metrics of one session's preprocessing, as one TSV row per image."""

from __future__ import annotations

import os

import nibabel as nb
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

QC_COLUMNS = (
    "participant_id", "session_id", "modality", "template_r", "mask_dice", "coverage",
    "tiv_ml", "gm_ml", "wm_ml", "csf_ml", "gm_modulated_ml",
)
"""Columns of the QC table, in order."""


def _load(path: str) -> np.ndarray:
    return np.asanyarray(nb.load(path).dataobj, dtype=np.float64)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def tissue_volumes(probseg: list[str], mask: str) -> dict[str, float]:
    """Native GM/WM/CSF volumes and their sum (TIV) in ml.

    Parameters
    ----------
    probseg : list of str
        GM, WM, CSF probability maps (native grid).
    mask : str
        Native brain mask; probabilities outside it are ignored.

    Returns
    -------
    dict
        ``gm_ml``, ``wm_ml``, ``csf_ml``, ``tiv_ml``.
    """
    img = nb.load(mask)
    inside = _load(mask) > 0.5
    voxel_ml = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
    vols = {f"{k}_ml": float(_load(p)[inside].sum() * voxel_ml)
            for k, p in zip(("gm", "wm", "csf"), probseg, strict=True)}
    vols["tiv_ml"] = vols["gm_ml"] + vols["wm_ml"] + vols["csf_ml"]
    return vols


def registration_metrics(image: str, fov: str, template: str, template_mask: str,
                         mask: str | None = None) -> dict[str, float]:
    """Agreement of a template-space image with the template.

    Parameters
    ----------
    image : str
        Preprocessed image on the template grid.
    fov : str
        The image's field of view warped to the template grid.
    template, template_mask : str
        Template T1w and brain mask on the same grid.
    mask : str, optional
        The participant's brain mask on the template grid (for Dice).

    Returns
    -------
    dict
        ``template_r`` (Pearson r inside the template brain mask; negative for T2w-like
        contrast), ``coverage`` (fraction of the template brain inside the field of view),
        ``mask_dice`` (NaN without ``mask``).
    """
    tmask = _load(template_mask) > 0.5
    data, tpl = _load(image)[tmask], _load(template)[tmask]
    r = float(np.corrcoef(data, tpl)[0, 1]) if data.std() > 0 and tpl.std() > 0 else float("nan")
    coverage = float((_load(fov)[tmask] > 0.5).mean())
    mdice = dice(_load(mask) > 0.5, tmask) if mask else float("nan")
    return {"template_r": r, "coverage": coverage, "mask_dice": mdice}


class _QCInputSpec(BaseInterfaceInputSpec):
    participant_id = traits.Str(mandatory=True)
    session_id = traits.Str("n/a", usedefault=True)
    modalities = traits.List(traits.Str, mandatory=True, desc="one name per image")
    images = InputMultiObject(File(exists=True), mandatory=True, desc="template-space images")
    fovs = InputMultiObject(File(exists=True), mandatory=True, desc="their fields of view")
    template = File(exists=True, mandatory=True)
    template_mask = File(exists=True, mandatory=True)
    mask_mni = File(exists=True, mandatory=True, desc="participant brain mask, template grid")
    probseg = InputMultiObject(File(exists=True), mandatory=True, desc="native GM, WM, CSF")
    native_mask = File(exists=True, mandatory=True)
    gm_modulated = File(exists=True, mandatory=True, desc="modulated GM, template grid")


class _QCOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="one row per image, columns QC_COLUMNS")


class QCMetrics(SimpleInterface):
    """Per-image registration metrics and per-session tissue volumes, as a TSV.

    ``gm_modulated_ml`` (the modulated GM map summed over the template grid) should equal
    ``gm_ml`` (native GM volume): their ratio checks the Jacobian modulation.
    """

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _run_interface(self, runtime):
        if not len(self.inputs.modalities) == len(self.inputs.images) == len(self.inputs.fovs):
            raise ValueError("modalities, images and fovs must have the same length")
        volumes = tissue_volumes(list(self.inputs.probseg), self.inputs.native_mask)
        mod_img = nb.load(self.inputs.gm_modulated)
        voxel_ml = float(abs(np.linalg.det(mod_img.affine[:3, :3]))) / 1000.0
        volumes["gm_modulated_ml"] = float(_load(self.inputs.gm_modulated).sum() * voxel_ml)
        rows = []
        for modality, image, fov in zip(self.inputs.modalities, self.inputs.images,
                                        self.inputs.fovs, strict=True):
            row = {"participant_id": self.inputs.participant_id,
                   "session_id": self.inputs.session_id, "modality": modality}
            row.update(registration_metrics(image, fov, self.inputs.template,
                                            self.inputs.template_mask, self.inputs.mask_mni))
            row.update(volumes)
            rows.append(row)
        out_tsv = os.path.join(runtime.cwd, "qc.tsv")
        pd.DataFrame(rows, columns=list(QC_COLUMNS)).to_csv(out_tsv, sep="\t", index=False,
                                                             na_rep="n/a", float_format="%.6g")
        self._results["out_tsv"] = out_tsv
        return runtime
