"""Nipype interfaces around antspyx (ANTs in Python): N4, registration, Atropos, Jacobians.

No ANTs binaries are needed: every interface calls the ANTs C++ library through antspyx in
the node's own process. Each interface sets ITK's thread count from ``omp_nthreads`` and the
ANTs random seed from ``seed`` before its first ANTs call, so a node on one thread is
bit-for-bit reproducible (ITK's multi-threaded metric sums are not, by construction; and
ITK reads its thread count once per process, so the runner also sets it in the environment).

Transforms follow ANTs' conventions: a *forward* transform (``from-T1w_to-MNI152NLin6Asym``)
is what ``antsApplyTransforms`` uses to resample a native image onto the template grid
(internally it maps template points to native points); the *reverse* transform resamples
template images (masks, priors) into native space. Both are written as ITK/ANTs composite
HDF5 files (``.h5``), readable by ``antsApplyTransforms``, antspyx and nitransforms.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)


@dataclass(frozen=True)
class RegistrationSettings:
    """One registration preset (see :data:`REGISTRATION_PRESETS`).

    Attributes
    ----------
    name : str
        ``fast``, ``accurate`` or ``sloppy``.
    head_transform : str
        antspyx ``type_of_transform`` of the initial head-to-template affine stage.
    brain_transform : str
        antspyx ``type_of_transform`` of the brain-to-template stage: rigid -> affine -> SyN
        in one call, or rigid -> affine only when ``syn_iterations`` is set.
    template_resolution : float or None
        Template grid (mm) the registration runs on: None for 1 mm, otherwise
        ``max(template_resolution, output resolution)``.
    syn_iterations : tuple of int, optional
        A separate SyN-only stage (cross-correlation radius ``syn_radius``,
        ``SyN[syn_step,3,0]``) after ``brain_transform``, with these iterations at shrink
        factors ``2^(n-1) ... 1``.
    syn_step : float
        Gradient step of that SyN stage.
    syn_radius : int
        Its cross-correlation radius (voxels).
    syn_crop_mm : float, optional
        Run that SyN stage on the template grid cropped to the template brain mask's
        bounding box plus this margin (mm) on each side (clipped to the grid): the metric,
        field smoothing, inversion and composition then cover fewer voxels. SyN keeps the
        field's boundary fixed, so the displacement is zero at the crop's faces and outside
        them (ITK's displacement field transform adds nothing outside its field): the maps
        still cover the whole grid, continuously, with the linear stages alone out there.
    description : str
        Methods text for the report.
    """

    name: str
    head_transform: str
    brain_transform: str
    template_resolution: float | None
    description: str
    syn_iterations: tuple[int, ...] | None = None
    syn_step: float = 0.2
    syn_radius: int = 2
    syn_crop_mm: float | None = None

    def template_grid(self, resolution: float) -> float:
        """Template resolution (mm) registration runs at for an output grid of ``resolution``."""
        if self.template_resolution is None:
            return 1.0
        return max(self.template_resolution, float(resolution))


REGISTRATION_PRESETS = {
    "fast": RegistrationSettings(
        "fast",
        head_transform="antsRegistrationSyNQuickRepro[a]",
        brain_transform="antsRegistrationSyNQuickRepro[a]",
        template_resolution=2.0,
        syn_iterations=(100, 70, 20),
        syn_radius=1,
        syn_crop_mm=10.0,
        description=(
            "rigid -> affine (global correlation, 1000x500x250x0 iterations at shrink "
            "factors 8x4x2x1) -> symmetric normalization (SyN; cross-correlation radius 1, "
            "100x70x20 iterations at shrink factors 4x2x1) on the 2 mm template, SyN on the "
            "template grid cropped to the brain mask's bounding box plus 10 mm"
        ),
    ),
    "accurate": RegistrationSettings(
        "accurate",
        head_transform="antsRegistrationSyNQuickRepro[a]",
        brain_transform="antsRegistrationSyNRepro[s]",
        template_resolution=None,
        description=(
            "rigid -> affine (global correlation, 1000x500x250x100 iterations at shrink "
            "factors 8x4x2x1) -> symmetric normalization (SyN; cross-correlation radius 2, "
            "100x70x50x20 iterations at shrink factors 8x4x2x1) on the 1 mm template: "
            "antsRegistrationSyN.sh in its reproducible variant"
        ),
    ),
    "sloppy": RegistrationSettings(
        "sloppy",
        head_transform="antsRegistrationSyNQuickRepro[a]",
        brain_transform="antsRegistrationSyNQuickRepro[s]",
        template_resolution=2.0,
        description=(
            "rigid -> affine (global correlation, 1000x500x250x0 iterations) -> SyN "
            "(cross-correlation radius 2, 100x70x50x0 iterations: the finest level is "
            "skipped): antsRegistrationSyNQuick.sh in its reproducible variant"
        ),
    ),
}
"""Registration presets: ``fast`` (default), ``accurate`` (``--registration accurate``) and
``sloppy`` (``--sloppy``, tests and demos)."""

def preset_name(*, sloppy: bool = False, registration: str = "fast") -> str:
    """The preset in force: ``sloppy`` when ``--sloppy`` is given, else ``registration``."""
    if registration not in REGISTRATION_PRESETS:
        raise ValueError(f"unknown registration preset {registration!r}; use one of "
                         f"{sorted(REGISTRATION_PRESETS)}")
    return "sloppy" if sloppy else registration


CROSS_MODAL_HEAD_TRANSFORM = "antsRegistrationSyNQuick[a]"
CROSS_MODAL_TRANSFORM = "antsRegistrationSyNQuick[s]"
"""Stages used for a T2w/FLAIR reference (Mattes MI everywhere: correlation metrics need the
template's contrast)."""


def _ants_setup(omp_nthreads: int, seed: int | None):
    """Set ITK threads and the ANTs seed; return the imported ``ants`` module."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(omp_nthreads)))
    import ants
    import ants.config

    if seed is not None:
        # sets ants.config._random_seed (passed as --random-seed) without forcing Repro
        # types; ANTs reads a seed of 0 as "use the clock", hence the offset
        ants.config.set_ants_deterministic(on=False, seed_value=int(seed) + 1)
    return ants


# --------------------------------------------------------------------------------------
# N4 bias field correction
# --------------------------------------------------------------------------------------
class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to correct")
    shrink_factor = traits.Int(4, usedefault=True, desc="N4 shrink factor")
    n_iterations = traits.List(traits.Int, [50, 50, 50, 50], usedefault=True,
                               desc="iterations per fitting level")
    omp_nthreads = traits.Int(1, usedefault=True)


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected image")


class N4BiasFieldCorrection(SimpleInterface):
    """N4 bias field correction (Tustison et al. 2010) with antspyx.

    Negative intensities are clipped at zero; the bias is fitted inside the head mask of
    :func:`ants.get_mask`. (Winsorising the intensities first, as antsBrainExtraction.sh
    does, made the template registration of the simulator's heads less accurate.)
    """

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        ants = _ants_setup(self.inputs.omp_nthreads, None)
        img = ants.image_read(self.inputs.in_file).clone("float")
        arr = np.clip(img.numpy(), 0, None)
        if not (arr > 0).any():
            raise ValueError(f"{self.inputs.in_file}: image has no positive voxel")
        img = img.new_image_like(arr.astype(np.float32))
        mask = ants.get_mask(img, cleanup=2)
        corrected = ants.n4_bias_field_correction(
            img, mask=mask, shrink_factor=self.inputs.shrink_factor,
            convergence={"iters": list(self.inputs.n_iterations), "tol": 1e-7},
        )
        out_file = os.path.join(runtime.cwd, "n4_corrected.nii.gz")
        ants.image_write(corrected, out_file)
        self._results["out_file"] = out_file
        return runtime


# --------------------------------------------------------------------------------------
# Several runs -> one image
# --------------------------------------------------------------------------------------
class _RigidAverageInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="runs of one modality (bias-corrected)")
    omp_nthreads = traits.Int(1, usedefault=True)
    seed = traits.Int(0, usedefault=True)


class _RigidAverageOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="average of the rigidly aligned runs (first run's grid)")
    n_runs = traits.Int(desc="number of runs averaged")


class RigidAverage(SimpleInterface):
    """Average several runs after rigid alignment to the first one.

    Rule: every run is used. The first run (inputs are given sorted by file name) is the
    reference grid; each other run is rigidly registered to it (Mattes MI,
    ``antsRegistrationSyNQuick[r]``), resampled once (linear), and each run is scaled by its
    median head intensity before averaging, so runs with different scanner scaling weigh
    equally. One run passes through unchanged.
    """

    input_spec = _RigidAverageInputSpec
    output_spec = _RigidAverageOutputSpec

    def _run_interface(self, runtime):
        out_file = os.path.join(runtime.cwd, "average.nii.gz")
        files = list(self.inputs.in_files)
        self._results["n_runs"] = len(files)
        self._results["out_file"] = out_file
        if len(files) == 1:
            shutil.copyfile(files[0], out_file)
            return runtime
        ants = _ants_setup(self.inputs.omp_nthreads, self.inputs.seed)
        ref = ants.image_read(files[0]).clone("float")

        def scale(img):
            return float(np.median(img.numpy()[ants.get_mask(img).numpy() > 0]))

        ref_scale = scale(ref)
        total = ref.numpy() / ref_scale
        for k, path in enumerate(files[1:]):
            moving = ants.image_read(path).clone("float")
            reg = ants.registration(ref, moving, type_of_transform="antsRegistrationSyNQuick[r]",
                                    outprefix=os.path.join(runtime.cwd, f"run{k + 1}_"))
            total += reg["warpedmovout"].numpy() / scale(moving)
        ants.image_write(ref.new_image_like((total / len(files) * ref_scale).astype(np.float32)),
                         out_file)
        return runtime


# --------------------------------------------------------------------------------------
# Template registration with template-based brain extraction
# --------------------------------------------------------------------------------------
class _RegisterInputSpec(BaseInterfaceInputSpec):
    moving = File(exists=True, mandatory=True, desc="bias-corrected native head image")
    template = File(exists=True, mandatory=True, desc="template T1w (registration grid)")
    template_mask = File(exists=True, mandatory=True, desc="template brain mask (same grid)")
    contrast = traits.Enum("T1w", "T2w", "FLAIR", usedefault=True, desc="moving contrast")
    preset = traits.Enum("fast", "accurate", "sloppy", usedefault=True,
                         desc="REGISTRATION_PRESETS key")
    omp_nthreads = traits.Int(1, usedefault=True)
    seed = traits.Int(0, usedefault=True)


class _RegisterOutputSpec(TraitedSpec):
    forward_transform = File(exists=True, desc="native -> template composite (.h5)")
    reverse_transform = File(exists=True, desc="template -> native composite (.h5)")
    brain_mask = File(exists=True, desc="native brain mask (template mask, warped back)")
    brain = File(exists=True, desc="native image times brain mask")
    warped = File(exists=True, desc="native image on the registration template grid")


def _dilate(ants, mask, radius_mm: float):
    """Binary dilation of an antspyx mask by about ``radius_mm``."""
    radius = max(1, int(round(radius_mm / min(mask.spacing))))
    return ants.iMath(mask, "MD", radius)


def rough_brain_mask(image, erode_mm: float = 5.0):
    """A morphological first guess of the brain in a head image (antspyx image in and out).

    Otsu threshold, erosion by ``erode_mm`` (cuts the thin bridges between brain and scalp
    across the dark skull and CSF), largest connected component, dilation by the same amount,
    holes filled. Only used to initialise the template registration, whose warped-back
    template mask is the final brain mask.
    """
    import ants

    bright = ants.threshold_image(image, "Otsu", 1)
    radius = max(1, int(round(erode_mm / min(image.spacing))))
    core = ants.iMath(ants.iMath(bright, "ME", radius), "GetLargestComponent")
    return ants.iMath(ants.iMath(core, "MD", radius), "FillHoles")


def crop_to_mask(mask, margin_mm: float, *images) -> list:
    """``images`` cut to ``mask``'s bounding box plus ``margin_mm`` on each side.

    The box is clipped to the grid (``images`` share ``mask``'s); each crop keeps its
    physical placement (its origin moves).
    """
    import ants

    inside = np.argwhere(mask.numpy() > 0)
    margin = np.ceil(margin_mm / np.asarray(mask.spacing) - 1e-6).astype(int)
    lower = np.maximum(inside.min(axis=0) - margin, 0).tolist()
    upper = np.minimum(inside.max(axis=0) + margin + 1, np.asarray(mask.shape)).tolist()
    return [ants.crop_indices(image, lower, upper) for image in images]


def register_to_template(moving: str, template: str, template_mask: str, *, outprefix: str,
                         contrast: str = "T1w",
                         preset: str | RegistrationSettings = "fast") -> dict[str, str]:
    """Register a native head image to a template, extracting the brain on the way.

    1. A morphological first guess of the brain (:func:`rough_brain_mask`) -> template
       brain affine (rigid + affine, Mattes MI). Registering a head with a bright scalp
       straight to a skull-stripped template shrinks the scalp onto the brain (10 mm error
       on the simulator's heads); the first guess removes the scalp.
    2. Native image -> template-brain registration (rigid -> affine -> SyN, ``preset``),
       initialised with (1), the metric restricted to the template mask and to
       the template mask warped back with (1), both dilated by 5 mm. Masking the metric
       rather than the image avoids an artificial edge at the crop, which biased the
       Jacobians (+10 % volume on the simulator's heads). Composite transforms are written
       as ``.h5``.
    3. The final native brain mask is the template mask warped back with the inverse of (2)
       (linear interpolation, threshold 0.5, holes filled).

    This is atlas-based brain extraction: its accuracy is that of the registration; a brain
    whose shape departs far from the template's (large lesions, resections, infants) gets
    a template-shaped mask.

    Parameters
    ----------
    moving, template, template_mask : str
        Paths: native bias-corrected image, template T1w, template brain mask (same grid).
    outprefix : str
        Prefix of the written files.
    contrast : {"T1w", "T2w", "FLAIR"}
        A non-T1w reference uses Mattes MI in the SyN stage.
    preset : {"fast", "accurate", "sloppy"} or RegistrationSettings
        Key of :data:`REGISTRATION_PRESETS` (or settings, as benchmarks try); the template
        must be on its grid (:meth:`RegistrationSettings.template_grid`).

    Returns
    -------
    dict
        ``forward_transform``, ``reverse_transform``, ``brain_mask``, ``brain``, ``warped``.
    """
    import ants

    settings = preset if isinstance(preset, RegistrationSettings) else REGISTRATION_PRESETS[preset]
    mov = ants.image_read(moving).clone("float")
    tpl = ants.image_read(template).clone("float")
    tmask = ants.image_read(template_mask).clone("float")
    tmask = ants.threshold_image(tmask, 0.5, 1e9)
    tpl_brain = tpl * tmask
    same_contrast = contrast == "T1w"
    head = ants.registration(tpl_brain, mov * rough_brain_mask(mov),
                             type_of_transform=settings.head_transform if same_contrast
                             else CROSS_MODAL_HEAD_TRANSFORM, outprefix=f"{outprefix}head_")
    rough = ants.apply_transforms(mov, tmask, head["invtransforms"], whichtoinvert=[True],
                                  interpolator="linear")
    rough = _dilate(ants, ants.threshold_image(rough, 0.5, 1e9), 5.0)
    masks = dict(mask=_dilate(ants, tmask, 5.0), moving_mask=rough, mask_all_stages=True,
                 write_composite_transform=True)
    if not same_contrast:
        reg = ants.registration(tpl_brain, mov, type_of_transform=CROSS_MODAL_TRANSFORM,
                                initial_transform=head["fwdtransforms"],
                                outprefix=f"{outprefix}brain_", **masks)
    elif settings.syn_iterations is None:
        reg = ants.registration(tpl_brain, mov, type_of_transform=settings.brain_transform,
                                initial_transform=head["fwdtransforms"],
                                outprefix=f"{outprefix}brain_", **masks)
    else:
        linear = ants.registration(tpl_brain, mov, type_of_transform=settings.brain_transform,
                                   initial_transform=head["fwdtransforms"],
                                   outprefix=f"{outprefix}linear_", **masks)
        syn_fixed, syn_masks = tpl_brain, masks
        if settings.syn_crop_mm is not None:
            syn_fixed, syn_mask = crop_to_mask(tmask, settings.syn_crop_mm, tpl_brain,
                                               masks["mask"])
            syn_masks = {**masks, "mask": syn_mask}
        reg = ants.registration(syn_fixed, mov, type_of_transform="SyNOnly", syn_metric="CC",
                                syn_sampling=settings.syn_radius, grad_step=settings.syn_step,
                                flow_sigma=3, total_sigma=0,
                                reg_iterations=settings.syn_iterations,
                                initial_transform=linear["fwdtransforms"],
                                outprefix=f"{outprefix}brain_", **syn_masks)
        if settings.syn_crop_mm is not None:  # the warped image on the whole template grid
            reg["warpedmovout"] = ants.apply_transforms(tpl_brain, mov, reg["fwdtransforms"],
                                                        interpolator="linear")
    mask = ants.apply_transforms(mov, tmask, reg["invtransforms"], interpolator="linear")
    mask = ants.iMath(ants.threshold_image(mask, 0.5, 1e9), "FillHoles").clone("unsigned char")
    out = {
        "forward_transform": reg["fwdtransforms"],
        "reverse_transform": reg["invtransforms"],
        "brain_mask": f"{outprefix}brain_mask.nii.gz",
        "brain": f"{outprefix}brain.nii.gz",
        "warped": f"{outprefix}warped.nii.gz",
    }
    ants.image_write(mask, out["brain_mask"])
    ants.image_write(mov * mask.clone("float"), out["brain"])
    ants.image_write(reg["warpedmovout"], out["warped"])
    return out


class RegisterToTemplate(SimpleInterface):
    """Template brain extraction and rigid -> affine -> SyN registration (antspyx).

    See :func:`register_to_template` for the method and its limits.
    """

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        _ants_setup(self.inputs.omp_nthreads, self.inputs.seed)
        self._results.update(register_to_template(
            self.inputs.moving, self.inputs.template, self.inputs.template_mask,
            outprefix=os.path.join(runtime.cwd, "reg_"), contrast=self.inputs.contrast,
            preset=self.inputs.preset,
        ))
        return runtime


# --------------------------------------------------------------------------------------
# Intra-subject rigid coregistration (T2w / FLAIR -> T1w)
# --------------------------------------------------------------------------------------
class _CoregInputSpec(BaseInterfaceInputSpec):
    moving = File(exists=True, mandatory=True, desc="bias-corrected T2w/FLAIR")
    reference = File(exists=True, mandatory=True, desc="bias-corrected reference (T1w)")
    reference_mask = File(exists=True, mandatory=True, desc="reference brain mask")
    omp_nthreads = traits.Int(1, usedefault=True)
    seed = traits.Int(0, usedefault=True)


class _CoregOutputSpec(TraitedSpec):
    transform = File(exists=True, desc="rigid moving -> reference transform (ITK .mat)")
    warped = File(exists=True, desc="moving image resampled on the reference grid")


class RigidCoregistration(SimpleInterface):
    """Rigid, mutual-information coregistration of a T2w/FLAIR to the subject's T1w.

    Mattes mutual information (``antsRegistrationSyN[r]``: 1000x500x250x100 iterations at
    shrink 8x4x2x1) with the metric restricted to the reference brain mask dilated by 5 mm,
    so the brain and its boundary drive the fit rather than neck and scalp. Boundary-based
    registration (which needs white-matter surfaces) is not available without FreeSurfer.
    """

    input_spec = _CoregInputSpec
    output_spec = _CoregOutputSpec

    def _run_interface(self, runtime):
        ants = _ants_setup(self.inputs.omp_nthreads, self.inputs.seed)
        ref = ants.image_read(self.inputs.reference).clone("float")
        mov = ants.image_read(self.inputs.moving).clone("float")
        mask = ants.threshold_image(ants.image_read(self.inputs.reference_mask).clone("float"),
                                    0.5, 1e9)
        reg = ants.registration(ref, mov, type_of_transform="antsRegistrationSyN[r]",
                                mask=_dilate(ants, mask, 5.0),
                                outprefix=os.path.join(runtime.cwd, "coreg_"))
        transform = os.path.join(runtime.cwd, "coreg_rigid.mat")
        shutil.copyfile(reg["fwdtransforms"][0], transform)
        warped = os.path.join(runtime.cwd, "coreg_warped.nii.gz")
        ants.image_write(reg["warpedmovout"], warped)
        self._results.update(transform=transform, warped=warped)
        return runtime


# --------------------------------------------------------------------------------------
# Tissue segmentation with template priors
# --------------------------------------------------------------------------------------
class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="bias-corrected native image")
    mask = File(exists=True, mandatory=True, desc="native brain mask")
    priors = InputMultiObject(File(exists=True), mandatory=True,
                              desc="template GM, WM, CSF probability maps (template grid)")
    reverse_transform = File(exists=True, mandatory=True, desc="template -> native (.h5)")
    prior_weight = traits.Float(0.25, usedefault=True, desc="Atropos prior weight")
    n_iterations = traits.Int(5, usedefault=True, desc="Atropos EM iterations")
    omp_nthreads = traits.Int(1, usedefault=True)


class _SegmentOutputSpec(TraitedSpec):
    probseg = OutputMultiObject(File(exists=True), desc="native GM, WM, CSF probabilities")
    dseg = File(exists=True, desc="native hard labels (1 GM, 2 WM, 3 CSF)")


class PriorSegmentation(SimpleInterface):
    """GM/WM/CSF segmentation with Atropos (Avants et al. 2011) and template priors.

    The template's tissue probability maps are warped into native space with the reverse
    registration transform and used as Atropos priors (``PriorProbabilityImages``, weight
    0.25, MRF smoothing 0.1, fixed random seed). Probabilities are renormalised to sum to
    one inside the brain mask.
    """

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        ants = _ants_setup(self.inputs.omp_nthreads, None)
        img = ants.image_read(self.inputs.in_file).clone("float")
        mask = ants.threshold_image(ants.image_read(self.inputs.mask).clone("float"), 0.5, 1e9)
        priors = [
            ants.apply_transforms(img, ants.image_read(p).clone("float"),
                                  [self.inputs.reverse_transform], interpolator="linear")
            for p in self.inputs.priors
        ]
        seg = ants.atropos(a=img * mask, x=mask, i=priors, m="[0.1,1x1x1]",
                           c=f"[{self.inputs.n_iterations},0]",
                           priorweight=self.inputs.prior_weight, r=0)
        inside = mask.numpy() > 0
        probs = np.stack([p.numpy() for p in seg["probabilityimages"]]) * inside
        probs = np.clip(probs, 0, None)
        total = probs.sum(axis=0)
        probs = np.where(total > 0, probs / np.maximum(total, 1e-8), 0.0)
        # voxels Atropos left empty inside the mask fall back on the warped priors
        prior_arr = np.stack([p.numpy() for p in priors]) * inside
        empty = inside & (total <= 0)
        probs[:, empty] = prior_arr[:, empty] / np.maximum(prior_arr[:, empty].sum(0), 1e-8)
        out_files = []
        for label, arr in zip(("GM", "WM", "CSF"), probs, strict=True):
            path = os.path.join(runtime.cwd, f"probseg_{label}.nii.gz")
            ants.image_write(img.new_image_like(arr.astype(np.float32)), path)
            out_files.append(path)
        dseg = (np.argmax(probs, axis=0) + 1) * inside
        dseg_file = os.path.join(runtime.cwd, "dseg.nii.gz")
        ants.image_write(img.new_image_like(dseg.astype(np.float32)).clone("unsigned char"),
                         dseg_file)
        self._results.update(probseg=out_files, dseg=dseg_file)
        return runtime


# --------------------------------------------------------------------------------------
# Resampling and Jacobians
# --------------------------------------------------------------------------------------
class _ApplyInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample")
    reference = File(exists=True, mandatory=True, desc="output grid")
    transforms = InputMultiObject(File(exists=True), mandatory=True,
                                  desc="ANTs transform list, last applied first")
    interpolation = traits.Enum("linear", "nearestNeighbor", "bSpline", "lanczosWindowedSinc",
                                usedefault=True)
    binarize = traits.Bool(False, usedefault=True, desc="threshold the result at 0.5")
    clip_negative = traits.Bool(True, usedefault=True, desc="set negative values to 0")
    omp_nthreads = traits.Int(1, usedefault=True)


class _ApplyOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class ApplyTransforms(SimpleInterface):
    """Resample an image through a list of transforms in a single interpolation.

    A T2w goes to MNI through ``[T1w->MNI composite, T2w->T1w rigid]``: ANTs composes the
    list and interpolates once.
    """

    input_spec = _ApplyInputSpec
    output_spec = _ApplyOutputSpec

    def _run_interface(self, runtime):
        ants = _ants_setup(self.inputs.omp_nthreads, None)
        ref = ants.image_read(self.inputs.reference).clone("float")
        mov = ants.image_read(self.inputs.in_file).clone("float")
        out = ants.apply_transforms(ref, mov, list(self.inputs.transforms),
                                    interpolator=self.inputs.interpolation)
        arr = out.numpy()
        if self.inputs.clip_negative:
            arr = np.clip(arr, 0, None)
        if self.inputs.binarize:
            out = out.new_image_like((arr > 0.5).astype(np.float32)).clone("unsigned char")
        else:
            out = out.new_image_like(arr.astype(np.float32))
        out_file = os.path.join(runtime.cwd, Path(self.inputs.in_file).name.split(".")[0]
                                + "_resampled.nii.gz")
        ants.image_write(out, out_file)
        self._results["out_file"] = out_file
        return runtime


def log_jacobian(reference: str, transforms: list[str], outprefix: str) -> str:
    """Log Jacobian determinant of a template -> native mapping on the template grid.

    The transforms are composed into one displacement field on ``reference``
    (``antsApplyTransforms`` with ``compose``) and
    :func:`ants.create_jacobian_determinant_image` takes log det(I + grad u). A positive
    value means the native brain is larger than the template there; the affine part
    (head size) is included, as in VBM modulation for absolute volumes.

    Parameters
    ----------
    reference : str
        Template-space grid.
    transforms : list of str
        The forward (native -> template) transform list.
    outprefix : str
        Prefix of the written displacement field and log-Jacobian image.

    Returns
    -------
    str
        Path of the float32 log-Jacobian image.
    """
    import ants

    ref = ants.image_read(reference).clone("float")
    field = ants.apply_transforms(ref, ref, list(transforms), compose=outprefix)
    jac = ants.create_jacobian_determinant_image(ref, field, do_log=True)
    arr = np.nan_to_num(jac.numpy(), nan=0.0, posinf=0.0, neginf=0.0)
    out_file = f"{outprefix}logjacobian.nii.gz"
    ants.image_write(ref.new_image_like(arr.astype(np.float32)), out_file)
    return out_file


class _LogJacInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True, desc="template grid")
    transforms = InputMultiObject(File(exists=True), mandatory=True,
                                  desc="forward transform list")
    omp_nthreads = traits.Int(1, usedefault=True)


class _LogJacOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="log Jacobian determinant on the template grid")


class LogJacobian(SimpleInterface):
    """Log Jacobian determinant of the native <- template mapping (see :func:`log_jacobian`)."""

    input_spec = _LogJacInputSpec
    output_spec = _LogJacOutputSpec

    def _run_interface(self, runtime):
        _ants_setup(self.inputs.omp_nthreads, None)
        self._results["out_file"] = log_jacobian(
            self.inputs.reference, list(self.inputs.transforms),
            os.path.join(runtime.cwd, "jac_"))
        return runtime


class _ModulateInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="tissue probability on the template grid")
    log_jacobian = File(exists=True, mandatory=True, desc="log Jacobian, same grid")


class _ModulateOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="modulated map (probability x Jacobian)")


class Modulate(SimpleInterface):
    """VBM modulation: tissue probability x Jacobian determinant.

    The sum of the modulated map times the template voxel volume equals the native tissue
    volume, so group analyses compare absolute amounts of tissue.
    """

    input_spec = _ModulateInputSpec
    output_spec = _ModulateOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb

        prob = nb.load(self.inputs.in_file)
        logjac = np.asanyarray(nb.load(self.inputs.log_jacobian).dataobj, dtype=np.float32)
        data = np.asanyarray(prob.dataobj, dtype=np.float32) * np.exp(logjac)
        out = nb.Nifti1Image(data.astype(np.float32), prob.affine, prob.header)
        out.set_data_dtype(np.float32)
        out_file = os.path.join(runtime.cwd, "modulated.nii.gz")
        out.to_filename(out_file)
        self._results["out_file"] = out_file
        return runtime
