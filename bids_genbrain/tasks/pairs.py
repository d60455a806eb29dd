"""Training pairs of the image tasks, made from a cohort store at every step.

Both builders are the ``image_conditions`` callables of :func:`bids_genbrain.model.train.train`:
``(target rows, torch generator) -> (B, C, n_voxels)`` in store space [0, 1].

* :class:`CorruptedInputs` (enhancement): each target image, mapped back to its raw
  intensities, is corrupted afresh (:mod:`bids_genbrain.corrupt`, seeded by the step's
  generator) on the grid, masked and normalised again;
* :class:`SourceInputs` (synthesis): the same participant's and session's source images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..cohort import CohortStore, denormalise, normalise
from ..corrupt import Corruption, CorruptionConfig, corrupt
from .spec import ImageTask, TaskError

LOGGER = logging.getLogger(__name__)


def corrupt_values(values: np.ndarray, mask: np.ndarray, norm: dict, rng: np.random.Generator,
                   config: CorruptionConfig, voxel_size: float) -> tuple[np.ndarray, Corruption]:
    """Corrupt one image given as store-space brain voxels.

    Parameters
    ----------
    values : ndarray, shape (n_voxels,)
        Store space [0, 1], mask order.
    mask : ndarray of bool, shape (X, Y, Z)
    norm : dict
        The modality's normalisation (``lo``/``hi``), to corrupt raw intensities.
    rng : numpy.random.Generator
    config : CorruptionConfig
    voxel_size : float
        Grid spacing (mm).

    Returns
    -------
    corrupted : ndarray of float32, shape (n_voxels,)
        Store space, clipped to [0, 1].
    corruption : Corruption
    """
    volume = np.zeros(mask.shape, dtype=np.float32)
    volume[mask] = denormalise(values, norm)
    out, corruption = corrupt(volume, rng, config, (voxel_size,) * 3)
    return normalise(out[mask], norm), corruption


class CorruptedInputs:
    """Enhancement pairs: the corrupted copy of each target row (one channel).

    Parameters
    ----------
    store : CohortStore
    config : CorruptionConfig
    """

    def __init__(self, store: CohortStore, config: CorruptionConfig) -> None:
        self.store = store
        self.config = config
        self.mask = store.mask()
        self.modality = store.table["modality"].to_numpy()
        self.norm = store.normalisation

    def __call__(self, rows: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        clean = self.store.read(rows)
        out = np.empty_like(clean)
        for i, row in enumerate(rows):
            out[i], _ = corrupt_values(clean[i], self.mask, self.norm[self.modality[row]], rng,
                                       self.config, self.store.resolution)
        return torch.from_numpy(out[:, None])


@dataclass
class PairTable:
    """Target rows with their source rows (synthesis).

    Attributes
    ----------
    targets : ndarray of int64, shape (n,)
        Store rows of the target modality that have every source.
    sources : ndarray of int64, shape (n, n_sources)
        Store rows of each source of the same participant and session.
    missing : list of str
        ``sub-<l>[ ses-<s>]: no <modality>`` for targets left out.
    """

    targets: np.ndarray
    sources: np.ndarray
    missing: list[str]


def pair_rows(store: CohortStore, sources: Sequence[str], target: str) -> PairTable:
    """Match each target image with the same participant's and session's sources.

    Parameters
    ----------
    store : CohortStore
        Holding ``target`` and every source.
    sources : sequence of str
    target : str

    Returns
    -------
    PairTable

    Raises
    ------
    TaskError
        No participant has the target and every source.
    """
    table = store.table
    session = table["session_id"].fillna("").astype(str)
    key = table["participant_id"].astype(str) + "|" + session
    first: dict[tuple[str, str], int] = {}
    for row, (k, m) in enumerate(zip(key, table["modality"], strict=True)):
        first.setdefault((k, m), row)  # several runs of a session: the first is the source
    targets, rows, missing = [], [], []
    for row in np.flatnonzero(table["modality"].to_numpy() == target):
        found = [first.get((key.iloc[row], s)) for s in sources]
        if any(f is None for f in found):
            lacking = [s for s, f in zip(sources, found, strict=True) if f is None]
            label = key.iloc[row].replace("|", " ").strip()
            missing.append(f"{label}: no {', '.join(lacking)}")
            continue
        targets.append(row)
        rows.append(found)
    if not targets:
        raise TaskError(f"no participant has {target} and every source {list(sources)} in "
                        f"the same session ({len(missing)} {target} image(s) lack a source)")
    if missing:
        LOGGER.warning("%d %s image(s) left out of training (no source): %s", len(missing),
                       target, "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    return PairTable(np.asarray(targets, dtype=np.int64), np.asarray(rows, dtype=np.int64),
                     missing)


class SourceInputs:
    """Synthesis pairs: the source images of each target row (one channel per source).

    Parameters
    ----------
    store : CohortStore
    pairs : PairTable
    """

    def __init__(self, store: CohortStore, pairs: PairTable) -> None:
        self.store = store
        self.position = {int(r): i for i, r in enumerate(pairs.targets)}
        self.sources = pairs.sources

    def __call__(self, rows: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        pos = np.asarray([self.position[int(r)] for r in rows])
        channels = [self.store.read(self.sources[pos, c]) for c in range(self.sources.shape[1])]
        return torch.from_numpy(np.stack(channels, axis=1))


def training_pairs(store: CohortStore, task: ImageTask
                   ) -> tuple[np.ndarray, CorruptedInputs | SourceInputs]:
    """Target rows and the image-condition builder of a task.

    Parameters
    ----------
    store : CohortStore
        Holding :attr:`ImageTask.store_modalities`.
    task : ImageTask

    Returns
    -------
    rows : ndarray of int64
        Training targets.
    builder : callable
        ``image_conditions`` for :func:`bids_genbrain.model.train.fit`.
    """
    if task.name == "enhance":
        return np.arange(len(store), dtype=np.int64), CorruptedInputs(
            store, task.corruption_config())
    pairs = pair_rows(store, task.sources, str(task.target))
    return pairs.targets, SourceInputs(store, pairs)
