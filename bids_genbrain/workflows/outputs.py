"""Derivatives and report figures of one participant's session.

Every output name comes from the naming table (:func:`bids_genbrain.derivatives.kind_path`)
with entities fixed when the workflow is built (``sub``, ``ses``, ``space``, ``res``,
``label``, ``desc``), following the naming contract in DESIGN.md. Figures go to ``sub-<label>/figures/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow
from niworkflows.interfaces.reportlets.masks import ROIsPlot, SimpleShowMaskRPT
from niworkflows.interfaces.reportlets.registration import SimpleBeforeAfterRPT

from ..derivatives import bids_name, kind_path, mni_entities
from ..interfaces.bids import DerivativesSink
from ..templates import TEMPLATE, TISSUES, get_template, mni_grid, template_source


def output_paths(output_dir: Path | str, entities: dict[str, Any], *, reference: str,
                 modalities: Sequence[str], resolution: float) -> dict[str, Path]:
    """Every derivative path a session's workflow writes, by key.

    Parameters
    ----------
    output_dir : path-like
        Derivatives root.
    entities : dict
        ``{"sub": ..., "ses": ...}`` (``ses`` may be None).
    reference : str
        Reference contrast (``T1w`` when present).
    modalities : sequence of str
        Every contrast of the session, reference included.
    resolution : float
        Output grid (mm).

    Returns
    -------
    dict
        Keys ``preproc_<modality>``, ``mask``, ``probseg_<tissue>``, ``gm_modulated``,
        ``log_jacobian``, ``xfm_forward``, ``xfm_reverse``, ``coreg_<modality>``,
        ``native_preproc``, ``native_mask``, ``native_dseg``, ``qc``.
    """
    root = Path(output_dir)
    ents = dict(entities)
    paths = {f"preproc_{m}": kind_path(root, "preproc", modality=m, resolution=resolution,
                                       **ents) for m in modalities}
    paths["mask"] = kind_path(root, "mask", resolution=resolution, **ents)
    for tissue in TISSUES:
        paths[f"probseg_{tissue}"] = kind_path(root, tissue, resolution=resolution, **ents)
    paths["gm_modulated"] = kind_path(root, "GMmod", resolution=resolution, **ents)
    paths["log_jacobian"] = kind_path(root, "logjacobian", resolution=resolution, **ents)
    paths["xfm_forward"] = kind_path(root, "xfm", **ents, **{"from": reference, "to": TEMPLATE})
    paths["xfm_reverse"] = kind_path(root, "xfm", **ents, **{"from": TEMPLATE, "to": reference})
    for m in modalities:
        if m != reference:
            paths[f"coreg_{m}"] = kind_path(root, "coreg", **ents,
                                            **{"from": m, "to": reference})
    paths["native_preproc"] = kind_path(root, "native_preproc", modality=reference, **ents)
    paths["native_mask"] = kind_path(root, "native_mask", **ents)
    paths["native_dseg"] = kind_path(root, "native_dseg", **ents)
    paths["qc"] = kind_path(root, "qc", **ents)
    return paths


def figure_path(output_dir: Path | str, entities: dict[str, Any], suffix: str,
                **extra: Any) -> Path:
    """``<output_dir>/sub-<label>/figures/<name>.svg`` (fMRIPrep's layout)."""
    ents = {**entities, **extra}
    return Path(output_dir) / f"sub-{ents['sub']}" / "figures" / bids_name(ents, suffix, ".svg")


def init_ds_anat_wf(
    *,
    output_dir: Path | str,
    entities: dict[str, Any],
    reference: str,
    modalities: Sequence[str],
    resolution: float,
    sources: dict[str, list[str]],
    preset: str,
    name: str = "ds_anat_wf",
) -> Workflow:
    """Write a session's derivatives with JSON sidecars.

    Parameters
    ----------
    output_dir : path-like
        Derivatives root.
    entities : dict
        ``sub`` and ``ses`` labels.
    reference : str
        Reference contrast.
    modalities : sequence of str
        All contrasts of the session (reference first).
    resolution : float
        Output grid (mm).
    sources : dict
        Contrast -> input file URIs (``Sources`` fields).
    preset : str
        Registration preset, recorded in the sidecars.
    name : str
        Workflow name.

    Inputs
    ------
    preproc_<modality>, mask_mni, probseg_mni, gm_modulated, log_jacobian, forward_transform,
    reverse_transform, coreg_<modality>, preproc, brain_mask, dseg, qc_tsv

    Outputs
    -------
    out_files
        Every written path (for the caller's bookkeeping).
    """
    paths = output_paths(output_dir, entities, reference=reference, modalities=modalities,
                         resolution=resolution)
    shape, _ = mni_grid(resolution)
    all_sources = [s for m in modalities for s in sources.get(m, [])]
    common = {
        "SpatialReference": TEMPLATE,
        "Resolution": f"{resolution:g} mm isotropic, FSL grid {'x'.join(map(str, shape))}",
        "TemplateSource": template_source(),
        "RegistrationPreset": preset,
    }
    workflow = Workflow(name=name)
    coregs = [m for m in modalities if m != reference]
    fields = ([f"preproc_{m}" for m in modalities] + [f"coreg_{m}" for m in coregs]
              + ["mask_mni", "probseg_mni", "gm_modulated", "log_jacobian", "forward_transform",
                 "reverse_transform", "preproc", "brain_mask", "dseg", "qc_tsv"])
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")

    specs: list[tuple[str, str, dict[str, Any] | None, Any]] = []
    for m in modalities:
        specs.append((f"preproc_{m}", f"preproc_{m}",
                      {**common, "Sources": sources.get(m, []), "SkullStripped": False}, None))
    for m in coregs:
        specs.append((f"coreg_{m}", f"coreg_{m}",
                      {"Sources": sources.get(m, []), "FromSpace": m, "ToSpace": reference,
                       "Type": "rigid", "Format": "ITK MatrixOffsetTransform (.mat)"}, None))
    specs += [
        ("mask_mni", "mask", {**common, "Type": "Brain", "Sources": sources[reference]}, None),
        ("gm_modulated", "gm_modulated",
         {**common, "Sources": sources[reference], "Modulation": "GM probability x Jacobian "
          "determinant of the template-to-native mapping (affine + nonlinear)"}, None),
        ("log_jacobian", "log_jacobian",
         {**common, "Sources": sources[reference],
          "Description": "natural log of the Jacobian determinant of the template-to-native "
                         "mapping; > 0 where the native brain is larger"}, None),
        ("forward_transform", "xfm_forward",
         {"Sources": sources[reference], "FromSpace": reference, "ToSpace": TEMPLATE,
          "Format": "ITK/ANTs composite HDF5 (antsApplyTransforms -t, nitransforms)"}, None),
        ("reverse_transform", "xfm_reverse",
         {"Sources": sources[reference], "FromSpace": TEMPLATE, "ToSpace": reference,
          "Format": "ITK/ANTs composite HDF5 (antsApplyTransforms -t, nitransforms)"}, None),
        ("preproc", "native_preproc", {"Sources": sources[reference], "SkullStripped": False},
         None),
        ("brain_mask", "native_mask", {"Type": "Brain", "Sources": sources[reference]}, None),
        ("dseg", "native_dseg", {"Sources": sources[reference],
                                 "Labels": {"1": "GM", "2": "WM", "3": "CSF"}}, None),
        ("qc_tsv", "qc", None, None),
    ]
    for k, tissue in enumerate(TISSUES):
        specs.append(("probseg_mni", f"probseg_{tissue}",
                      {**common, "Sources": sources[reference]}, k))

    merge = pe.Node(niu.Merge(len(specs)), name="merge", run_without_submitting=True)
    connections = []
    for k, (field, key, sidecar, index) in enumerate(specs):
        node = pe.Node(DerivativesSink(out_path=str(paths[key])),
                       name=f"ds_{key.lower()}", run_without_submitting=True)
        if sidecar:
            node.inputs.sidecar = sidecar
        source = field if index is None else (field, _item, index)
        connections += [(inputnode, node, [(source, "in_file")]),
                        (node, merge, [("out_file", f"in{k + 1}")])]
    workflow.connect(connections + [(merge, outputnode, [("out", "out_files")])])
    return workflow


def _item(items, index):
    """Item ``index`` of a list (a nipype connection function: no outside names)."""
    return items[index]


def init_anat_reports_wf(
    *,
    output_dir: Path | str,
    entities: dict[str, Any],
    reference: str,
    modalities: Sequence[str],
    resolution: float,
    name: str = "anat_reports_wf",
) -> Workflow:
    """Reportlets of a session: brain mask, tissues, registration and coregistration.

    Parameters
    ----------
    output_dir : path-like
        Derivatives root (figures go to ``sub-<label>/figures``).
    entities : dict
        ``sub`` and ``ses`` labels.
    reference : str
        Reference contrast.
    modalities : sequence of str
        All contrasts (reference first); one registration figure each.
    resolution : float
        Output grid (mm).
    name : str
        Workflow name.

    Inputs
    ------
    preproc, brain_mask, dseg
        Native reference image, brain mask, tissue labels.
    preproc_<modality>
        Each contrast on the output grid.
    coreg_<modality>
        Each non-reference contrast resampled on the reference grid.
    """
    workflow = Workflow(name=name)
    coregs = [m for m in modalities if m != reference]
    fields = (["preproc", "brain_mask", "dseg"] + [f"preproc_{m}" for m in modalities]
              + [f"coreg_{m}" for m in coregs])
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    template = str(get_template(resolution, suffix="T1w"))
    template_mask = str(get_template(resolution, suffix="mask"))

    def sink(key: str, suffix: str, **extra: Any) -> pe.Node:
        path = figure_path(output_dir, entities, suffix, **extra)
        return pe.Node(DerivativesSink(out_path=str(path)), name=f"ds_report_{key}",
                       run_without_submitting=True)

    mask_rpt = pe.Node(SimpleShowMaskRPT(), name="mask_rpt", mem_gb=1.0)
    ds_mask = sink("mask", "mask", desc="brain")
    seg_rpt = pe.Node(ROIsPlot(colors=["b", "magenta"], levels=[1.5, 2.5]), name="seg_rpt",
                      mem_gb=1.0)
    ds_seg = sink("dseg", "dseg")
    connections = [
        (inputnode, mask_rpt, [("preproc", "background_file"), ("brain_mask", "mask_file")]),
        (mask_rpt, ds_mask, [("out_report", "in_file")]),
        (inputnode, seg_rpt, [("preproc", "in_file"), ("brain_mask", "in_mask"),
                              ("dseg", "in_rois")]),
        (seg_rpt, ds_seg, [("out_report", "in_file")]),
    ]
    for m in modalities:
        norm = pe.Node(SimpleBeforeAfterRPT(after=template, wm_seg=template_mask,
                                            before_label=f"{m} (participant)",
                                            after_label=f"{TEMPLATE} template"),
                       name=f"norm_rpt_{m.lower()}", mem_gb=1.0)
        ds_norm = sink(f"norm_{m.lower()}", m, **mni_entities(resolution),
                       desc="registration")
        connections += [(inputnode, norm, [(f"preproc_{m}", "before")]),
                        (norm, ds_norm, [("out_report", "in_file")])]
    for m in coregs:
        coreg = pe.Node(SimpleBeforeAfterRPT(before_label=m, after_label=reference),
                        name=f"coreg_rpt_{m.lower()}", mem_gb=1.0)
        ds_coreg = sink(f"coreg_{m.lower()}", m, desc="coreg")
        connections += [(inputnode, coreg, [(f"coreg_{m}", "before"), ("preproc", "after"),
                                            ("brain_mask", "wm_seg")]),
                        (coreg, ds_coreg, [("out_report", "in_file")])]
    workflow.connect(connections)
    return workflow
