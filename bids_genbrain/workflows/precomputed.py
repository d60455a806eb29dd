"""Use existing derivatives (fMRIPrep, sMRIPrep, QSIPrep ...) instead of preprocessing.

``--derivatives PATH...`` folders are searched by BIDS file name. For each participant (and
session) two routes bring their maps into this dataset under our naming
(``space-MNI152NLin6Asym``, ``res-<resolution>``), so the group level reads them like our own:

1. **T1w-space anatomy** (fMRIPrep/sMRIPrep): the T1w-space ``label-GM_probseg`` (and WM, CSF,
   ``desc-preproc_T1w``, ``desc-brain_mask`` when present) with its
   ``from-T1w_to-<space>_mode-image_xfm.h5`` are resampled onto our grid in one interpolation,
   through the composed transform ``T1w -> <space> -> MNI152NLin6Asym`` (the template
   transform of :mod:`bids_genbrain.spaces` when ``<space>`` is not MNI152NLin6Asym). The
   modulated GM (VBM: GM probability x Jacobian determinant of that mapping, affine part
   included) and the log Jacobian are computed as the participant level computes its own,
   so the group level's default modality (``GMmod``) works without rerunning registration.
2. **Template-space maps**: every other 3D image in a template space (``space-MNI...`` or any
   TemplateFlow template in its home) is copied when it is already MNI152NLin6Asym on our
   grid, resampled (linear; nearest for masks and label maps) when it is MNI152NLin6Asym on
   another grid, and otherwise brought over with the template-to-template transform -- never
   relabelled. A tissue density (``desc-...modulated...``) is also multiplied by that
   transform's Jacobian determinant. Maps already produced by route 1 are not imported again.

A space that cannot be transformed is a :class:`bids_genbrain.spaces.SpaceError` (exit 2);
:func:`check_derivative_spaces` finds it before any participant is processed. Entities other
than BIDS's own (QSIPrep's ``model-``/``param-`` ...) are folded into ``desc``
(``param-fa`` -> ``desc-fa``), so any template-space map (FA, MD, seed FC ...) becomes a
modality named by its entities. 4D series are skipped. Every sidecar says which transform
was applied (``SourceSpace``, ``TemplateTransform``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np

from ..derivatives import (ENTITY_ORDER, derivative_path, mni_entities, parse_name,
                           sidecar_path, write_image, write_json)
from ..spaces import (
    SpaceTransform,
    apply_space_transform,
    log_jacobian_of,
    space_transform,
    templateflow_home,
)
from ..templates import TEMPLATE, TISSUES, mni_grid
from ..utils import atomic_path
from .outputs import output_paths

LOGGER = logging.getLogger(__name__)

_NEAREST_SUFFIXES = ("mask", "dseg")
_NON_TEMPLATE_SPACES = {"T1w", "T2w", "FLAIR", "fsnative", "orig", "scanner", "ACPC", "boldref",
                        "sbref", "dwi", "individual", "session", "anat", "func"}


@dataclass
class ImportedMap:
    """One derivative brought into the output dataset.

    Attributes
    ----------
    source, target : pathlib.Path
    resampled : bool
        True when the image was resampled onto our grid.
    method : str
        ``copy``, ``resample`` (same template, other grid), ``templateflow`` or
        ``registration`` (template-to-template transform), or ``t1w`` (route 1).
    """

    source: Path
    target: Path
    resampled: bool
    method: str = "copy"


@dataclass
class _File:
    path: Path
    entities: dict[str, str]
    suffix: str
    ext: str


@dataclass
class T1wAnatomy:
    """A participant's T1w-space anatomy and its transform to a template (fMRIPrep layout).

    Attributes
    ----------
    xfm : pathlib.Path
        ``from-T1w_to-<space>_mode-image_xfm.h5``.
    space : str
        ``<space>``.
    probseg : dict
        Tissue (``GM``, ``WM``, ``CSF``) -> T1w-space probability map.
    preproc, mask : pathlib.Path or None
        ``desc-preproc_T1w`` and ``desc-brain_mask`` in T1w space.
    entities : dict
        ``sub`` and ``ses`` of the files (``ses`` None for subject-level anatomy).
    """

    xfm: Path
    space: str
    probseg: dict[str, Path]
    preproc: Path | None = None
    mask: Path | None = None
    entities: dict[str, str | None] = field(default_factory=dict)


def _target_entities(entities: dict[str, str], resolution: float) -> dict[str, str]:
    known = {k: v for k, v in entities.items() if k in ENTITY_ORDER}
    extra = [v for k, v in entities.items() if k not in ENTITY_ORDER]
    if extra:
        known["desc"] = "".join([known.get("desc", ""), *extra])
    known = {k: "".join(ch for ch in v if ch.isalnum()) for k, v in known.items()}
    if "space" in known:
        known = mni_entities(resolution, **known)
    return known


def _on_grid(img: nb.spatialimages.SpatialImage, resolution: float) -> bool:
    shape, affine = mni_grid(resolution)
    return tuple(img.shape[:3]) == tuple(shape) and np.allclose(img.affine, affine, atol=1e-3)


def _is_template_space(space: str | None) -> bool:
    if not space or space in _NON_TEMPLATE_SPACES:
        return False
    return space.startswith("MNI") or (templateflow_home() / f"tpl-{space}").is_dir()


def _subject_files(derivatives: Sequence[Path | str], subject_id: str,
                   session_id: str | None) -> list[_File]:
    """Files of a participant; with a session, that session's and the session-less ones."""
    found: dict[Path, _File] = {}
    for root in derivatives:
        for path in Path(root).glob(f"sub-{subject_id}/**/sub-{subject_id}_*"):
            if not path.is_file():
                continue
            entities, suffix, ext = parse_name(path.name)
            if entities.get("sub") != subject_id:
                continue
            if session_id is not None and entities.get("ses") not in (None, session_id):
                continue
            found[path] = _File(path, entities, suffix, ext)
    return [found[p] for p in sorted(found)]


def _template_maps(files: Iterable[_File]) -> list[_File]:
    return [f for f in files if f.ext in (".nii", ".nii.gz")
            and _is_template_space(f.entities.get("space"))]


def find_mni_derivatives(derivatives: Sequence[Path | str], subject_id: str,
                         session_id: str | None = None) -> list[Path]:
    """Template-space images and MNI152NLin6Asym transforms of one participant.

    Parameters
    ----------
    derivatives : sequence of path-like
        Derivatives dataset roots (need not pass BIDS validation).
    subject_id : str
        Bare label.
    session_id : str, optional
        Keep only this session's files (and those without a session).

    Returns
    -------
    list of pathlib.Path
        NIfTI images whose ``space`` is a template (``MNI...`` or a TemplateFlow template) and
        ``.h5`` transforms to or from MNI152NLin6Asym, sorted.
    """
    files = _subject_files(derivatives, subject_id, session_id)
    xfms = [f for f in files if f.ext == ".h5"
            and TEMPLATE in (f.entities.get("from"), f.entities.get("to"))]
    return sorted(f.path for f in [*_template_maps(files), *xfms])


def find_t1w_anatomy(derivatives: Sequence[Path | str], subject_id: str,
                     session_id: str | None = None) -> T1wAnatomy | None:
    """fMRIPrep's T1w-space GM probability map and T1w -> template transform, if present.

    A transform straight to MNI152NLin6Asym (fMRIPrep's ``--output-spaces
    MNI152NLin6Asym``) is preferred; otherwise the first template in name order.

    Parameters
    ----------
    derivatives, subject_id, session_id
        See :func:`find_mni_derivatives`.

    Returns
    -------
    T1wAnatomy or None
        None when the participant has no T1w-space GM probseg with a template transform.
    """
    files = _subject_files(derivatives, subject_id, session_id)
    xfms = sorted((f for f in files if f.ext == ".h5" and f.entities.get("from") == "T1w"
                   and f.entities.get("mode", "image") == "image"
                   and _is_template_space(f.entities.get("to"))),
                  key=lambda f: (f.entities["to"] != TEMPLATE, f.entities["to"], f.path.name))
    for xfm in xfms:
        ses = xfm.entities.get("ses")

        def native(suffix: str, ses=ses, **ents: str) -> Path | None:
            for f in files:
                if (f.suffix == suffix and f.ext in (".nii", ".nii.gz")
                        and f.entities.get("ses") == ses and "space" not in f.entities
                        and all(f.entities.get(k) == v for k, v in ents.items())
                        and set(f.entities) <= {"sub", "ses", "acq", "rec", "run", *ents}):
                    return f.path
            return None

        probseg = {t: p for t in TISSUES if (p := native("probseg", label=t)) is not None}
        if "GM" in probseg:
            return T1wAnatomy(xfm.path, xfm.entities["to"], probseg,
                              preproc=native("T1w", desc="preproc"),
                              mask=native("mask", desc="brain"),
                              entities={"sub": subject_id, "ses": ses})
    return None


def check_derivative_spaces(derivatives: Sequence[Path | str], subjects: Sequence[str],
                            resolution: float = 2.0) -> dict[str, SpaceTransform]:
    """Resolve, before any participant runs, the transform of every template space used.

    A registration between two templates is computed here, once, and cached.

    Parameters
    ----------
    derivatives : sequence of path-like
        Derivatives dataset roots.
    subjects : sequence of str
        Bare participant labels that will be processed.
    resolution : float
        Output grid (mm).

    Returns
    -------
    dict
        Space -> :class:`bids_genbrain.spaces.SpaceTransform`.

    Raises
    ------
    bids_genbrain.spaces.SpaceError
        When a space cannot be brought onto MNI152NLin6Asym (names a file that uses it).
    """
    from ..spaces import SpaceError

    users: dict[str, Path] = {}
    for subject in subjects:
        files = _subject_files(derivatives, subject, None)
        for f in _template_maps(files):
            users.setdefault(f.entities["space"], f.path)
        anatomy = find_t1w_anatomy(derivatives, subject)
        if anatomy is not None:
            users.setdefault(anatomy.space, anatomy.xfm)
    transforms = {}
    for space, example in sorted(users.items()):
        try:
            transforms[space] = space_transform(space, resolution)
        except SpaceError as exc:
            raise SpaceError(f"{example}: {exc}") from None
    return transforms


def _write_map(data: np.ndarray, target: Path, resolution: float, sidecar: dict) -> None:
    _, affine = mni_grid(resolution)
    write_image(nb.Nifti1Image(data.astype(np.float32), affine), target, sidecar)


def import_t1w_anatomy(anatomy: T1wAnatomy, output_dir: Path | str, *,
                       resolution: float = 2.0) -> list[ImportedMap]:
    """Resample T1w-space anatomy onto our grid and compute its modulated GM (VBM).

    Parameters
    ----------
    anatomy : T1wAnatomy
        From :func:`find_t1w_anatomy`.
    output_dir : path-like
        Our derivatives root.
    resolution : float
        Output grid (mm).

    Returns
    -------
    list of ImportedMap
        Preprocessed T1w and brain mask (when given), GM/WM/CSF probabilities, modulated GM,
        log Jacobian; all with ``method="t1w"``.
    """
    template = space_transform(anatomy.space, resolution)
    chain = (*template.transforms, str(anatomy.xfm))
    paths = output_paths(output_dir, anatomy.entities, reference="T1w", modalities=["T1w"],
                         resolution=resolution)
    shape, _ = mni_grid(resolution)
    common = {
        "SpatialReference": TEMPLATE,
        "Resolution": f"{resolution:g} mm isotropic, FSL grid {'x'.join(map(str, shape))}",
        "Transforms": [str(anatomy.xfm), *template.transforms],
        **template.sidecar(),
    }
    route = (f"T1w -> {anatomy.space}" + (f" -> {TEMPLATE}" if anatomy.space != TEMPLATE else "")
             + " in one interpolation")
    imported = []

    def put(key: str, source: Path, data: np.ndarray, description: str,
            sources: list[Path] | None = None) -> None:
        _write_map(data, paths[key], resolution, {
            **common, "Sources": [str(p) for p in (sources or [source])],
            "Description": description})
        imported.append(ImportedMap(source, paths[key], True, "t1w"))

    probs = {t: np.clip(apply_space_transform(nb.load(p), chain, resolution), 0.0, 1.0)
             for t, p in anatomy.probseg.items()}
    for tissue, data in probs.items():
        put(f"probseg_{tissue}", anatomy.probseg[tissue], data,
            f"{tissue} probability resampled from T1w space ({route}, linear)")
    logjac = log_jacobian_of(chain, resolution)
    gm_sources = [anatomy.probseg["GM"], anatomy.xfm]
    put("gm_modulated", anatomy.probseg["GM"], probs["GM"] * np.exp(logjac),
        "Modulated GM (VBM): the GM probability resampled from T1w space times the Jacobian"
        f" determinant of the composed {route.split(' in ')[0]} mapping (affine part"
        " included, as the participant level's own)", gm_sources)
    put("log_jacobian", anatomy.xfm, logjac,
        f"Log Jacobian determinant of the composed {route.split(' in ')[0]} mapping",
        gm_sources[1:])
    if anatomy.preproc is not None:
        img = nb.load(anatomy.preproc)
        put("preproc_T1w", anatomy.preproc,
            np.clip(apply_space_transform(img, chain, resolution), 0, None),
            f"Preprocessed T1w resampled ({route}, linear)")
    if anatomy.mask is not None:
        mask = apply_space_transform(nb.load(anatomy.mask), chain, resolution) > 0.5
        put("mask", anatomy.mask, mask.astype(np.uint8),
            f"Brain mask resampled ({route}, linear, threshold 0.5)")
    if anatomy.space == TEMPLATE:
        with atomic_path(paths["xfm_forward"]) as tmp:
            shutil.copyfile(anatomy.xfm, tmp)
        imported.append(ImportedMap(anatomy.xfm, paths["xfm_forward"], False, "copy"))
    return imported


def _import_template_map(f: _File, target: Path, resolution: float) -> ImportedMap:
    """Route 2 for one 3D template-space image."""
    from nilearn.image import resample_img

    img = nb.load(f.path)
    space = f.entities["space"]
    sidecar: dict = {"Sources": [str(f.path)], "SpatialReference": TEMPLATE}
    if space == TEMPLATE and _on_grid(img, resolution):
        with atomic_path(target) as tmp:
            shutil.copyfile(f.path, tmp)
        write_json(sidecar_path(target), sidecar)
        return ImportedMap(f.path, target, False, "copy")
    nearest = f.suffix in _NEAREST_SUFFIXES
    transform = space_transform(space, resolution)
    data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    if transform.method == "identity":
        LOGGER.warning("%s is not on the %g mm FSL grid: resampled", f.path.name, resolution)
        shape, affine = mni_grid(resolution)
        out = np.asanyarray(resample_img(
            nb.Nifti1Image(data, img.affine), target_affine=affine, target_shape=shape,
            interpolation="nearest" if nearest else "linear", force_resample=True,
            copy_header=True).dataobj, dtype=np.float32)
    else:
        out = apply_space_transform(nb.Nifti1Image(data, img.affine), transform.transforms,
                                    resolution,
                                    interpolation="genericLabel" if nearest else "linear")
        density = "modulated" in f.entities.get("desc", "").lower()
        if density:
            out = out * np.exp(log_jacobian_of(transform.transforms, resolution))
            sidecar["Modulation"] = ("multiplied by the Jacobian determinant of the "
                                     "template-to-template transform (volume kept)")
        elif f.suffix == "jacobian" and f.entities.get("desc") == "log":
            out = out + log_jacobian_of(transform.transforms, resolution)
    sidecar.update(Resampled=True, Interpolation="nearest" if nearest else "linear",
                   **transform.sidecar())
    write_image(nb.Nifti1Image(out, mni_grid(resolution)[1]), target, sidecar)
    return ImportedMap(f.path, target, True,
                       "resample" if transform.method == "identity" else transform.method)


def import_derivatives(derivatives: Sequence[Path | str], output_dir: Path | str, *,
                       subject_id: str, session_id: str | None = None,
                       resolution: float = 2.0) -> list[ImportedMap]:
    """Bring a participant's existing derivatives into the output dataset (both routes).

    Parameters
    ----------
    derivatives : sequence of path-like
        Derivatives dataset roots.
    output_dir : path-like
        Our derivatives root.
    subject_id : str
        Bare label.
    session_id : str, optional
        Only this session (and session-less anatomy).
    resolution : float
        Our output grid (mm).

    Returns
    -------
    list of ImportedMap
        Empty when the participant has neither T1w-space anatomy nor template-space maps.

    Raises
    ------
    bids_genbrain.spaces.SpaceError
        When a map's space cannot be brought onto MNI152NLin6Asym.
    """
    imported = []
    anatomy = find_t1w_anatomy(derivatives, subject_id, session_id)
    if anatomy is not None:
        imported += import_t1w_anatomy(anatomy, output_dir, resolution=resolution)
    done = {m.target for m in imported}
    files = _subject_files(derivatives, subject_id, session_id)
    for f in files:
        if f.ext == ".h5" and "space" not in f.entities and TEMPLATE in (
                f.entities.get("from"), f.entities.get("to")):
            target = derivative_path(output_dir, _target_entities(f.entities, resolution),
                                     f.suffix, f.ext)
            if target not in done:
                with atomic_path(target) as tmp:
                    shutil.copyfile(f.path, tmp)
                imported.append(ImportedMap(f.path, target, False, "copy"))
                done.add(target)
    for f in _template_maps(files):
        img = nb.load(f.path)
        if len(img.shape) > 3 and img.shape[3] > 1:
            LOGGER.info("skipping 4D derivative %s", f.path.name)
            continue
        target = derivative_path(output_dir, _target_entities(f.entities, resolution),
                                 f.suffix, f.ext)
        if target in done:
            LOGGER.info("%s: %s already made from T1w space (one interpolation); not imported",
                        f.path.name, target.name)
            continue
        imported.append(_import_template_map(f, target, resolution))
        done.add(target)
    return imported
