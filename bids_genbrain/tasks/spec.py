"""What an image task is, as recorded in a checkpoint's ``config.json`` (``"task"``).

``enhance``
    Corrupted scan -> clean scan, for each of ``modalities`` (the modality index tells the
    model which); one image-condition channel, ``corrupted``. ``corruption`` is the
    :class:`~bids_genbrain.corrupt.CorruptionConfig` the training pairs were drawn from.
``synthesize``
    ``sources`` (one or more modalities of the same participant and session) -> ``target``;
    one image-condition channel per source, in order.

Both are conditioned on the modality index only (as the paper does): any age/sex embedders of
a fine-tuned checkpoint stay in the network but are always given as missing (null).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..corrupt import CorruptionConfig
from ..derivatives import IMAGE_MODALITIES as SCAN_MODALITIES
from ..errors import InputError

TASK_NAMES = ("enhance", "synthesize")
# SCAN_MODALITIES: what a task writes (desc-enhanced_<m>, desc-synthetic_<m>: the naming
# table's image kinds); sources may be any modality of the cohort store
OUTPUT_DESC = {"enhance": "enhanced", "synthesize": "synthetic"}
"""Naming-table kind (:data:`bids_genbrain.derivatives.KINDS`, also its ``desc``) of each
task's outputs."""
CORRUPTED = "corrupted"
"""Name of the enhancement model's image-condition channel."""


class TaskError(InputError):
    """A model or an option that does not fit the image task asked for."""


@dataclass
class ImageTask:
    """An image task (see the module docstring).

    Parameters
    ----------
    name : {"enhance", "synthesize"}
    modalities : list of str
        Modalities enhanced (``enhance``).
    sources : list of str
        Source modalities (``synthesize``).
    target : str, optional
        Target modality (``synthesize``).
    corruption : dict
        Corruption model of the training pairs (``enhance``).
    """

    name: str
    modalities: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    target: str | None = None
    corruption: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES:
            raise TaskError(f"unknown task {self.name!r}; use one of {TASK_NAMES}")
        self.modalities = [str(m) for m in self.modalities]
        self.sources = [str(m) for m in self.sources]
        if self.name == "enhance":
            if not self.modalities:
                raise TaskError("--task enhance needs --modality (e.g. --modality T1w FLAIR)")
            _check_scans(self.modalities, "--modality")
            if len(set(self.modalities)) != len(self.modalities):
                raise TaskError(f"--modality {self.modalities}: each modality once")
            if self.sources or self.target:
                raise TaskError("--source/--target belong to --task synthesize, not enhance")
            self.corruption = CorruptionConfig.from_dict(self.corruption).to_dict() \
                if self.corruption else CorruptionConfig().to_dict()
        else:
            if not self.sources or not self.target:
                raise TaskError("--task synthesize needs --source MODALITY... and --target "
                                "MODALITY (e.g. --source T1w --target FLAIR)")
            _check_scans([self.target], "--target")
            if self.target in self.sources:
                raise TaskError(f"--target {self.target} is also a --source; a model cannot "
                                "take the image it imputes")
            if len(set(self.sources)) != len(self.sources):
                raise TaskError(f"--source {self.sources}: each modality once")
            if self.modalities:
                raise TaskError("--modality belongs to --task enhance; synthesis uses "
                                "--source and --target")

    @classmethod
    def enhance(cls, modalities: Sequence[str],
                corruption: CorruptionConfig | None = None) -> ImageTask:
        """An enhancement task for ``modalities``."""
        return cls("enhance", modalities=list(modalities),
                   corruption=(corruption or CorruptionConfig()).to_dict())

    @classmethod
    def synthesize(cls, sources: Sequence[str], target: str) -> ImageTask:
        """A synthesis task ``sources -> target``."""
        return cls("synthesize", sources=list(sources), target=target)

    @property
    def image_conditions(self) -> list[str]:
        """Names of the model's image-condition channels, in order."""
        return [CORRUPTED] if self.name == "enhance" else list(self.sources)

    @property
    def store_modalities(self) -> list[str]:
        """Modalities the training cohort store holds (outputs first)."""
        return list(self.modalities) if self.name == "enhance" else [self.target, *self.sources]

    @property
    def outputs(self) -> list[str]:
        """Modalities the task writes."""
        return list(self.modalities) if self.name == "enhance" else [str(self.target)]

    @property
    def desc(self) -> str:
        """``desc`` entity of the outputs."""
        return OUTPUT_DESC[self.name]

    def corruption_config(self) -> CorruptionConfig:
        """The corruption model of an enhancement task."""
        return CorruptionConfig.from_dict(self.corruption)

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.name == "enhance":
            return f"enhancement of {', '.join(self.modalities)}"
        return f"synthesis of {self.target} from {' + '.join(self.sources)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``config.json``'s ``task``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageTask:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


def _check_scans(modalities: Sequence[str], option: str) -> None:
    bad = [m for m in modalities if m not in SCAN_MODALITIES]
    if bad:
        raise TaskError(f"{option} {bad}: image tasks write scans; choose among "
                        f"{list(SCAN_MODALITIES)}")


def task_of(bundle: Any) -> ImageTask:
    """The image task a loaded checkpoint was trained for.

    Parameters
    ----------
    bundle : bids_genbrain.model.checkpoint.GenBrain

    Returns
    -------
    ImageTask

    Raises
    ------
    TaskError
        The checkpoint has no image task (a generative model), or its record is malformed.
    """
    where = bundle.path or "the model"
    if not bundle.task:
        raise TaskError(f"{where}: not an image-task model (it generates images from "
                        "conditions); train one with genbrain finetune --task enhance|synthesize")
    try:
        task = ImageTask.from_dict(bundle.task)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{where}/config.json: malformed task record ({exc})") from None
    if task.image_conditions != list(bundle.image_conditions):
        raise TaskError(f"{where}/config.json: the task's image conditions "
                        f"{task.image_conditions} differ from the model's "
                        f"{bundle.image_conditions}")
    return task


def check_model_for(bundle: Any, *, enhance: bool, impute: str | None,
                    resolution: float) -> ImageTask:
    """Check up front that a checkpoint can do what the participant level is asked.

    Parameters
    ----------
    bundle : GenBrain
    enhance : bool
        ``--enhance`` given.
    impute : str, optional
        ``--impute MODALITY``.
    resolution : float
        The participant level's grid (``--resolution``).

    Returns
    -------
    ImageTask

    Raises
    ------
    TaskError
        Not a task model, another task, another target, or another grid.
    """
    task = task_of(bundle)
    where = bundle.path or "the model"
    if enhance and task.name != "enhance":
        raise TaskError(f"--enhance: {where} was trained for {task.describe()}, not "
                        "enhancement; use a model from genbrain finetune --task enhance")
    if impute is not None:
        if task.name != "synthesize":
            raise TaskError(f"--impute {impute}: {where} was trained for {task.describe()}; "
                            "use a model from genbrain finetune --task synthesize")
        if task.target != impute:
            raise TaskError(f"--impute {impute}: {where} imputes {task.target} (from "
                            f"{' + '.join(task.sources)}), not {impute}")
    model_res = float(bundle.arch.resolution)
    if abs(model_res - float(resolution)) > 1e-6:
        raise TaskError(f"{where} works on the {model_res:g} mm grid, the participant level "
                        f"writes {float(resolution):g} mm; pass --resolution {model_res:g} or "
                        f"use a {float(resolution):g} mm model")
    return task
