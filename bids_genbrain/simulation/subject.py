"""One subject: individual traits, each session's true anatomy, each native image.

Random streams are keyed by ``(seed, purpose, subject[, session[, modality]])`` so a subject's
anatomy does not change when, say, another modality or more subjects are added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ..templates import TISSUES
from .anatomy import (KNOT_SPACING_MM, TemplateAnatomy, TissueMaps, grid_axes_mm,
                      resample_to_grid)
from .artefacts import bias_field, motion_ghosting, rician
from .cohort import Site
from .config import Acquisition, SimulationConfig
from .fields import BSplineField
from .geometry import (Deformation, ImageGeometry, Pose, draw_geometry, draw_pose, min_det,
                       render)

GM_SMOOTHNESS_MM = 8.0
"""Gaussian sigma of the individual GM/WM density variation."""
MIN_KNOT_DET = 0.2
"""Smallest Jacobian determinant allowed at the knots (else the random warp is damped)."""
MODALITY_CODE = {"T1w": 0, "T2w": 1, "FLAIR": 2}


@dataclass
class SubjectTraits:
    """What stays the same across a subject's sessions.

    Attributes
    ----------
    scale : ndarray, shape (3,)
        Head size along x, y, z (sex, individual size, slight anisotropy).
    displacement : BSplineField
        Individual smooth displacement (mm).
    gm_field, wm_field : BSplineField
        Individual log-density variation of GM and WM.
    shell_mm : tuple of float
        Thickness of extra-cerebral CSF, skull and scalp.
    """

    scale: np.ndarray
    displacement: BSplineField
    gm_field: BSplineField
    wm_field: BSplineField
    shell_mm: tuple[float, float, float]


def draw_subject(config: SimulationConfig, template: TemplateAnatomy, index: int, sex: str,
                 ventricle_mm: tuple[float, float]) -> SubjectTraits:
    """Draw a subject's traits.

    Parameters
    ----------
    config : SimulationConfig
    template : TemplateAnatomy
    index : int
        Subject index (selects the random stream).
    sex : {"M", "F"}
    ventricle_mm : tuple of float
        Smallest and largest ventricle displacement over the subject's sessions; the random
        warp is damped (x0.8 steps) until no session's deformation folds.
    """
    rng = np.random.default_rng([config.seed, 3, index])
    sign = 1.0 if sex == "M" else -1.0
    size = (1.0 + sign * config.effects.sex_size / 2) * np.exp(rng.normal(0, config.size_sd))
    scale = size * np.exp(rng.normal(0, 0.015, 3))
    bounds = template.knot_bounds()
    displacement = BSplineField.random(rng, n_components=3, bounds_mm=bounds,
                                       spacing_mm=KNOT_SPACING_MM,
                                       smoothness_mm=config.deformation_smoothness_mm,
                                       rms=config.deformation_mm)
    gm_field = BSplineField.random(rng, n_components=1, bounds_mm=bounds,
                                   spacing_mm=KNOT_SPACING_MM, smoothness_mm=GM_SMOOTHNESS_MM,
                                   rms=config.gm_sd)
    wm_field = BSplineField.random(rng, n_components=1, bounds_mm=bounds,
                                   spacing_mm=KNOT_SPACING_MM, smoothness_mm=GM_SMOOTHNESS_MM,
                                   rms=config.gm_sd / 2)
    shell = (float(rng.uniform(1.5, 3.0)), float(rng.uniform(4.0, 7.0)),
             float(rng.uniform(4.0, 8.0)))
    # the Jacobian is linear in both amplitudes; checked at every other knot
    jac = displacement.jacobian_on_grid(tuple(a[::2] for a in displacement.knot_axes()))
    ventricle_jac = template.ventricle_knot_jacobian[:, :, ::2, ::2, ::2]
    damping = 1.0
    for _ in range(20):
        if all(min_det(damping * jac + v * ventricle_jac) >= MIN_KNOT_DET
               for v in ventricle_mm):
            break
        damping *= 0.8
    else:
        raise ValueError("could not draw a non-folding deformation; lower"
                         " ventricle_mm_per_decade")
    return SubjectTraits(scale, displacement * damping, gm_field, wm_field, shell)


def ventricle_displacement(config: SimulationConfig, age: float) -> float:
    """Ventricle wall displacement (mm) at ``age``."""
    eff = config.effects
    return eff.ventricle_mm_per_decade * (age - eff.age_reference) / 10.0


def session_deformation(config: SimulationConfig, template: TemplateAnatomy,
                        traits: SubjectTraits, age: float) -> Deformation:
    """The MNI -> subject mapping at a session (individual warp + ventricles at ``age``)."""
    ventricles = template.ventricle_field * ventricle_displacement(config, age)
    displacement = traits.displacement + ventricles
    return Deformation(traits.scale, displacement, template.knot_region)


def session_tissues(template: TemplateAnatomy, traits: SubjectTraits, row: dict) -> TissueMaps:
    """Tissue maps of a subject-session (``row``: a :func:`draw_participants` row)."""
    return template.tissue_maps(age=row["age"], patient=row["diagnosis"] == "patient",
                                score_z=row["score_z"], gm_field=traits.gm_field,
                                wm_field=traits.wm_field, shell_mm=traits.shell_mm)


@dataclass
class SessionTruth:
    """True MNI-space maps of a subject-session on the ground-truth grid.

    Attributes
    ----------
    tissue : dict
        ``GM``, ``WM``, ``CSF`` probabilities.
    log_jacobian : ndarray
        ``log det`` of the MNI -> subject Jacobian.
    images : dict
        Modality -> noise- and bias-free image (the site's tissue intensities).
    """

    tissue: dict[str, np.ndarray]
    log_jacobian: np.ndarray
    images: dict[str, np.ndarray]

    @property
    def gm_modulated(self) -> np.ndarray:
        """GM probability times the Jacobian determinant (VBM's modulated GM)."""
        return (self.tissue["GM"] * np.exp(self.log_jacobian)).astype(np.float32)


def session_truth(template: TemplateAnatomy, maps: TissueMaps, deformation: Deformation,
                  intensities: dict[str, dict[str, float]],
                  grid: tuple[tuple[int, int, int], np.ndarray]) -> SessionTruth:
    """Resample a session's anatomy onto the ground-truth grid.

    Each tissue class is resampled once; images are their intensity-weighted sums (the
    contrast is linear in the classes, so this equals resampling the image).

    Parameters
    ----------
    template : TemplateAnatomy
    maps : TissueMaps
    deformation : Deformation
    intensities : dict
        Modality -> tissue -> intensity (the site's).
    grid : tuple
        ``(shape, affine)`` of the ground-truth MNI grid.
    """
    shape, affine = grid
    classes = {key: resample_to_grid(volume, template.affine, shape, affine)
               for key, volume in template.class_volumes(maps).items()}
    images = {m: sum(data * tissues[name] for (_, name), data in classes.items())
              for m, tissues in intensities.items()}
    tissue = {name: classes[("brain", name)] for name in TISSUES}
    log_jac = deformation.log_jacobian_grid(grid_axes_mm(shape, affine))
    return SessionTruth(tissue, log_jac, {m: img.astype(np.float32) for m, img in images.items()})


@dataclass
class NativeImage:
    """A simulated scanner image and the facts behind it.

    Attributes
    ----------
    data : ndarray, int16
    geometry : ImageGeometry
    pose : Pose
    artefacts : dict
        Noise sigma, bias strength, motion description (for the ground truth sidecar).
    """

    data: np.ndarray
    geometry: ImageGeometry
    pose: Pose
    artefacts: dict


def native_image(config: SimulationConfig, template: TemplateAnatomy, source: np.ndarray,
                 deformation: Deformation, site: Site, modality: str,
                 key: tuple[int, int]) -> NativeImage:
    """Simulate one native image.

    Pose, grid, partial-volume blur, resampling, bias field, optional motion ghosting and
    Rician noise, in this order; intensities are rounded to int16.

    Parameters
    ----------
    config : SimulationConfig
    template : TemplateAnatomy
    source : ndarray
        The session's contrast on the anatomy grid.
    deformation : Deformation
    site : Site
    modality : str
    key : tuple of int
        ``(subject_index, session_index)`` (selects the random stream with the modality).
    """
    acq: Acquisition = config.acquisition
    rng = np.random.default_rng([config.seed, 5, key[0], key[1], MODALITY_CODE[modality]])
    pose = draw_pose(rng, acq)
    head = pose.apply(deformation.forward(template.head_points))
    brain = pose.apply(deformation.forward(template.brain_points))
    geometry = draw_geometry(rng, acq, head, brain)
    blurred = partial_volume(source, template.resolution, geometry.voxel_size)
    image = render(blurred, template.affine, geometry, pose, deformation)
    image *= bias_field(geometry.shape, rng, site.bias)
    artefacts: dict = {"BiasFieldStrength": site.bias}
    if rng.uniform() < acq.motion_fraction:
        image, artefacts["MotionArtefact"] = motion_ghosting(
            image, rng, max_shift_mm=2.0, voxel_size=geometry.voxel_size)
    tissues = site.intensity[modality]
    sigma = site.noise * max(tissues[t] for t in TISSUES)
    image = rician(image, sigma, rng)
    artefacts["NoiseSigma"] = round(float(sigma), 4)
    data = np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
    return NativeImage(data, geometry, pose, artefacts)


def partial_volume(source: np.ndarray, resolution: float,
                    voxel_size: tuple[float, float, float]) -> np.ndarray:
    """Blur the source by the part of the native voxel footprint it does not already have."""
    extra = np.sqrt(np.maximum(np.asarray(voxel_size) ** 2 - resolution**2, 0.0))
    sigma = float(np.mean(extra)) / 2.3548 / resolution
    if sigma < 0.25:
        return source
    return gaussian_filter(source, sigma, mode="constant", truncate=2.5)
