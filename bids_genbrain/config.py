"""One configuration object for a BIDS-App run, validated before any work starts.

As in fMRIPrep's ``config.py``, the command line only fills this object; every part of the
app reads its settings from it, and the run log records it whole.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

ANALYSIS_LEVELS = ("participant", "group")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Config:
    """Settings of one ``bids_genbrain`` run (see ``bids_genbrain --help`` for each option)."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False
    work_dir: Path | None = None
    nprocs: int = 0
    omp_nthreads: int = 0
    mem_gb: float | None = None
    seed: int = 42
    device: str = "auto"
    derivatives: list[Path] = field(default_factory=list)
    model: Path | str | None = None
    sloppy: bool = False
    check_only: bool = False
    resolution: float = 2.0
    plugin: str = "MultiProc"
    plugin_args: dict[str, Any] = field(default_factory=dict)
    verbose: int = 0
    # group level
    modality: str = "GMmod"
    condition: list[str] = field(default_factory=lambda: ["age", "sex"])
    contrast: str | None = None
    confound: list[str] = field(default_factory=list)
    n_synthetic: int = 1000
    reference_map: Path | None = None
    synthetic_conditions: Path | None = None
    preset: str = "small"
    steps: int = 10000
    batch_size: int = 32
    lr: float | None = None
    sampling_steps: int = 50
    cfg_scale: float = 1.2
    average: int = 1
    privacy_threshold: float = 0.95
    command_line: list[str] = field(default_factory=list)

    def validate(self) -> Config:
        """Check paths and values up front; resolve defaults.

        Returns
        -------
        Config
            ``self``, with absolute paths and resolved thread counts.

        Raises
        ------
        InputError
            The first problem found, naming the option or file and the fix.
        """
        if self.analysis_level not in ANALYSIS_LEVELS:
            raise InputError(
                f"analysis level {self.analysis_level!r} unknown; use one of {ANALYSIS_LEVELS}"
            )
        self.bids_dir = Path(self.bids_dir).expanduser().resolve()
        self.output_dir = Path(self.output_dir).expanduser().resolve()
        if not self.bids_dir.is_dir():
            raise InputError(f"{self.bids_dir}: BIDS_DIR does not exist; give a BIDS dataset root")
        if self.output_dir == self.bids_dir:
            raise InputError(
                f"{self.output_dir}: OUTPUT_DIR must differ from BIDS_DIR (the input is never"
                " written to); use e.g. BIDS_DIR/derivatives/genbrain"
            )
        inside = self.bids_dir in self.output_dir.parents
        if inside and (self.bids_dir / "derivatives") not in (
            self.output_dir, *self.output_dir.parents
        ):
            raise InputError(
                f"{self.output_dir}: an OUTPUT_DIR inside BIDS_DIR must be under"
                f" {self.bids_dir / 'derivatives'}; the input dataset is never written to"
            )
        self.work_dir = (
            Path(self.work_dir).expanduser().resolve() if self.work_dir
            else self.output_dir / "work"
        )
        if self.bids_dir in self.work_dir.parents and "derivatives" not in self.work_dir.parts:
            raise InputError(f"{self.work_dir}: --work-dir must not be inside BIDS_DIR")
        if self.model is not None:  # a folder or URL, fetched, hash/grid/mask checked
            from .model.fetch import resolve_model

            self.model = resolve_model(self.model)
        for name in ("bids_filter_file", "reference_map", "synthetic_conditions"):
            value = getattr(self, name)
            if value is not None:
                path = Path(value).expanduser().resolve()
                if not path.exists():
                    raise InputError(f"{path}: --{name.replace('_', '-')} not found")
                setattr(self, name, path)
        resolved = []
        for path in self.derivatives:
            path = Path(path).expanduser().resolve()
            if not path.is_dir():
                raise InputError(f"{path}: --derivatives folder not found")
            resolved.append(path)
        self.derivatives = resolved
        if self.device not in DEVICES:
            raise InputError(f"--device {self.device!r} unknown; use one of {DEVICES}")
        if self.resolution <= 0:
            raise InputError(f"--resolution must be positive (mm), got {self.resolution}")
        for name in ("n_synthetic", "steps", "batch_size", "sampling_steps", "average"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr is None:
            from .model.presets import default_lr

            self.lr = default_lr(self.preset, fine_tuning=self.model is not None)
        if not self.lr > 0:
            raise InputError("--lr must be positive")
        if not 0 < self.privacy_threshold <= 1:
            raise InputError("--privacy-threshold must be in (0, 1]")
        if self.seed < 0:
            raise InputError("--seed must be a non-negative integer")
        cpus = os.cpu_count() or 1
        self.nprocs = self.nprocs if self.nprocs > 0 else cpus
        self.omp_nthreads = self.omp_nthreads if self.omp_nthreads > 0 else min(self.nprocs, 8)
        if self.omp_nthreads > self.nprocs:
            raise InputError(
                f"--omp-nthreads ({self.omp_nthreads}) cannot exceed --nprocs ({self.nprocs})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (paths as strings) for logs and provenance."""
        return {k: (str(v) if isinstance(v, Path) else
                    [str(x) for x in v] if isinstance(v, list) and v and isinstance(v[0], Path)
                    else v)
                for k, v in asdict(self).items()}
