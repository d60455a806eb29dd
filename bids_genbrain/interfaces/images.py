"""Image header and intensity interfaces that need no ANTs: conforming, FOV masks."""

from __future__ import annotations

import os

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)


class _ConformInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="a 3D NIfTI image (4D with one volume ok)")


class _ConformOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image in RAS+ voxel order, float32")
    orientation = traits.Str(desc="axis codes of the input (e.g. LPS)")
    oblique = traits.Bool(desc="whether the input's voxel axes were oblique")


class Conform(SimpleInterface):
    """Reorient an image to the canonical RAS+ voxel order (no resampling).

    Uses :func:`nibabel.as_closest_canonical`: voxel axes are permuted and flipped so the
    array is stored closest to RAS+; the physical position of every voxel is unchanged (an
    oblique affine stays oblique, which ANTs handles). Data become float32, qform = sform,
    and a trailing singleton 4th dimension is dropped.
    """

    input_spec = _ConformInputSpec
    output_spec = _ConformOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        data = np.asanyarray(img.dataobj, dtype=np.float32)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"{self.inputs.in_file}: expected a 3D image, got {data.shape}")
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
        img3d = nb.Nifti1Image(data, img.affine)
        canonical = nb.as_closest_canonical(img3d)
        out = nb.Nifti1Image(np.asanyarray(canonical.dataobj, dtype=np.float32), canonical.affine)
        out.set_qform(canonical.affine, code=1)
        out.set_sform(canonical.affine, code=1)
        out.header.set_xyzt_units("mm")
        out_file = os.path.join(runtime.cwd, "conformed.nii.gz")
        out.to_filename(out_file)
        zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
        cosines = np.abs(img.affine[:3, :3] / zooms)
        self._results["out_file"] = out_file
        self._results["orientation"] = "".join(nb.aff2axcodes(img.affine))
        self._results["oblique"] = bool(cosines.max(axis=0).min() < 1 - 1e-3)
        return runtime


class _FOVMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="an image whose field of view is wanted")


class _FOVMaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="uint8 image of ones on the input's grid")


class FOVMask(SimpleInterface):
    """A mask of ones over an image's whole field of view (for coverage in MNI space)."""

    input_spec = _FOVMaskInputSpec
    output_spec = _FOVMaskOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        out = nb.Nifti1Image(np.ones(img.shape[:3], dtype=np.uint8), img.affine)
        out_file = os.path.join(runtime.cwd, "fov_mask.nii.gz")
        out.to_filename(out_file)
        self._results["out_file"] = out_file
        return runtime
