"""``genbrain augment`` in stages: a multi-site study -> synthetic:real augmentation curves.

    study -> generator -> synthetic -> features -> curve (-> regression) -> report

1. :func:`load_study`: every site's MNI maps of one modality in a cohort store, one image per
   participant, the two-level label (``--contrast``), and the stratified, seeded 3:1:1 split
   of the training site (:class:`Study`);
2. :func:`train_generator`: the training site's model, fine-tuned from ``--model`` (or trained
   from scratch) on the images of the **training split only**: its cohort store is built from
   those participants' files and their rows of participants.tsv, nothing else
   (:class:`Generator`);
3. :func:`sample_synthetic`: as many synthetic images as the largest ratio needs, each under
   the conditions of a training participant (read from the generator's own store table, so no
   other participant's conditions are within reach), cycling through a seeded permutation of
   them so that every prefix keeps the training split's class balance
   (:class:`SyntheticSet`);
4. regional features of every real and synthetic image (:mod:`.regional`);
5. the classifier curve (:func:`.augment.augmentation_curve`); optionally the MONAI ResNet
   regression of a continuous score (:mod:`.resnet`).

No test participant (within-site test, validation, or any other site) can reach the
generator: it is trained on a store that holds only training participants, and sampled under
conditions copied from that store (tests/test_augment_cli.py checks that changing every other
participant's images and covariates leaves the generator and the synthetic images unchanged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..cohort import CohortStore
from ..errors import InputError
from .outputs import Settings
from ..model.checkpoint import GenBrain
from .augment import split_participants

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Study:
    """The real multi-site study, as the later stages use it.

    Attributes
    ----------
    roots : list of pathlib.Path
        Derivatives folders.
    participants : pandas.DataFrame
        Typed participants.tsv.
    store : CohortStore
        Every site's images of the modality (all sessions).
    table : pandas.DataFrame
        One row per participant used (first session), indexed by ``participant_id``: ``row``
        (store row), ``site``, ``label`` (the contrast as text), ``split`` (``train``,
        ``validation``, ``test`` at the training site; ``site`` elsewhere) and the conditions.
    contrast, site_column, train_site : str
    positive : str
        The label counted as the positive class.
    conditions : list of str
        The generator's conditions besides the contrast.
    """

    roots: list[Path]
    participants: pd.DataFrame
    store: CohortStore
    table: pd.DataFrame
    contrast: str
    site_column: str
    train_site: str
    positive: str
    conditions: list[str]

    @property
    def levels(self) -> list[str]:
        """The two labels, negative first."""
        other = [lv for lv in sorted(self.table["label"].unique()) if lv != self.positive]
        return [*other, self.positive]

    def ids(self, split: str) -> list[str]:
        """Participants of a split (``train``, ``validation``, ``test``) of the training site."""
        at_site = self.table["site"] == self.train_site
        return list(self.table.index[at_site & (self.table["split"] == split)])

    @property
    def other_sites(self) -> list[str]:
        """Sites tested across (all but the training site), sorted."""
        return sorted(set(self.table["site"]) - {self.train_site})


def _label_text(values: pd.Series) -> pd.Series:
    def text(v):
        if pd.isna(v):
            return None
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return values.map(text)


def read_study_participants(path: Path | None, derivatives: Sequence[Path],
                            columns: Sequence[str],
                            optional: Sequence[str] = ()) -> pd.DataFrame | None:
    """participants.tsv with ``columns`` typed, and those of ``optional`` that it has.

    Parameters
    ----------
    path : pathlib.Path, optional
        ``--participants`` (a participants.tsv or its folder); default: the first of
        ``derivatives`` that has one.
    derivatives : sequence of pathlib.Path
    columns : sequence of str
        Columns the command needs (a missing one is a one-line error naming the file).
    optional : sequence of str
        Columns typed and kept when present (``site``, a model's other conditions).

    Returns
    -------
    pandas.DataFrame or None
        :func:`bids_genbrain.bids.read_participants`'s table (only the typed columns and
        ``participant_id``); None when no participants.tsv is found.
    """
    from ..bids import read_participants_table
    from ..cli.pretrain import _participants_table

    found = _participants_table(path, list(derivatives), [])
    if found is None:
        return None
    present = {c.lower() for c in read_participants_table(
        Path(found.attrs["source"]).parent).raw.columns}
    wanted = [*columns, *(c for c in optional if c.lower() in present)]
    return _participants_table(path, list(derivatives), list(dict.fromkeys(wanted)))


def load_study(roots: Sequence[Path], participants: pd.DataFrame, work: Path, *,
               modality: str, contrast: str, site_column: str, train_site: str,
               conditions: Sequence[str], resolution: float, seed: int,
               positive: str | None = None, n_jobs: int = 1, progress: bool = True) -> Study:
    """Gather the study's images, label every participant and split the training site.

    Parameters
    ----------
    roots : sequence of path-like
        Derivatives folders with every site's MNI maps.
    participants : pandas.DataFrame
        Typed participants.tsv (:func:`bids_genbrain.bids.read_participants`).
    work : pathlib.Path
        Where the cohort stores go.
    modality, contrast, site_column, train_site
        See ``genbrain augment --help``.
    conditions : sequence of str
        The generator's other conditions (``age``, ``sex`` ...).
    resolution : float
    seed : int
        Seed of the split.
    positive : str, optional
        The positive class (default: the second label in sorted order).
    n_jobs : int
        Image readers.
    progress : bool

    Returns
    -------
    Study

    Raises
    ------
    InputError
        Missing columns, a contrast without exactly two labels, an unknown training site, or a
        training site too small for a stratified 3:1:1 split.
    """
    from ..cohort import build_cohort
    from .regional import feature_kind

    feature_kind(modality)  # an unknown modality name fails here, before any work
    columns = [contrast, site_column, *conditions]
    missing = [c for c in dict.fromkeys(columns) if c not in participants.columns]
    if missing:
        raise InputError(f"participants.tsv has no column(s) {missing}; columns are "
                         f"{[c for c in participants.columns if c != 'participant_id']}")
    if contrast in conditions or site_column in conditions or contrast == site_column:
        raise InputError(f"--contrast {contrast!r}, --site-column {site_column!r} and "
                         f"--condition {list(conditions)} must name different columns")
    store = build_cohort(roots, work / "real_cohort", modalities=[modality],
                         participants=participants.reset_index(drop=True),
                         conditions=list(dict.fromkeys(columns)), resolution=resolution,
                         n_jobs=n_jobs, reuse=True, progress=progress)
    from ..group.site import one_image_per_participant

    rows = one_image_per_participant(store.table)
    table = store.table.iloc[rows].copy()
    table["row"] = rows
    table["label"] = _label_text(table[contrast])
    table["site"] = _label_text(table[site_column])
    dropped = table[table["label"].isna() | table["site"].isna()]
    if len(dropped):
        LOGGER.warning("%d participant(s) without %s or %s are left out (e.g. %s)",
                       len(dropped), contrast, site_column, dropped["participant_id"].iloc[0])
    table = table.drop(index=dropped.index).set_index("participant_id")
    labels = sorted(table["label"].unique())
    if len(labels) != 2:
        raise InputError(f"--contrast {contrast!r} must have two values to classify, has "
                         f"{len(labels)}: {labels}")
    positive = labels[1] if positive is None else str(positive)
    if positive not in labels:
        raise InputError(f"--positive {positive!r} is not a value of {contrast!r} ({labels})")
    sites = sorted(table["site"].unique())
    if str(train_site) not in sites:
        raise InputError(f"--train-site {train_site!r} has no participant with {modality} "
                         f"images and a {contrast}; sites are {sites}")
    at_site = table["site"] == str(train_site)
    try:
        split = split_participants(table.loc[at_site, "label"], seed)
    except ValueError as exc:
        raise InputError(f"--train-site {train_site}: {exc}") from None
    table["split"] = "site"
    table.loc[split.index, "split"] = split
    return Study(roots=[Path(r) for r in roots], participants=participants, store=store,
                 table=table, contrast=contrast, site_column=site_column,
                 train_site=str(train_site), positive=positive, conditions=list(conditions))


@dataclass(frozen=True)
class Generator:
    """The training site's model.

    Attributes
    ----------
    bundle : GenBrain
    directory : pathlib.Path
    store : CohortStore
        What it was trained on: the training split's images and conditions only.
    from_scratch : bool
    """

    bundle: GenBrain
    directory: Path
    store: CohortStore
    from_scratch: bool

    @property
    def participant_ids(self) -> list[str]:
        """Participants whose images and conditions the generator saw."""
        return sorted(self.store.table["participant_id"].unique())


def train_generator(study: Study, out: Path, work: Path, *, model: Path | None, preset: str,
                    steps: int, batch_size: int, lr: float | None, seed: int, device: str,
                    n_jobs: int = 1, progress: bool = True) -> Generator:
    """Fine-tune ``model`` (or train ``preset`` from scratch) on the training split only.

    Parameters
    ----------
    study : Study
    out : pathlib.Path
        Checkpoint folder (resumed when the same run was interrupted).
    work : pathlib.Path
        Where its cohort store goes.
    model : pathlib.Path, optional
        Checkpoint to fine-tune (a population model); None: from scratch.
    preset, steps, batch_size, lr, seed, device
        Training settings (``lr`` None: the preset's default).
    n_jobs : int
    progress : bool

    Returns
    -------
    Generator
    """
    from ..cohort import build_cohort
    from ..model.presets import get_preset
    from ..model.train import TrainConfig, fit, training_lr

    train_ids = study.ids("train")
    participants = study.participants
    ids = "sub-" + participants["participant_id"].astype(str).str.removeprefix("sub-")
    own = participants[ids.isin(train_ids).to_numpy()].reset_index(drop=True)
    columns = list(dict.fromkeys([*study.conditions, study.contrast]))
    store = build_cohort(study.roots, work / "generator_cohort",
                         modalities=study.store.modalities, participants=own,
                         conditions=columns, resolution=study.store.resolution,
                         participant_ids=train_ids, n_jobs=n_jobs, reuse=True,
                         progress=progress)
    rate = lr if lr is not None else training_lr(preset, model)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=rate, seed=seed, device=device,
                         checkpoint_every=max(1, min(500, steps // 4)), progress=progress)
    if model is not None:
        bundle = fit(store, out, config, init=model)
    else:
        arch = get_preset(preset).with_(resolution=store.resolution)
        bundle = fit(store, out, config, arch=arch)
    return Generator(bundle=bundle, directory=out, store=store, from_scratch=model is None)


@dataclass(frozen=True)
class SyntheticSet:
    """Synthetic images of the training site, in the order the ratios add them.

    Attributes
    ----------
    directory : pathlib.Path
        Their derivatives dataset.
    table : pandas.DataFrame
        ``participant_id`` (``sub-synth0001`` ...), the conditions, ``label`` and
        ``conditions_from`` (the training participant whose conditions were used).
    store : CohortStore
    """

    directory: Path
    table: pd.DataFrame
    store: CohortStore


def synthetic_conditions(generator: Generator, contrast: str, conditions: Sequence[str],
                         n: int, seed: int) -> pd.DataFrame:
    """Conditions of ``n`` synthetic images, copied from the generator's training rows.

    Each synthetic image takes the conditions of one training participant, going through a
    seeded permutation of them again and again, so the first ``k`` images have the training
    split's class balance (within one image per class) for every ``k``.

    Parameters
    ----------
    generator : Generator
        Its store table is the only source of conditions.
    contrast : str
    conditions : sequence of str
    n : int
    seed : int

    Returns
    -------
    pandas.DataFrame
        The condition columns, ``modality`` and ``conditions_from``.
    """
    table = generator.store.table.drop_duplicates("participant_id").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    picks = np.resize(order, n) if n else np.empty(0, dtype=int)
    columns = list(dict.fromkeys([*conditions, contrast]))
    out = table.iloc[picks][columns].reset_index(drop=True)
    out["modality"] = generator.store.modalities[0]
    out["conditions_from"] = table["participant_id"].iloc[picks].to_numpy()
    return out


def sample_synthetic(study: Study, generator: Generator, n: int, out: Path, work: Path, *,
                     seed: int, sampling_steps: int, cfg_scale: float, average: int,
                     batch_size: int, device: str, progress: bool = True) -> SyntheticSet:
    """Sample ``n`` images of the training site into ``out`` (finished images are kept).

    Parameters
    ----------
    study : Study
    generator : Generator
    n : int
    out, work : pathlib.Path
        The synthetic dataset and where its cohort store goes.
    seed, sampling_steps, cfg_scale, average, batch_size, device, progress
        See :func:`bids_genbrain.model.sampling.write_synthetic_dataset`.

    Returns
    -------
    SyntheticSet
    """
    from ..cohort import build_cohort
    from ..model.sampling import write_synthetic_dataset
    from ..model.train import resolve_device

    wanted = synthetic_conditions(generator, study.contrast, study.conditions, n, seed)
    sources = wanted.pop("conditions_from")
    written = write_synthetic_dataset(generator.bundle, wanted, out, seed, steps=sampling_steps,
                                      cfg_scale=cfg_scale, average=average,
                                      batch_size=batch_size, device=resolve_device(device),
                                      progress=progress)
    written["conditions_from"] = sources.to_numpy()
    written["label"] = _label_text(written[study.contrast])
    table = written.drop(columns=["path", "modality", "seeds"], errors="ignore")
    store = build_cohort([out], work / "synthetic_cohort", modalities=study.store.modalities,
                         participants=table.drop(columns=["label", "conditions_from"]),
                         conditions=[study.contrast], resolution=study.store.resolution,
                         reuse=True, progress=progress)
    order = pd.Series(np.arange(len(store.table)), index=store.table["participant_id"])
    table = table.assign(row=order.loc[table["participant_id"]].to_numpy())
    return SyntheticSet(directory=out, table=table, store=store)


@dataclass(frozen=True)
class AugmentRequest(Settings):
    """The settings of one ``genbrain augment`` run beyond the shared :class:`Settings` (see
    ``genbrain augment --help``)."""

    contrast: str
    train_site: str
    site_column: str
    positive: str | None
    preset: str
    steps: int
    batch_size: int
    lr: float | None
    average: int
    max_ratio: float
    ratio_step: float
    n_draws: int
    n_boot: int
    max_trees: int | None
    regress: str | None
    regress_ratio_step: float
    regress_epochs: int


@dataclass(frozen=True)
class AugmentResult:
    """What ``genbrain augment`` produced.

    Attributes
    ----------
    study : Study
    generator : Generator
    synthetic : SyntheticSet
    metrics : pandas.DataFrame
        Every ratio and test set (``contrast-<c>_desc-augmentation_metrics.tsv``).
    draws : pandas.DataFrame
        Every hyper-parameter draw (``..._desc-hyperparameters_metrics.tsv``).
    regression : pandas.DataFrame or None
        MAE per ratio and test set, with ``--regress``.
    report : pathlib.Path
    """

    study: Study
    generator: Generator
    synthetic: SyntheticSet
    metrics: pd.DataFrame
    draws: pd.DataFrame
    regression: pd.DataFrame | None
    report: Path


def _labelled(features: np.ndarray, labels: Sequence[str], positive: str, name: str):
    from .augment import LabelledSet

    return LabelledSet(x=features, y=np.asarray([lv == positive for lv in labels]), name=name)


def run_augment(request: AugmentRequest, log) -> AugmentResult:
    """Run every stage of ``genbrain augment`` and write its outputs (see the module doc).

    Parameters
    ----------
    request : AugmentRequest
    log : bids_genbrain.runlog.RunLog
        Times each step.

    Returns
    -------
    AugmentResult

    Raises
    ------
    InputError
        Bad inputs (columns, sites, labels, modality, atlas, checkpoint).
    """
    from ..atlases import load_atlas
    from ..model.checkpoint import read_config
    from . import augment as aug
    from .outputs import AugmentOutputs
    from .regional import regional_features

    out = request.out
    work = request.work_dir or out / "work"
    names = AugmentOutputs(out, request.contrast)
    participants = read_study_participants(
        request.participants, request.derivatives,
        [request.contrast, request.site_column, *request.conditions,
         *([request.regress] if request.regress else [])])
    if participants is None:
        raise InputError("no participants.tsv among the derivatives folders; pass "
                         "--participants PATH (e.g. the raw BIDS dataset)")
    resolution = request.resolution
    if request.model is not None:
        trained = float(read_config(request.model)["architecture"]["resolution"])
        if resolution is not None and resolution != trained:
            raise InputError(f"--resolution {resolution:g} differs from the {trained:g} mm grid"
                             f" of --model {request.model}; leave --resolution out")
        resolution = trained
    if resolution is None:
        raise InputError("give --resolution or --model (its grid)")
    ratios = aug.ratio_grid(request.max_ratio, request.ratio_step)
    if max(ratios) == 0:
        raise InputError(f"--max-ratio {request.max_ratio:g} with --ratio-step "
                         f"{request.ratio_step:g} adds no synthetic image; use a larger "
                         "--max-ratio")
    with log.step("study"):
        study = load_study(request.derivatives, participants, work, modality=request.modality,
                           contrast=request.contrast, site_column=request.site_column,
                           train_site=request.train_site, conditions=request.conditions,
                           resolution=resolution, seed=request.seed,
                           positive=request.positive, n_jobs=request.nprocs,
                           progress=request.progress)
        atlas = load_atlas(request.atlas, resolution)
    with log.step("generator"):
        generator = train_generator(study, names.generator, work, model=request.model,
                                    preset=request.preset, steps=request.steps,
                                    batch_size=request.batch_size, lr=request.lr,
                                    seed=request.seed, device=request.device,
                                    n_jobs=request.nprocs, progress=request.progress)
    n_train = len(study.ids("train"))
    n_synthetic = int(round(max(ratios) * n_train))
    with log.step("synthesis"):
        synthetic = sample_synthetic(study, generator, n_synthetic, names.synthetic, work,
                                     seed=request.seed, sampling_steps=request.sampling_steps,
                                     cfg_scale=request.cfg_scale, average=request.average,
                                     batch_size=request.sample_batch_size,
                                     device=request.device, progress=request.progress)
    with log.step("features"):
        real = regional_features(study.store, atlas, rows=study.table["row"].to_numpy(),
                                 progress=request.progress)
        synth = regional_features(synthetic.store, atlas, rows=synthetic.table["row"].to_numpy(),
                                  progress=request.progress)
    names.write_study(study, generator, synthetic, atlas, real, synth, request)
    x_real = pd.DataFrame(real.values.to_numpy(), index=study.table.index)

    def subset(ids: list[str], name: str):
        return _labelled(x_real.loc[ids].to_numpy(), study.table.loc[ids, "label"],
                         study.positive, name)

    train = subset(study.ids("train"), "training")
    validation = subset(study.ids("validation"), "validation")
    tests = [subset(study.ids("test"), f"within-site test ({study.train_site})")]
    for site in study.other_sites:
        ids = list(study.table.index[study.table["site"] == site])
        tests.append(subset(ids, f"cross-site test ({site})"))
    synth_set = _labelled(synth.values.to_numpy(), synthetic.table["label"], study.positive,
                          "synthetic")
    all_metrics, all_draws = [], []
    with log.step("classifier"):
        curve = aug.augmentation_curve(train, validation, tests, synth_set, ratios,
                                       n_draws=request.n_draws, n_boot=request.n_boot,
                                       max_trees=request.max_trees, seed=request.seed)
        for ratio, metrics, draws in _ratio_progress(curve, len(ratios), request.progress):
            chosen = draws.loc[draws["chosen"]].iloc[0]
            metrics = metrics.assign(validation_auroc=chosen["validation_auroc"])
            names.write_ratio(ratio, metrics, request)
            all_metrics.append(metrics)
            all_draws.append(draws)
    metrics = pd.concat(all_metrics, ignore_index=True)
    draws = pd.concat(all_draws, ignore_index=True)
    names.write_curve(metrics, draws, request)
    regression = None
    if request.regress is not None:
        from .resnet import regression_curve

        with log.step("regression"):
            regression = regression_curve(study, synthetic, request,
                                          aug.ratio_grid(request.max_ratio,
                                                         request.regress_ratio_step))
        names.write_regression(regression, request)
    from ..reports.augment import write_augment_report

    report = write_augment_report(names, study=study, generator=generator,
                                  synthetic=synthetic, atlas=atlas, metrics=metrics,
                                  draws=draws, regression=regression, request=request)
    return AugmentResult(study=study, generator=generator, synthetic=synthetic, metrics=metrics,
                         draws=draws, regression=regression, report=report)


def _ratio_progress(curve, total: int, enabled: bool):
    if not enabled:
        yield from curve
        return
    from rich.progress import track

    yield from track(curve, total=total, description="ratios", transient=True)
