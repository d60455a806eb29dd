"""Apply an image-task model to one participant's MNI-space images (participant level).

``--enhance`` writes ``..._space-MNI152NLin6Asym_res-<r>_desc-enhanced_<m>.nii.gz`` for every
image of a modality the model was trained for; ``--impute <m>`` writes
``..._desc-synthetic_<m>.nii.gz`` for sessions that lack ``<m>`` (and, with
``--impute-existing``, for those that have it, compared with the real image). Each output is
the mean of ``--average`` K DDIM samples, seeded from the run seed and the image's name, so a
participant's output does not depend on which other participants ran. Its JSON sidecar names
the sources, the model (path and weights sha256), the task, the seeds and K; a figure shows
input, output and the real image side by side. A session without the model's sources is a
:class:`TaskInputError` for that participant only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd

from ..cohort import image_values, normalise
from ..derivatives import (TEMPLATE, bids_uri, derivative_path, kind_path, modality_entities,
                           res_label, sidecar_path, write_image)
from ..evaluate.imagetasks import image_metrics
from ..model.checkpoint import GenBrain
from ..model.diffusion import sample_seed
from ..model.sampling import sample
from ..templates import brain_mask
from .spec import OUTPUT_DESC, ImageTask, TaskError

LOGGER = logging.getLogger(__name__)


class TaskInputError(TaskError):
    """A participant's images do not allow the task (a missing source modality)."""


@dataclass
class Settings:
    """How outputs are sampled (from the BIDS-App configuration).

    Attributes
    ----------
    seed : int
        Run seed.
    average : int
        Samples averaged per output (K; paper: 5).
    steps : int
        DDIM steps.
    device : str
    impute_existing : bool
        Also impute a modality the session has (for checking).
    batch_size : int
        Draws per forward pass.
    """

    seed: int = 0
    average: int = 5
    steps: int = 50
    device: str = "cpu"
    impute_existing: bool = False
    batch_size: int = 8


@dataclass
class TaskOutput:
    """One written output.

    Attributes
    ----------
    modality : str
    path : Path
    inputs : list of Path
        The images given to the model (the scan to enhance, or the sources).
    real : Path or None
        The session's real image of ``modality`` (synthesis with ``--impute-existing``).
    figure : Path
    metrics : dict
        Against the real image (:func:`~bids_genbrain.evaluate.imagetasks.image_metrics`).
    seeds : list of int
    """

    modality: str
    path: Path
    inputs: list[Path]
    real: Path | None
    figure: Path
    metrics: dict[str, float] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)


@dataclass
class TaskRun:
    """What the task did for one participant: outputs and notes (e.g. skipped sessions)."""

    outputs: list[TaskOutput] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per output for the report."""
        rows = []
        for o in self.outputs:
            row = {"output": o.path.name, "model input": ", ".join(p.name for p in o.inputs),
                   "samples (K)": len(o.seeds)}
            row.update(o.metrics)
            rows.append(row)
        return pd.DataFrame(rows)


def image_seed(seed: int, name: str) -> int:
    """Run seed of one output image: from the run seed and the output's file name."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return int(np.random.SeedSequence([seed, *words]).generate_state(1, np.uint64)[0] >> 1)


def session_image(output_dir: Path, subject: str, session: str | None, modality: str,
                  resolution: float) -> Path | None:
    """A session's MNI-space image of ``modality`` in the derivatives (the first run), or None.

    Parameters
    ----------
    output_dir : Path
        Derivatives root (participant-level outputs or imported derivatives).
    subject, session : str, str or None
        Bare labels.
    modality : str
        ``T1w``, ``T2w``, ``FLAIR`` or any map of :func:`~bids_genbrain.cohort.modality_entities`.
    resolution : float

    Returns
    -------
    Path or None
    """
    from bids.layout import parse_file_entities

    folder = output_dir / f"sub-{subject}" / (f"ses-{session}" if session else "")
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    query = modality_entities(modality)
    found = []
    for path in sorted(folder.glob(f"*/{prefix}_*space-{TEMPLATE}_res-{res_label(resolution)}"
                                   f"_*.nii*")):
        ents = parse_file_entities(str(path))
        if query["suffix"] == "*":
            ok = ents.get("desc") == modality
        else:
            ok = all(ents.get(k) == v for k, v in query.items())
        if ok and ents.get("session") == session:
            found.append(path)
    return found[0] if found else None


def output_path(output_dir: Path, subject: str, session: str | None, task: ImageTask,
                modality: str, resolution: float) -> Path:
    """``sub-<l>[_ses-<s>]_space-MNI152NLin6Asym_res-<r>_desc-<enhanced|synthetic>_<m>``."""
    return kind_path(output_dir, task.desc, modality=modality, resolution=resolution,
                     sub=subject, ses=session)


def predict(bundle: GenBrain, modality: str, inputs: np.ndarray, seeds: Sequence[int],
            settings: Settings) -> list[nb.Nifti1Image]:
    """Model outputs for a batch of inputs (one image each), in ``modality``'s units.

    Parameters
    ----------
    bundle : GenBrain
        An image-task model.
    modality : str
        Output modality (its modality index).
    inputs : ndarray, shape (n, C, n_voxels)
        Image conditions in store space [0, 1] (the corrupted scan, or the sources).
    seeds : sequence of int
        Run seed of each image (:func:`image_seed`); draw ``j`` uses
        ``sample_seed(seed, 0, j)``.
    settings : Settings

    Returns
    -------
    list of nibabel.Nifti1Image
        Mean of K samples on the model's grid; zero outside the brain mask.
    """
    table = pd.DataFrame({"modality": [modality]})
    out = []
    for i, seed in enumerate(seeds):
        # the image condition is never dropped and the modality is not guided: CFG is a no-op
        _, img = next(sample(bundle, table, int(seed), steps=settings.steps, cfg_scale=1.0,
                             average=settings.average, batch_size=settings.batch_size,
                             device=settings.device, image_cond=inputs[i:i + 1]))
        out.append(img)
    return out


def _model_sha(bundle: GenBrain) -> str | None:
    if bundle.path is None:
        return None
    return json.loads((Path(bundle.path) / "config.json").read_text())["weights_sha256"]


def _sources(paths: Sequence[Path], output_dir: Path) -> list[str]:
    out = []
    for p in paths:
        try:
            out.append(bids_uri(p, output_dir, ""))
        except ValueError:
            out.append(str(Path(p).resolve()))
    return out


def _sidecar(bundle: GenBrain, task: ImageTask, modality: str, inputs: Sequence[Path],
             real: Path | None, seed: int, settings: Settings,
             output_dir: Path) -> dict[str, Any]:
    sidecar: dict[str, Any] = {
        "Sources": _sources(inputs, output_dir),
        "Description": (f"GenBrain {task.describe()}: mean of {settings.average} DDIM "
                        "sample(s) conditioned on the input image(s)"),
        "Task": task.name,
        "Modality": modality,
        "ModelInputs": task.image_conditions if task.name == "synthesize" else [modality],
        "Model": str(Path(bundle.path).resolve()) if bundle.path else None,
        "ModelSHA256": _model_sha(bundle),
        "RunSeed": seed,
        "Seeds": [sample_seed(seed, 0, j) for j in range(settings.average)],
        "Average": settings.average,
        "DDIMSteps": settings.steps,
        "SkullStripped": True,
        "SpatialReference": TEMPLATE,
    }
    if real is not None:
        sidecar["ComparedWith"] = _sources([real], output_dir)[0]
    return sidecar


def _finished(path: Path, sidecar: dict[str, Any]) -> dict[str, Any] | None:
    """The sidecar of an output an earlier run wrote with the same settings, else None."""
    meta = sidecar_path(path)
    if not path.is_file() or not meta.is_file():
        return None
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    same = {k: v for k, v in old.items() if k != "Quality"} == json.loads(json.dumps(sidecar))
    return old if same else None


def _figure(path: Path, panels: list[tuple[str, np.ndarray]], title: str) -> Path:
    """Axial, coronal and sagittal mid-slices of each panel, side by side (SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..reports.figures import _save

    shape = panels[0][1].shape
    cuts = [(2, shape[2] // 2 + shape[2] // 10), (1, shape[1] // 2), (0, shape[0] // 2)]
    fig, axes = plt.subplots(3, len(panels), figsize=(2.3 * len(panels), 6.6), squeeze=False)
    for col, (caption, vol) in enumerate(panels):
        inside = vol[vol > 0]
        vmax = float(np.percentile(inside, 99.5)) if inside.size else 1.0
        for row, (axis, index) in enumerate(cuts):
            axes[row, col].imshow(np.rot90(np.take(vol, index, axis=axis)), cmap="gray",
                                  vmin=0, vmax=vmax)
            axes[row, col].axis("off")
        axes[0, col].set_title(caption, fontsize=8)
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def apply_to_session(bundle: GenBrain, task: ImageTask, output_dir: Path, subject: str,
                     session: str | None, settings: Settings) -> TaskRun:
    """Enhance or impute one session's images.

    Parameters
    ----------
    bundle : GenBrain
        The task model (checked with :func:`~.spec.check_model_for`).
    task : ImageTask
    output_dir : Path
        Derivatives root with the session's MNI-space images.
    subject, session : str, str or None
        Bare labels.
    settings : Settings

    Returns
    -------
    TaskRun

    Raises
    ------
    TaskInputError
        The session has none of the modalities the model enhances, or lacks a source.
    """
    resolution = float(bundle.arch.resolution)
    mask = brain_mask(resolution)
    label = f"sub-{subject}" + (f" ses-{session}" if session else "")
    where = f"ses-{session}: " if session else ""  # the participant level names the subject
    name_of = f"{TEMPLATE}_res-{res_label(resolution)}"
    run = TaskRun()
    if task.name == "enhance":
        jobs = []
        for modality in task.modalities:
            path = session_image(output_dir, subject, session, modality, resolution)
            if path is not None:
                jobs.append((modality, [path], None))
        if not jobs:
            raise TaskInputError(
                f"{where}--enhance: the model enhances {', '.join(task.modalities)}; there is "
                f"no image of any of them on the space-{name_of} grid")
    else:
        target = str(task.target)
        real = session_image(output_dir, subject, session, target, resolution)
        if real is not None and not settings.impute_existing:
            run.notes.append(f"{label} has {target}: not imputed (--impute-existing imputes "
                             "it too, for checking)")
            return run
        paths = [session_image(output_dir, subject, session, s, resolution)
                 for s in task.sources]
        lacking = [s for s, p in zip(task.sources, paths, strict=True) if p is None]
        if lacking:
            raise TaskInputError(
                f"{where}--impute {target} needs {' + '.join(task.sources)} (the model's "
                f"inputs); there is no {', '.join(lacking)} image on the space-{name_of} grid")
        jobs = [(target, paths, real)]
    for modality, inputs, real in jobs:
        kinds = list(task.sources) if task.name == "synthesize" else [modality]
        raw = [image_values(p, resolution) for p in inputs]
        values = np.stack([normalise(v, bundle.normalisation[m])
                           for v, m in zip(raw, kinds, strict=True)])
        out_path = output_path(output_dir, subject, session, task, modality, resolution)
        seed = image_seed(settings.seed, out_path.name)
        sidecar = _sidecar(bundle, task, modality, inputs, real, seed, settings, output_dir)
        done = _finished(out_path, sidecar)
        if done is not None:  # an interrupted run got this far: reuse it
            image = nb.load(out_path)
        else:
            image = predict(bundle, modality, values[None], [seed], settings)[0]
        volume = np.asanyarray(image.dataobj, dtype=np.float32)
        metrics: dict[str, float] = {}
        if real is not None:
            norm = bundle.normalisation[modality]
            metrics = image_metrics(normalise(image_values(real, resolution), norm),
                                    normalise(volume[mask], norm), mask)
            sidecar["Quality"] = metrics
        if done is None:
            write_image(image, out_path, sidecar)
        figure = _output_figure(output_dir, subject, session, out_path, sidecar, inputs, real,
                                resolution)
        run.outputs.append(TaskOutput(modality, out_path, list(inputs), real, figure, metrics,
                                      sidecar["Seeds"]))
        LOGGER.info("%s: wrote %s", label, out_path.name)
    return run


def _output_figure(output_dir: Path, subject: str, session: str | None, out_path: Path,
                   sidecar: dict[str, Any], inputs: Sequence[Path], real: Path | None,
                   resolution: float) -> Path:
    """The figure of one output: its input(s), the output and the real image (if any)."""
    from ..workflows.outputs import figure_path

    mask = brain_mask(resolution)
    modality, desc = sidecar["Modality"], _desc(out_path)
    panels = [(f"input: {m}", _grid(image_values(p, resolution), mask))
              for p, m in zip(inputs, sidecar["ModelInputs"], strict=True)]
    panels.append((f"{desc} {modality} (K={sidecar['Average']})",
                   np.asanyarray(nb.load(out_path).dataobj, dtype=np.float32)))
    if real is not None:
        panels.append((f"real {modality}", _grid(image_values(real, resolution), mask)))
    label = f"sub-{subject}" + (f" ses-{session}" if session else "")
    return _figure(figure_path(output_dir, {"sub": subject, "ses": session}, modality,
                               desc=desc), panels,
                   f"{label}: {sidecar['Description'].split(':')[0]}")


def _desc(path: Path) -> str:
    from bids.layout import parse_file_entities

    return str(parse_file_entities(str(path))["desc"])


def _resolve_source(uri: str, output_dir: Path) -> Path:
    """A ``Sources`` entry of :func:`_sources` back to a path."""
    prefix = "bids::"
    return output_dir / uri[len(prefix):] if uri.startswith(prefix) else Path(uri)


def outputs_of_session(output_dir: Path, subject: str, session: str | None) -> TaskRun:
    """The task outputs an earlier run wrote for one session, with their figures re-drawn.

    For ``--reports-only``: every ``desc-enhanced``/``desc-synthetic`` image of the session
    whose sidecar this module wrote; inputs, the real image, K and quality come from the
    sidecar (no model is loaded).

    Parameters
    ----------
    output_dir : Path
        Participant-level derivatives root.
    subject, session : str, str or None
        Bare labels.

    Returns
    -------
    TaskRun
        ``notes`` name outputs whose inputs are gone (not shown).
    """
    folder = derivative_path(output_dir, {"sub": subject, "ses": session}, "T1w").parent
    run = TaskRun()
    for out_path in sorted(p for desc in OUTPUT_DESC.values()
                           for p in folder.glob(f"*_desc-{desc}_*.nii.gz")):
        meta = sidecar_path(out_path)
        try:
            sidecar = json.loads(meta.read_text(encoding="utf-8"))
            inputs = [_resolve_source(s, output_dir) for s in sidecar["Sources"]]
            real = (_resolve_source(sidecar["ComparedWith"], output_dir)
                    if "ComparedWith" in sidecar else None)
            modality = sidecar["Modality"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            run.notes.append(f"{out_path.name}: no usable sidecar ({exc}); not shown")
            continue
        lost = [p.name for p in [*inputs, *([real] if real else [])] if not p.is_file()]
        if lost:
            run.notes.append(f"{out_path.name}: input(s) {', '.join(lost)} gone; not shown")
            continue
        resolution = float(nb.load(out_path).header.get_zooms()[0])
        figure = _output_figure(output_dir, subject, session, out_path, sidecar, inputs, real,
                                resolution)
        run.outputs.append(TaskOutput(modality, out_path, inputs, real, figure,
                                      dict(sidecar.get("Quality", {})),
                                      list(sidecar.get("Seeds", []))))
    return run


def _grid(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    vol = np.zeros(mask.shape, dtype=np.float32)
    vol[mask] = values
    return vol

