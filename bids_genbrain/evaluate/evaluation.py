"""``genbrain evaluate`` in stages: does a synthetic cohort carry the biology of a real one?

    cohorts -> synthetic -> similarity -> memorization -> distribution -> regional -> report

1. :func:`load_cohort`: the real cohort (and a larger ``--reference`` cohort when given) as
   cohort stores, one image per participant (:class:`Cohort`);
2. :func:`synthetic_from_dataset` (a synthetic derivatives dataset) or
   :func:`synthetic_from_model` (a checkpoint sampled under the real cohort's conditions, once
   for every K = 1 .. ``--max-average``: images averaging K draws, by the sampler's own
   averaging, :func:`bids_genbrain.model.sampling.write_synthetic_dataset`);
3. :func:`similarity_table`: the age/sex similarity of the GenBrain paper, the cosine of each
   condition's t map (adjusted for the other conditions) with the reference cohort's, for
   each K and for real samples of the same size, over seeded draws (the group level's
   :mod:`.fidelity`, which this calls);
4. :func:`memorization`: the group level's copy gate (:func:`.privacy.check_memorization`)
   of the synthetic images against the real cohort (the training images by default);
5. :func:`distribution_table`: MMD between real and synthetic images (a real-vs-real split as
   the floor) and the MS-SSIM diversity of every set (:mod:`.quality`);
6. :func:`regional`: per atlas region, Cohen's d of synthetic against real and the age slope in
   both (:mod:`.regional`).

Values of different stores are compared in the real store's units
(:func:`bids_genbrain.cohort.rescaled_rows`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..cohort import CohortStore
from ..errors import InputError
from .outputs import Settings

LOGGER = logging.getLogger(__name__)

N_DRAWS = 20
"""Seeded draws of the real sample (and of the reference split) for the similarity."""
MAX_AVERAGE = 5
"""Largest K of the averaging curve (the paper's)."""
MAX_IMAGES = 200
"""Images per set for MMD and MS-SSIM diversity (a seeded subsample of larger sets)."""
N_PAIRS = 100
"""Image pairs of the MS-SSIM diversity."""


@dataclass(frozen=True)
class Cohort:
    """A cohort as the stages use it: its store and one image per participant.

    Attributes
    ----------
    name : str
        ``real``, ``reference``, ``synthetic (K = 1)`` ...
    store : CohortStore
    table : pandas.DataFrame
        One row per image used (each participant's first session), categorical columns as
        text, in the order of ``rows``.
    rows : ndarray of int
        Store rows of ``table``.
    confounds : tuple of str
        Columns adjusted for beyond the conditions (``site`` when it varies).
    directory : pathlib.Path or None
        The synthetic dataset (None for real cohorts).
    average : int or None
        Draws averaged per synthetic image (K).
    """

    name: str
    store: CohortStore
    table: pd.DataFrame
    rows: np.ndarray
    confounds: tuple[str, ...] = ()
    directory: Path | None = None
    average: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def effect_cohort(self, subset: np.ndarray | None = None, data: np.ndarray | None = None):
        """The cohort (or ``subset`` of its rows, positions in ``table``) for :mod:`.fidelity`."""
        from .fidelity import EffectCohort

        pick = np.arange(len(self.rows)) if subset is None else np.asarray(subset)
        return EffectCohort(images=self.store.data if data is None else data,
                            table=self.table.iloc[pick].reset_index(drop=True),
                            rows=self.rows[pick], confounds=self.confounds, name=self.name)


def _strings(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = table[column].astype("string")
    return table


def load_cohort(roots: Sequence[Path], participants: pd.DataFrame, store_path: Path, *,
                name: str, modality: str, conditions: Sequence[str], resolution: float,
                extra: Sequence[str] = (), n_jobs: int = 1, progress: bool = True) -> Cohort:
    """A real cohort's images of one modality with its conditions (and site).

    Parameters
    ----------
    roots : sequence of path-like
        Derivatives folders.
    participants : pandas.DataFrame
        Typed participants.tsv.
    store_path : pathlib.Path
        Where its cohort store goes (reused when up to date).
    name : str
    modality : str
    conditions : sequence of str
        Columns every image needs (``age``, ``sex`` ...).
    resolution : float
    extra : sequence of str
        Further columns kept when present (a model's other conditions, to sample under).
    n_jobs : int
    progress : bool

    Returns
    -------
    Cohort

    Raises
    ------
    InputError
        A condition that is not a column, or no image.
    """
    from ..cohort import build_cohort
    from ..group.site import one_image_per_participant

    missing = [c for c in conditions if c not in participants.columns]
    if missing:
        source = participants.attrs.get("source", "participants.tsv")
        raise InputError(f"{source}: no column(s) {missing} for --condition ({name} cohort); "
                         f"columns are {[c for c in participants.columns if c != 'participant_id']}")
    columns = list(dict.fromkeys([*conditions, *(c for c in (*extra, "site")
                                                   if c in participants.columns)]))
    store = build_cohort(roots, store_path, modalities=[modality],
                         participants=participants.reset_index(drop=True), conditions=columns,
                         resolution=resolution, n_jobs=n_jobs, progress=progress, reuse=True)
    rows = one_image_per_participant(store.table)
    table = _strings(store.table.iloc[rows].reset_index(drop=True))
    site = ("site",) if "site" in table and table["site"].nunique(dropna=True) > 1 else ()
    return Cohort(name=name, store=store, table=table, rows=rows, confounds=site)


def synthetic_from_dataset(directory: Path, store_path: Path, *, modality: str,
                           conditions: Sequence[str], resolution: float,
                           progress: bool = True) -> Cohort:
    """A synthetic derivatives dataset (``genbrain sample``, the group level's ``synthetic/``).

    Its ``participants.tsv`` gives the conditions; K is read from the images' sidecars
    (``Average``; 1 when absent).

    Raises
    ------
    InputError
        No participants.tsv, or a condition it lacks.
    """
    from .augmentation import read_study_participants

    participants = read_study_participants(Path(directory), [], conditions, ["site"])
    cohort = load_cohort([directory], participants, store_path, name="synthetic",
                         modality=modality, conditions=conditions, resolution=resolution,
                         progress=progress)
    sidecar = Path(cohort.store.table["path"].iloc[0])
    sidecar = sidecar.with_name(sidecar.name.split(".nii")[0] + ".json")
    average = 1
    if sidecar.is_file():
        average = int(json.loads(sidecar.read_text(encoding="utf-8")).get("Average", 1))
    return Cohort(name=f"synthetic (K = {average})", store=cohort.store, table=cohort.table,
                  rows=cohort.rows, directory=Path(directory), average=average)


def synthetic_conditions(bundle, real: Cohort, n: int | None, seed: int) -> pd.DataFrame:
    """The real cohort's conditions, one row per synthetic image (``n`` drawn when given).

    Conditions of the model that the real cohort lacks are left out (unconditional).
    """
    names = [c.name for c in bundle.conditions if c.name != "modality"]
    known = [c for c in names if c in real.table.columns]
    absent = sorted(set(names) - set(known))
    if absent:
        LOGGER.warning("the model's conditions %s are not columns of the real cohort; the "
                       "synthetic images are unconditional in them", absent)
    table = real.table[known].reset_index(drop=True)
    if n is not None and n != len(table):
        pick = np.random.default_rng(seed).choice(len(table), size=n, replace=n > len(table))
        table = table.iloc[np.sort(pick)].reset_index(drop=True)
    table = table.astype({c: object for c in table.columns
                          if not pd.api.types.is_numeric_dtype(table[c])})
    return table.where(table.notna(), None)


def synthetic_from_model(model: Path, real: Cohort, out: Path, work: Path, *, modality: str,
                         conditions: Sequence[str], n: int | None, max_average: int,
                         seed: int, sampling_steps: int, cfg_scale: float, batch_size: int,
                         device: str, progress: bool = True) -> list[Cohort]:
    """Sample the checkpoint under the real cohort's conditions for K = 1 .. ``max_average``.

    Every K uses the run seed, so image ``i`` of K averages the draws ``0 .. K-1`` whose seeds
    every larger K shares (a paired curve). Finished images of an interrupted run are kept.

    Returns
    -------
    list of Cohort
        One per K, in order.
    """
    from ..model.checkpoint import load_checkpoint
    from ..model.sampling import write_synthetic_dataset
    from ..model.train import resolve_device

    dev = resolve_device(device)
    bundle = load_checkpoint(model, dev)
    if modality not in bundle.modalities:
        raise InputError(f"--model {model} has no modality {modality!r}; it has "
                         f"{bundle.modalities}")
    wanted = synthetic_conditions(bundle, real, n, seed).assign(modality=modality)
    cohorts = []
    for k in range(1, max_average + 1):
        directory = out / f"average-{k}"
        write_synthetic_dataset(bundle, wanted, directory, seed, steps=sampling_steps,
                                cfg_scale=cfg_scale, average=k, batch_size=batch_size,
                                device=dev, progress=progress)
        cohorts.append(synthetic_from_dataset(directory, work / f"synthetic_average-{k}",
                                              modality=modality, conditions=conditions,
                                              resolution=real.store.resolution,
                                              progress=progress))
    return cohorts


def _pick(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)


def similarity_table(real: Cohort, synthetic: Sequence[Cohort], conditions: Sequence[str], *,
                     reference: Cohort | None = None, n_draws: int = N_DRAWS, seed: int = 0,
                     progress: bool = True) -> pd.DataFrame:
    """Cosine of every condition's t map with the reference cohort's: synthetic (each K) and
    real samples of the same size, over seeded draws.

    With ``reference``, every draw takes ``m = min(n_synthetic, n_real)`` real images and (when
    there are more) ``m`` synthetic images of each K; without it, the reference of a draw is the
    real cohort minus its real sample, ``m = min(n_synthetic, n_real // 2)``. The effect maps
    are the group level's (:func:`.fidelity.effect_map`: each condition adjusted for the
    others, and for site in real cohorts where it varies).

    Parameters
    ----------
    real : Cohort
    synthetic : sequence of Cohort
        One per K (same size).
    conditions : sequence of str
        The conditions whose effects are mapped (``age``, ``sex``).
    reference : Cohort, optional
        A larger real cohort.
    n_draws : int
    seed : int
    progress : bool

    Returns
    -------
    pandas.DataFrame
        One row per effect and cohort (``real`` or ``synthetic`` with its ``average`` K):
        ``effect``, ``condition``, ``cohort``, ``average``, ``n``, ``n_reference``,
        ``n_draws``, ``cosine_t`` (mean over draws), ``ci_low``/``ci_high`` (2.5th/97.5th
        percentiles over draws), ``r_d`` (mean Pearson r of d maps), and for synthetic rows
        ``fraction_ge_real`` (draws where it is at least the real sample's).
    """
    from ..stats.compare import cosine_similarity, map_correlation
    from ..stats.glm import DesignError
    from .fidelity import condition_contrasts, effect_map

    n_syn = len(synthetic[0])
    m = min(n_syn, len(real)) if reference is not None else min(n_syn, len(real) // 2)
    if m < 4:
        raise InputError(f"the similarity needs at least 4 images per sample; the real cohort "
                         f"has {len(real)} and the synthetic {n_syn}"
                         + ("" if reference is not None else " (half are the reference)"))
    if reference is not None and m == len(real):
        LOGGER.warning("the real sample is the whole real cohort (%d images) in every draw: "
                       "its range is a single value; sample fewer synthetic images "
                       "(--n-synthetic) for a spread of real samples", m)
    levels_from = (reference or real).table
    effects = [(cond, contrast) for cond in conditions
               for contrast in condition_contrasts(levels_from, cond)]
    if not effects:
        raise InputError(f"none of the conditions {list(conditions)} varies in the "
                         f"{(reference or real).name} cohort")
    scores: dict[tuple, list[tuple[int, float, float]]] = {}
    cache: dict[tuple, tuple[np.ndarray, np.ndarray] | None] = {}

    def maps(cohort: Cohort, subset: np.ndarray, contrast, others):
        """(t, d) of an effect in a subset of a cohort; maps of whole cohorts are kept."""
        key = (cohort.name, contrast.label, subset.tobytes())
        if key not in cache:
            try:
                fit = effect_map(cohort.effect_cohort(subset), contrast, others)
                cache[key] = (fit.t, fit.d)
            except DesignError as exc:
                LOGGER.info("%s not estimable in a draw of the %s (%s)", contrast.label,
                            cohort.name, exc)
                cache[key] = None
        found = cache[key]
        if subset.size != len(cohort):  # a sample: not needed by the next draw
            del cache[key]
        return found

    draws = range(n_draws)
    if progress:
        from rich.progress import track

        draws = track(draws, description="age/sex similarity", transient=True)
    for b in draws:
        rng = np.random.default_rng([seed, b])
        real_idx = _pick(rng, len(real), m)
        syn_idx = _pick(rng, n_syn, m)
        if reference is None:
            ref, ref_idx = real, np.setdiff1d(np.arange(len(real)), real_idx)
        else:
            ref, ref_idx = reference, np.arange(len(reference))
        for cond, contrast in effects:
            others = [c for c in conditions if c != cond]
            ref_map = maps(ref, ref_idx, contrast, others)
            if ref_map is None:
                continue
            for cohort, idx, kind in [(real, real_idx, "real"),
                                      *[(s, syn_idx, "synthetic") for s in synthetic]]:
                found = maps(cohort, idx, contrast, others)
                if found is None:
                    continue
                key = (contrast.label, cond, kind, cohort.average if kind == "synthetic" else None)
                scores.setdefault(key, []).append(
                    (b, cosine_similarity(found[0], ref_map[0]),
                     map_correlation(found[1], ref_map[1])))
    rows = []
    n_ref = len(reference) if reference is not None else len(real) - m
    for (label, cond, kind, k), values in scores.items():
        cos = np.array([v[1] for v in values])
        row = {"effect": label, "condition": cond, "cohort": kind, "average": k, "n": m,
               "n_reference": n_ref, "n_draws": len(values), "cosine_t": float(cos.mean()),
               "ci_low": float(np.percentile(cos, 2.5)),
               "ci_high": float(np.percentile(cos, 97.5)),
               "r_d": float(np.mean([v[2] for v in values]))}
        if kind == "synthetic":
            real_by_draw = {v[0]: v[1] for v in scores.get((label, cond, "real", None), [])}
            paired = [(v[1], real_by_draw[v[0]]) for v in values if v[0] in real_by_draw]
            row["fraction_ge_real"] = (float(np.mean([a >= b for a, b in paired]))
                                       if paired else float("nan"))
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {label: i for i, (_, c) in enumerate(effects) for label in [c.label]}
    table["_order"] = table["effect"].map(order)
    table = table.sort_values(["_order", "cohort", "average"], na_position="first")
    return table.drop(columns="_order").reset_index(drop=True)


@dataclass(frozen=True)
class Memorization:
    """The copy gate's verdict on the synthetic images.

    Attributes
    ----------
    check : bids_genbrain.evaluate.privacy.MemorizationCheck
    training : str
        What the synthetic images were compared with.
    """

    check: object
    training: str


def memorization(real: Cohort, synthetic: Cohort, work: Path, *,
                 progress: bool = True) -> Memorization:
    """The group level's copy gate: every synthetic image against every real image.

    The real cohort stands for the training images (every session); the baseline of new
    people is then each training image against the other participants' (the gate's
    leave-one-participant-out baseline).
    """
    from ..cohort import rescaled_rows
    from .privacy import check_memorization

    data = rescaled_rows(synthetic.store, real.store, work / "synthetic_in_real_units.f32")
    check = check_memorization(
        data, real.store.data, training_ids=list(real.store.table["participant_id"]),
        synthetic_ids=list(synthetic.store.table["participant_id"]), progress=progress)
    return Memorization(check=check, training=f"{real.name} cohort "
                        f"({real.store.table['participant_id'].nunique()} participants)")


def _subsample(data: np.ndarray, rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    from ..arrays import iter_row_blocks

    pick = rows[_pick(np.random.default_rng(seed), len(rows), min(limit, len(rows)))]
    out = np.empty((pick.size, data.shape[1]), dtype=np.float32)
    for positions, block in iter_row_blocks(data, pick):
        out[positions] = block
    return out


def distribution_table(real: Cohort, synthetic: Sequence[Cohort], work: Path, *,
                       max_images: int = MAX_IMAGES, n_pairs: int = N_PAIRS, seed: int = 0,
                       progress: bool = True) -> pd.DataFrame:
    """MMD of every synthetic set against the real one, and the MS-SSIM diversity of all.

    The Gaussian kernel's width is the median distance between the real images (one width for
    every comparison); the real row's MMD is between two random halves of the real images,
    the value two real samples of half the size reach. MS-SSIM uses the real images' dynamic
    range for every set.

    Returns
    -------
    pandas.DataFrame
        ``set``, ``average``, ``n``, ``mmd_rbf``, ``mmd_linear`` (unbiased, against the real
        images), ``bandwidth``, ``ms_ssim_diversity`` (mean over ``n_pairs`` pairs; lower is
        more diverse), ``n_pairs``.
    """
    from ..cohort import rescaled_rows
    from .quality import gram_matrix, mmd, ms_ssim_diversity

    mask = real.store.mask()
    x = _subsample(real.store.data, real.rows, max_images, seed)
    gram = gram_matrix(x)
    sq = np.clip(np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram, 0, None)
    bandwidth = float(np.median(np.sqrt(sq[np.triu_indices(len(x), 1)])))
    data_range = float(max(x.max(), 0.0) - min(x.min(), 0.0))
    half = np.random.default_rng(seed).permutation(len(x))
    a, b = x[half[: len(x) // 2]], x[half[len(x) // 2:]]
    rows = [{"set": "real", "average": None, "n": len(x),
             "mmd_rbf": mmd(a, b, bandwidth=bandwidth), "mmd_linear": mmd(a, b, kernel="linear"),
             "bandwidth": bandwidth,
             "ms_ssim_diversity": ms_ssim_diversity(x, mask, n_pairs=n_pairs, seed=seed,
                                                    data_range=data_range, progress=progress),
             "n_pairs": min(n_pairs, len(x) * (len(x) - 1) // 2)}]
    for cohort in synthetic:
        data = rescaled_rows(cohort.store, real.store,
                             work / f"distribution_average-{cohort.average}.f32")
        y = _subsample(data, cohort.rows, max_images, seed + 1)
        rows.append({"set": "synthetic", "average": cohort.average, "n": len(y),
                     "mmd_rbf": mmd(x, y, bandwidth=bandwidth),
                     "mmd_linear": mmd(x, y, kernel="linear"), "bandwidth": bandwidth,
                     "ms_ssim_diversity": ms_ssim_diversity(
                         y, mask, n_pairs=n_pairs, seed=seed, data_range=data_range,
                         progress=progress),
                     "n_pairs": min(n_pairs, len(y) * (len(y) - 1) // 2)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Regional:
    """Regional plausibility of the synthetic images.

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`.regional.regional_plausibility`.
    summary : dict
        :func:`.regional.plausibility_summary`.
    atlas : bids_genbrain.atlases.Atlas
    unit : str
    kind : str
    """

    table: pd.DataFrame
    summary: dict
    atlas: object
    unit: str
    kind: str
    features: dict = field(default_factory=dict)


def regional(real: Cohort, synthetic: Cohort, atlas, conditions: Sequence[str], *,
             progress: bool = True) -> Regional:
    """Per atlas region: Cohen's d of synthetic vs real and the age slope in both."""
    from .regional import plausibility_summary, regional_features, regional_plausibility

    real_f = regional_features(real.store, atlas, rows=real.rows, progress=progress)
    syn_f = regional_features(synthetic.store, atlas, rows=synthetic.rows, progress=progress)
    covariates = [c for c in conditions if c != "age"]
    table = regional_plausibility(real_f, real.table, syn_f, synthetic.table, age="age",
                                  covariates=covariates)
    return Regional(table=table, summary=plausibility_summary(table), atlas=atlas,
                    unit=real_f.unit, kind=real_f.kind,
                    features={"real": real_f, "synthetic": syn_f})


@dataclass(frozen=True)
class EvaluateRequest(Settings):
    """The settings of one ``genbrain evaluate`` run beyond the shared :class:`Settings` (see
    ``genbrain evaluate --help``)."""

    synthetic: Path | None
    n_synthetic: int | None
    max_average: int
    reference: list[Path]
    reference_participants: Path | None
    n_draws: int
    max_images: int
    n_pairs: int


@dataclass(frozen=True)
class EvaluateResult:
    """What ``genbrain evaluate`` produced (each stage's result and the report)."""

    real: Cohort
    reference: Cohort | None
    synthetic: list[Cohort]
    similarity: pd.DataFrame
    memorization: Memorization
    distribution: pd.DataFrame
    regional: Regional
    report: Path


def _grid(request: EvaluateRequest) -> float:
    """The grid of the evaluation: the model's, the synthetic images', or ``--resolution``."""
    from ..cohort import find_images
    from ..model.checkpoint import read_config

    if request.model is not None:
        grid = float(read_config(request.model)["architecture"]["resolution"])
    elif request.resolution is not None:
        return float(request.resolution)
    else:
        from ..derivatives import parse_name

        found = find_images([request.synthetic], request.modality, 2.0)
        if found.empty:
            raise InputError(f"--synthetic {request.synthetic}: no {request.modality} images "
                             "on the MNI grid")
        grid = float(parse_name(Path(found["path"].iloc[0]).name)[0]["res"].replace("p", "."))
    if request.resolution is not None and float(request.resolution) != grid:
        raise InputError(f"--resolution {request.resolution:g} differs from the {grid:g} mm "
                         "grid of the synthetic images; leave it out")
    return grid


def run_evaluate(request: EvaluateRequest, log) -> EvaluateResult:
    """Run every stage of ``genbrain evaluate`` and write its outputs (see the module doc).

    Parameters
    ----------
    request : EvaluateRequest
    log : bids_genbrain.runlog.RunLog
        Times each step.

    Returns
    -------
    EvaluateResult

    Raises
    ------
    InputError
        Bad inputs (no synthetic cohort or two, columns, modality, atlas, checkpoint).
    """
    from ..atlases import load_atlas
    from .augmentation import read_study_participants
    from .outputs import EvaluateOutputs

    if (request.synthetic is None) == (request.model is None):
        raise InputError("give the synthetic cohort: --synthetic DIR (a synthetic derivatives "
                         "dataset) or --model DIR (a checkpoint to sample from), not both")
    names = EvaluateOutputs(request.out)
    work = request.work_dir or request.out / "work"
    resolution = _grid(request)
    extra: list[str] = []
    if request.model is not None:
        from ..model.checkpoint import read_config

        extra = [c["name"] for c in read_config(request.model)["conditions"]
                 if c["name"] != "modality"]
    participants = read_study_participants(request.participants, request.derivatives,
                                           request.conditions, [*extra, "site"])
    if participants is None:
        raise InputError("no participants.tsv among the derivatives folders; pass "
                         "--participants PATH (e.g. the raw BIDS dataset)")
    common = dict(modality=request.modality, conditions=request.conditions,
                  resolution=resolution, n_jobs=request.nprocs, progress=request.progress)
    with log.step("cohorts"):
        real = load_cohort(request.derivatives, participants, work / "real_cohort",
                           name="real", extra=extra, **common)
        reference = None
        if request.reference:
            ref_participants = read_study_participants(
                request.reference_participants, request.reference, request.conditions,
                ["site"])
            if ref_participants is None:
                raise InputError("no participants.tsv among the --reference folders; pass "
                                 "--reference-participants PATH")
            reference = load_cohort(request.reference, ref_participants,
                                    work / "reference_cohort", name="reference", **common)
        atlas = load_atlas(request.atlas, resolution)
    with log.step("synthesis"):
        if request.model is not None:
            synthetic = synthetic_from_model(
                request.model, real, names.synthetic, work, modality=request.modality,
                conditions=request.conditions, n=request.n_synthetic,
                max_average=request.max_average, seed=request.seed,
                sampling_steps=request.sampling_steps, cfg_scale=request.cfg_scale,
                batch_size=request.sample_batch_size, device=request.device,
                progress=request.progress)
        else:
            synthetic = [synthetic_from_dataset(request.synthetic, work / "synthetic_cohort",
                                                modality=request.modality,
                                                conditions=request.conditions,
                                                resolution=resolution,
                                                progress=request.progress)]
    with log.step("similarity"):
        similarity = similarity_table(real, synthetic, request.conditions, reference=reference,
                                      n_draws=request.n_draws, seed=request.seed,
                                      progress=request.progress)
    single = synthetic[0]
    with log.step("memorization"):
        memo = memorization(real, single, work, progress=request.progress)
    with log.step("distribution"):
        distribution = distribution_table(real, synthetic, work, max_images=request.max_images,
                                          n_pairs=request.n_pairs, seed=request.seed,
                                          progress=request.progress)
    with log.step("regional"):
        plausibility = regional(real, single, atlas, request.conditions,
                                progress=request.progress)
    names.write_all(request, real=real, reference=reference, synthetic=synthetic,
                    similarity=similarity, memorization=memo, distribution=distribution,
                    regional=plausibility)
    from ..reports.evaluate import write_evaluate_report

    report = write_evaluate_report(names, request=request, real=real, reference=reference,
                                   synthetic=synthetic, similarity=similarity,
                                   memorization=memo, distribution=distribution,
                                   regional=plausibility)
    return EvaluateResult(real=real, reference=reference, synthetic=synthetic,
                          similarity=similarity, memorization=memo, distribution=distribution,
                          regional=plausibility, report=report)
