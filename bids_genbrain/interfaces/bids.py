"""Writing workflow results into the derivatives dataset under their BIDS names."""

from __future__ import annotations

import shutil

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..derivatives import sidecar_path, write_json
from ..utils import atomic_path


class _SinkInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="result file of a node")
    out_path = traits.Str(mandatory=True, desc="target path (from derivatives.derivative_path)")
    sidecar = traits.Dict(desc="JSON sidecar content; none written when empty")


class _SinkOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the written derivative")


class DerivativesSink(SimpleInterface):
    """Copy a node's result to its derivatives path atomically, with its JSON sidecar.

    The target name is composed when the workflow is built (every entity is known then) with
    :func:`bids_genbrain.derivatives.derivative_path`; the copy goes through a temporary file
    renamed into place, so an interrupted run never leaves a truncated derivative.
    """

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        with atomic_path(self.inputs.out_path) as tmp:
            shutil.copyfile(self.inputs.in_file, tmp)
        if self.inputs.sidecar:
            write_json(sidecar_path(self.inputs.out_path), self.inputs.sidecar)
        self._results["out_file"] = self.inputs.out_path
        return runtime
