"""Anatomical workflows: the reference image's fit to MNI and other contrasts' coregistration.

The reference contrast is the T1w when the session has one, else the T2w, else the FLAIR.
Its runs are conformed, bias-corrected, averaged, brain-extracted and registered to the
template; tissues are segmented with template priors; images and maps are resampled onto
the output MNI grid. Other contrasts are rigidly coregistered to the reference and reach MNI
through the composed transform, with one interpolation.
"""

from __future__ import annotations

from importlib.metadata import version

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..interfaces.ants import (
    REGISTRATION_PRESETS,
    ApplyTransforms,
    LogJacobian,
    Modulate,
    N4BiasFieldCorrection,
    PriorSegmentation,
    RegisterToTemplate,
    RigidAverage,
    RigidCoregistration,
    preset_name,
)
from ..interfaces.images import Conform, FOVMask
from ..templates import TEMPLATE, TISSUES, get_template, template_source

ANAT_OUTPUTS = (
    "preproc", "brain_mask", "dseg", "probseg", "forward_transform", "reverse_transform",
    "preproc_mni", "mask_mni", "fov_mni", "probseg_mni", "gm_modulated", "log_jacobian",
    "n_runs",
)
"""Fields of :func:`init_anat_wf`'s outputnode."""


def _mem_gb(resolution: float) -> float:
    """Rough peak memory of a registration node at a template resolution."""
    return 6.0 if resolution <= 1.0 else 2.0


def init_anat_wf(
    *,
    reference: str = "T1w",
    sloppy: bool = False,
    registration: str = "fast",
    omp_nthreads: int = 1,
    resolution: float = 2.0,
    seed: int = 0,
    name: str = "anat_wf",
) -> Workflow:
    """Fit the reference anatomical image to MNI152NLin6Asym and derive its MNI-space maps.

    Parameters
    ----------
    reference : {"T1w", "T2w", "FLAIR"}
        Contrast of the reference image.
    sloppy : bool
        The ``sloppy`` preset (tests, demos): overrides ``registration``.
    registration : {"fast", "accurate"}
        Registration preset (:data:`bids_genbrain.interfaces.ants.REGISTRATION_PRESETS`):
        ``fast`` on the 2 mm template (the default), ``accurate`` on the 1 mm template.
    omp_nthreads : int
        Threads of each ANTs node.
    resolution : float
        Output grid in mm (FSL's MNI grid; 2 mm is GenBrain's).
    seed : int
        ANTs random seed.
    name : str
        Workflow name.

    Inputs
    ------
    in_files
        The reference contrast's runs (sorted paths).

    Outputs
    -------
    preproc, brain_mask, dseg, probseg
        Native bias-corrected average, brain mask, hard labels, GM/WM/CSF probabilities.
    forward_transform, reverse_transform
        Native -> MNI and MNI -> native composite transforms (``.h5``).
    preproc_mni, mask_mni, fov_mni, probseg_mni
        On the output grid: image, brain mask, field of view, GM/WM/CSF probabilities.
    gm_modulated, log_jacobian
        VBM-modulated GM and the log Jacobian determinant on the output grid.
    n_runs
        Number of runs averaged.
    """
    preset = REGISTRATION_PRESETS[preset_name(sloppy=sloppy, registration=registration)]
    reg_res = preset.template_grid(resolution)
    workflow = Workflow(name=name)
    workflow.__desc__ = f"""
Anatomical ({reference}) preprocessing used ANTs through antspyx {version("antspyx")}.
Each {reference} run was reoriented to RAS+ (NiBabel) and corrected for intensity
non-uniformity with N4 (Tustison et al. 2010); several runs were rigidly aligned to the first
and averaged. The brain was extracted by warping the template brain mask back to native space
(atlas-based extraction) and the image was registered to {TEMPLATE} at {reg_res:g} mm
(template source: {template_source()}) with {preset.description}. Grey matter, white matter
and cerebrospinal fluid were segmented with Atropos (Avants et al. 2011) using the template's
tissue probability maps as priors. The image, brain mask and tissue probability maps were
resampled onto the {resolution:g} mm {TEMPLATE} grid in a single interpolation; grey matter
was modulated by the Jacobian determinant of the transform (voxel-based morphometry).
"""
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_files"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(ANAT_OUTPUTS)), name="outputnode")
    grid = str(get_template(resolution, suffix="T1w"))
    priors = [str(get_template(reg_res, suffix="probseg", label=t)) for t in TISSUES]

    conform = pe.MapNode(Conform(), iterfield=["in_file"], name="conform", mem_gb=1.0)
    n4 = pe.MapNode(N4BiasFieldCorrection(omp_nthreads=omp_nthreads), iterfield=["in_file"],
                    name="n4", n_procs=omp_nthreads, mem_gb=2.0)
    average = pe.Node(RigidAverage(omp_nthreads=omp_nthreads, seed=seed), name="average",
                      n_procs=omp_nthreads, mem_gb=2.0)
    register = pe.Node(
        RegisterToTemplate(template=str(get_template(reg_res, suffix="T1w")),
                           template_mask=str(get_template(reg_res, suffix="mask")),
                           contrast=reference, preset=preset.name, omp_nthreads=omp_nthreads,
                           seed=seed),
        name="register", n_procs=omp_nthreads, mem_gb=_mem_gb(reg_res))
    segment = pe.Node(PriorSegmentation(priors=priors, omp_nthreads=omp_nthreads,
                                        n_iterations=3 if sloppy else 5),
                      name="segment", n_procs=omp_nthreads, mem_gb=_mem_gb(reg_res))
    to_mni = pe.Node(ApplyTransforms(reference=grid, omp_nthreads=omp_nthreads),
                     name="to_mni", n_procs=omp_nthreads, mem_gb=1.0)
    mask_to_mni = pe.Node(ApplyTransforms(reference=grid, binarize=True,
                                          omp_nthreads=omp_nthreads),
                          name="mask_to_mni", n_procs=omp_nthreads, mem_gb=1.0)
    fov = pe.Node(FOVMask(), name="fov", mem_gb=0.5)
    fov_to_mni = pe.Node(ApplyTransforms(reference=grid, binarize=True,
                                         omp_nthreads=omp_nthreads),
                         name="fov_to_mni", n_procs=omp_nthreads, mem_gb=1.0)
    tissues_to_mni = pe.MapNode(ApplyTransforms(reference=grid, omp_nthreads=omp_nthreads),
                                iterfield=["in_file"], name="tissues_to_mni",
                                n_procs=omp_nthreads, mem_gb=1.0)
    logjac = pe.Node(LogJacobian(reference=grid, omp_nthreads=omp_nthreads), name="logjac",
                     n_procs=omp_nthreads, mem_gb=1.0)
    modulate = pe.Node(Modulate(), name="modulate", mem_gb=0.5)

    def _first(items):
        return items[0]

    workflow.connect([
        (inputnode, conform, [("in_files", "in_file")]),
        (conform, n4, [("out_file", "in_file")]),
        (n4, average, [("out_file", "in_files")]),
        (average, register, [("out_file", "moving")]),
        (average, segment, [("out_file", "in_file")]),
        (register, segment, [("brain_mask", "mask"),
                             ("reverse_transform", "reverse_transform")]),
        (average, to_mni, [("out_file", "in_file")]),
        (register, to_mni, [("forward_transform", "transforms")]),
        (register, mask_to_mni, [("brain_mask", "in_file"),
                                 ("forward_transform", "transforms")]),
        (average, fov, [("out_file", "in_file")]),
        (fov, fov_to_mni, [("out_file", "in_file")]),
        (register, fov_to_mni, [("forward_transform", "transforms")]),
        (segment, tissues_to_mni, [("probseg", "in_file")]),
        (register, tissues_to_mni, [("forward_transform", "transforms")]),
        (register, logjac, [("forward_transform", "transforms")]),
        (tissues_to_mni, modulate, [(("out_file", _first), "in_file")]),
        (logjac, modulate, [("out_file", "log_jacobian")]),
        (average, outputnode, [("out_file", "preproc"), ("n_runs", "n_runs")]),
        (register, outputnode, [("brain_mask", "brain_mask"),
                                ("forward_transform", "forward_transform"),
                                ("reverse_transform", "reverse_transform")]),
        (segment, outputnode, [("dseg", "dseg"), ("probseg", "probseg")]),
        (to_mni, outputnode, [("out_file", "preproc_mni")]),
        (mask_to_mni, outputnode, [("out_file", "mask_mni")]),
        (fov_to_mni, outputnode, [("out_file", "fov_mni")]),
        (tissues_to_mni, outputnode, [("out_file", "probseg_mni")]),
        (logjac, outputnode, [("out_file", "log_jacobian")]),
        (modulate, outputnode, [("out_file", "gm_modulated")]),
    ])  # fmt:skip
    return workflow


def init_coreg_wf(
    *,
    modality: str,
    reference: str = "T1w",
    omp_nthreads: int = 1,
    resolution: float = 2.0,
    seed: int = 0,
    name: str | None = None,
) -> Workflow:
    """Bring a T2w or FLAIR to MNI through the subject's reference image.

    Parameters
    ----------
    modality : {"T2w", "FLAIR"}
        Contrast of this image.
    reference : str
        Contrast it is coregistered to (``T1w`` normally).
    omp_nthreads : int
        Threads of each ANTs node.
    resolution : float
        Output grid in mm.
    seed : int
        ANTs random seed.
    name : str, optional
        Workflow name (``<modality>_coreg_wf``).

    Inputs
    ------
    in_files
        This contrast's runs.
    reference_image, reference_mask
        The reference's bias-corrected native image and brain mask.
    forward_transform
        Reference -> MNI composite transform.

    Outputs
    -------
    preproc_mni, fov_mni
        The image and its field of view on the output grid.
    coreg_transform
        Rigid ``<modality> -> <reference>`` transform (ITK ``.mat``).
    coreg_warped
        The image resampled on the reference grid (for the report).
    n_runs
        Number of runs averaged.
    """
    workflow = Workflow(name=name or f"{modality.lower()}_coreg_wf")
    workflow.__desc__ = f"""
The {modality} image(s) were reoriented, N4-corrected and averaged as above, rigidly
coregistered to the {reference} (ANTs, Mattes mutual information restricted to the dilated
brain mask) and resampled to {TEMPLATE} at {resolution:g} mm by composing the coregistration
with the {reference}-to-template transform, so that a single interpolation was applied.
"""
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["in_files", "reference_image", "reference_mask", "forward_transform"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["preproc_mni", "fov_mni", "coreg_transform", "coreg_warped", "n_runs"]),
        name="outputnode")
    grid = str(get_template(resolution, suffix="T1w"))
    conform = pe.MapNode(Conform(), iterfield=["in_file"], name="conform", mem_gb=1.0)
    n4 = pe.MapNode(N4BiasFieldCorrection(omp_nthreads=omp_nthreads), iterfield=["in_file"],
                    name="n4", n_procs=omp_nthreads, mem_gb=2.0)
    average = pe.Node(RigidAverage(omp_nthreads=omp_nthreads, seed=seed), name="average",
                      n_procs=omp_nthreads, mem_gb=2.0)
    coreg = pe.Node(RigidCoregistration(omp_nthreads=omp_nthreads, seed=seed), name="coreg",
                    n_procs=omp_nthreads, mem_gb=2.0)
    chain = pe.Node(niu.Merge(2), name="chain", run_without_submitting=True)
    to_mni = pe.Node(ApplyTransforms(reference=grid, omp_nthreads=omp_nthreads),
                     name="to_mni", n_procs=omp_nthreads, mem_gb=1.0)
    fov = pe.Node(FOVMask(), name="fov", mem_gb=0.5)
    fov_to_mni = pe.Node(ApplyTransforms(reference=grid, binarize=True,
                                         omp_nthreads=omp_nthreads),
                         name="fov_to_mni", n_procs=omp_nthreads, mem_gb=1.0)
    workflow.connect([
        (inputnode, conform, [("in_files", "in_file")]),
        (conform, n4, [("out_file", "in_file")]),
        (n4, average, [("out_file", "in_files")]),
        (average, coreg, [("out_file", "moving")]),
        (inputnode, coreg, [("reference_image", "reference"),
                            ("reference_mask", "reference_mask")]),
        (inputnode, chain, [("forward_transform", "in1")]),
        (coreg, chain, [("transform", "in2")]),
        (average, to_mni, [("out_file", "in_file")]),
        (chain, to_mni, [("out", "transforms")]),
        (average, fov, [("out_file", "in_file")]),
        (fov, fov_to_mni, [("out_file", "in_file")]),
        (chain, fov_to_mni, [("out", "transforms")]),
        (to_mni, outputnode, [("out_file", "preproc_mni")]),
        (fov_to_mni, outputnode, [("out_file", "fov_mni")]),
        (coreg, outputnode, [("transform", "coreg_transform"), ("warped", "coreg_warped")]),
        (average, outputnode, [("n_runs", "n_runs")]),
    ])  # fmt:skip
    return workflow
