"""Planted effect maps on the ground-truth grid (what a group analysis should find)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .anatomy import TemplateAnatomy, age_pattern, grid_axes_mm, region_weight
from .config import Effects, Region
from .geometry import Deformation


def _regions(regions: tuple[Region, ...]) -> list[dict[str, Any]]:
    return [{"Name": r.name, "CenterMM": list(r.center_mm), "RadiusMM": r.radius_mm}
            for r in regions]


def effect_maps(template: TemplateAnatomy, grid: tuple[tuple[int, int, int], np.ndarray],
                mask: np.ndarray, wm: np.ndarray, *, mnimaps: bool
                ) -> dict[tuple[str, str], tuple[np.ndarray, dict[str, Any]]]:
    """Every planted effect as a map with a sidecar.

    Parameters
    ----------
    template : TemplateAnatomy
    grid : tuple
        ``(shape, affine)`` of the ground-truth grid.
    mask : ndarray of bool
        Brain mask on that grid (maps are zero outside).
    wm : ndarray
        Template WM probability on that grid (FA age effect acts in WM).
    mnimaps : bool
        Include the FA, MD and FC effects (maps that only ``derivatives/mnimaps`` has).

    Returns
    -------
    dict
        ``(measure, covariate)`` -> ``(data, sidecar)``; measures ``GM`` (fractional change
        of GM probability), ``jacobian`` (change of log det J), ``FA``, ``MD``, ``FC``.
    """
    eff: Effects = template.effects
    shape, affine = grid
    axes = grid_axes_mm(shape, affine)
    points = np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)
    per_decade = f"per decade of age (relative to {eff.age_reference:g} years)"
    maps: dict[tuple[str, str], tuple[np.ndarray, dict[str, Any]]] = {
        ("GM", "age"): (-age_pattern(points, eff), {
            "Description": f"Relative change of GM probability {per_decade}",
            "Units": "fraction"}),
        ("GM", "diagnosis"): (-eff.diagnosis_gm_loss
                              * region_weight(points, eff.diagnosis_regions), {
            "Description": "Relative change of GM probability, patients vs controls",
            "Units": "fraction", "Regions": _regions(eff.diagnosis_regions)}),
        ("GM", "score"): (eff.score_gm_effect * region_weight(points, eff.score_regions), {
            "Description": "Relative change of GM probability per control SD of the score",
            "Units": "fraction", "Regions": _regions(eff.score_regions)}),
    }
    ventricles = Deformation(np.ones(3), template.ventricle_field * eff.ventricle_mm_per_decade,
                             template.knot_region)
    maps[("jacobian", "age")] = (ventricles.log_jacobian_grid(axes), {
        "Description": f"Change of log det J (MNI -> subject) {per_decade}, from ventricle"
                       " growth", "Units": "log ratio"})
    sex = np.log((1 + eff.sex_size / 2) / (1 - eff.sex_size / 2)) * 3
    maps[("jacobian", "sex")] = (np.full(shape, sex, dtype=np.float32), {
        "Description": "Change of log det J (MNI -> subject), men vs women (global size)",
        "Units": "log ratio"})
    if mnimaps:
        maps[("FA", "age")] = (eff.fa_age_per_decade * wm, {
            "Description": f"Change of FA {per_decade} (times template WM probability)",
            "Units": "FA"})
        maps[("FA", "diagnosis")] = (eff.fa_diagnosis * region_weight(points, eff.fa_regions), {
            "Description": "Change of FA, patients vs controls", "Units": "FA",
            "Regions": _regions(eff.fa_regions)})
        maps[("MD", "age")] = (np.full(shape, eff.md_age_per_decade, dtype=np.float32), {
            "Description": f"Relative change of MD {per_decade}", "Units": "fraction"})
        maps[("FC", "diagnosis")] = (eff.fc_diagnosis * region_weight(points, eff.fc_regions), {
            "Description": "Change of the seed correlation, patients vs controls",
            "Units": "Pearson correlation", "Regions": _regions(eff.fc_regions)})
    return {key: (np.where(mask, data, 0).astype(np.float32), side)
            for key, (data, side) in maps.items()}
