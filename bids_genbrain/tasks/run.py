"""The participant level's image-task step (``--enhance`` / ``--impute``), from the configuration.

:func:`load_task_model` loads and checks the ``--model`` once, before any participant is
processed (a model for another task or grid is a one-line error, exit 2);
:func:`apply_to_participant` runs :func:`~.apply.apply_to_session` for each session and turns
what it did into report sections; a session without the model's sources fails that participant
alone (exit 2 when every failure is of that kind). With ``--reports-only``,
:func:`sections_from_outputs` rebuilds those sections from the outputs already written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..model.checkpoint import GenBrain
from ..reports.base import Section
from .apply import Settings, TaskRun, apply_to_session, outputs_of_session
from .spec import ImageTask, TaskError, check_model_for

TITLES = {"enhanced": "Enhanced images", "synthetic": "Imputed images"}
"""Report section title of each kind of output (``desc`` entity)."""


@dataclass
class TaskModel:
    """A checked task model with the settings it samples with."""

    bundle: GenBrain
    task: ImageTask
    settings: Settings


def load_task_model(config: Any) -> TaskModel:
    """Load ``config.model`` and check it fits ``--enhance``/``--impute`` and the grid.

    Parameters
    ----------
    config : bids_genbrain.config.Config
        Validated (``model``, ``enhance``, ``impute``, ``resolution``, ``device``, ``seed``,
        ``average``, ``sampling_steps``, ``impute_existing``, ``omp_nthreads``).

    Returns
    -------
    TaskModel

    Raises
    ------
    InputError
        Not a checkpoint, not a task model, another task/target/grid, no such device.
    """
    import torch

    from ..model.checkpoint import load_checkpoint
    from ..model.train import resolve_device

    try:
        device = resolve_device(config.device)
    except ValueError as exc:
        raise TaskError(str(exc)) from None
    torch.set_num_threads(config.omp_nthreads)
    bundle = load_checkpoint(config.model, device)
    task = check_model_for(bundle, enhance=config.enhance, impute=config.impute,
                           resolution=config.resolution)
    settings = Settings(seed=config.seed, average=config.average, steps=config.sampling_steps,
                        device=str(device), impute_existing=config.impute_existing)
    return TaskModel(bundle, task, settings)


def apply_to_participant(config: Any, model: TaskModel, subject: str,
                         sessions: Sequence[str | None]) -> tuple[list[Section], str]:
    """Apply the task model to every session of a participant.

    Parameters
    ----------
    config : bids_genbrain.config.Config
    model : TaskModel
    subject : str
        Bare label.
    sessions : sequence of str or None
        Session labels (None without sessions).

    Returns
    -------
    sections : list of Section
        The participant report's section (outputs table, figures, notes).
    problem : str
        One line naming what the participant lacks (empty when every session worked).
    """
    runs: list[TaskRun] = []
    problems: list[str] = []
    for session in dict.fromkeys(sessions):
        try:
            runs.append(apply_to_session(model.bundle, model.task, config.output_dir, subject,
                                         session, model.settings))
        except InputError as exc:
            problems.append(str(exc))
    text = (f"GenBrain {model.task.describe()} with {model.bundle.path} (mean of "
            f"{model.settings.average} sample(s), {model.settings.steps} DDIM steps).")
    return [_section(TITLES[model.task.desc], text, runs, problems)], "; ".join(problems)


def sections_from_outputs(output_dir: Path, subject: str,
                          sessions: Sequence[str | None]) -> list[Section]:
    """Report sections of the task outputs an earlier run wrote (``--reports-only``).

    Figures are re-drawn from the images named in each output's sidecar; no model is loaded.

    Parameters
    ----------
    output_dir : Path
        Participant-level derivatives root.
    subject : str
        Bare label.
    sessions : sequence of str or None

    Returns
    -------
    list of Section
        One per kind of output found (enhanced, imputed); none without outputs.
    """
    runs = [outputs_of_session(output_dir, subject, s) for s in dict.fromkeys(sessions)]
    sections = []
    for desc, title in TITLES.items():
        mine = [TaskRun([o for o in r.outputs if f"_desc-{desc}_" in o.path.name],
                        [n for n in r.notes if f"_desc-{desc}_" in n]) for r in runs]
        if any(r.outputs or r.notes for r in mine):
            sections.append(_section(title, "Rebuilt from the existing outputs "
                                     "(--reports-only).", mine, []))
    return sections


def _section(title: str, text: str, runs: Sequence[TaskRun], problems: Sequence[str]
             ) -> Section:
    """The report section of a participant's task outputs."""
    outputs = [o for r in runs for o in r.outputs]
    has_real = any(o.real for o in outputs)
    lines = [text + " Each figure: the model's input(s), the output"
             + (" and the real image; the table compares them on [0, 1] intensities."
                if has_real else ".")]
    lines += [n for r in runs for n in r.notes] + list(problems)
    return Section(title, text="\n".join(lines), tables=[TaskRun(outputs).table()]
                   if outputs else [], figures=[o.figure for o in outputs],
                   status="error" if problems else "ok")


def methods_text(config: Any) -> str:
    """Methods boilerplate of the image-task step."""
    what = ("Images were enhanced" if config.enhance
            else f"Missing {config.impute} images were imputed")
    return (f"{what} with a GenBrain diffusion transformer fine-tuned for the task "
            f"({config.model.name}): each output is the mean of {config.average} DDIM samples "
            f"({config.sampling_steps} steps) conditioned on the input image(s) on the "
            "MNI152NLin6Asym grid.")
