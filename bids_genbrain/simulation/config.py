"""Parameters of a simulated cohort: planted effects, acquisition, cohort size.

Three frozen dataclasses hold everything :func:`bids_genbrain.simulate.simulate_dataset`
needs; :class:`SimulationConfig` validates itself on construction so a bad value fails
before anything is written.

Effect conventions (all relative to ``Effects.age_reference`` years and to controls):

* GM density: a subject's GM probability is ``GM_template * exp(eps) * (1 - loss)`` with
  ``loss = age_map * (age - age_reference) / 10 + diagnosis_map * is_patient
  - score_map * score_z`` (``eps`` is the subject's smooth random variation); what GM loses
  becomes CSF.
* Ventricles grow by a deformation: ``ventricle_mm_per_decade`` is the largest outward
  displacement of the ventricle wall per decade.
* Sex: men's heads are ``1 + sex_size / 2`` and women's ``1 - sex_size / 2`` times the
  template size (times the subject's own size factor).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MODALITIES = ("T1w", "T2w", "FLAIR")
"""Native contrasts the simulator can write."""

MNI_MAPS = (*MODALITIES, "GM", "WM", "CSF", "GMmod", "FA", "MD", "FC")
"""Maps of ``derivatives/mnimaps``, by the names the cohort store knows them
(:data:`bids_genbrain.cohort.MODALITIES`; ``FA``, ``MD``, ``FC`` by their ``desc``). A contrast
(``T1w``, ``T2w``, ``FLAIR``) exists only for the simulated ``modalities``."""

POPULATION_MAPS = ("GM", "GMmod", "FA")
"""What :meth:`SimulationConfig.population` writes besides its contrasts (T1w and FLAIR by
default): the maps a foundation model pretrains on."""


@dataclass(frozen=True)
class Region:
    """A spherical region in MNI mm with a soft (logistic, 1.5 mm) edge.

    Parameters
    ----------
    name : str
        Alphanumeric label (used in sidecars).
    center_mm : tuple of float
        Centre ``(x, y, z)`` in MNI152 mm (RAS).
    radius_mm : float
        Radius at which the weight is 0.5.
    """

    name: str
    center_mm: tuple[float, float, float]
    radius_mm: float

    def __post_init__(self) -> None:
        if not self.name.isalnum():
            raise ValueError(f"region name must be alphanumeric, got {self.name!r}")
        if len(self.center_mm) != 3:
            raise ValueError(f"region {self.name}: center_mm needs 3 values")
        if self.radius_mm <= 0:
            raise ValueError(f"region {self.name}: radius_mm must be positive")

    @classmethod
    def parse(cls, text: str) -> Region:
        """Parse ``name:x,y,z,radius`` (e.g. ``hippocampusL:-28,-22,-14,10``).

        Raises
        ------
        ValueError
            Not of that form.
        """
        name, sep, numbers = text.partition(":")
        try:
            values = [float(v) for v in numbers.split(",")]
        except ValueError:
            values = []
        if not sep or len(values) != 4:
            raise ValueError(f"region {text!r} is not of the form name:x,y,z,radius")
        return cls(name.strip(), (values[0], values[1], values[2]), values[3])


DIAGNOSIS_REGIONS = (
    Region("hippocampusL", (-28.0, -22.0, -14.0), 10.0),
    Region("hippocampusR", (28.0, -22.0, -14.0), 10.0),
    Region("precuneus", (0.0, -60.0, 38.0), 12.0),
)
SCORE_REGIONS = (Region("dlpfcL", (-42.0, 32.0, 24.0), 12.0),)
FA_REGIONS = (Region("splenium", (0.0, -38.0, 14.0), 10.0),)
FC_SEED = Region("pcc", (0.0, -52.0, 26.0), 8.0)
FC_NETWORK = (
    Region("mpfc", (0.0, 52.0, -2.0), 12.0),
    Region("angularL", (-46.0, -66.0, 30.0), 10.0),
    Region("angularR", (46.0, -66.0, 30.0), 10.0),
)
FC_DIAGNOSIS_REGIONS = (FC_NETWORK[0],)


@dataclass(frozen=True)
class Effects:
    """Planted effects (sizes and regions); the defaults are detectable at N of about 100.

    Parameters
    ----------
    age_reference : float
        Age (years) at which the age effects are zero.
    age_gm_loss_per_decade : float
        Mean fractional GM loss per decade (cortex-wide, 1.5x frontally, 0.5x occipitally).
    ventricle_mm_per_decade : float
        Outward displacement of the ventricle walls per decade (a deformation).
    sex_size : float
        Linear head/brain size difference men minus women, as a fraction.
    diagnosis_gm_loss : float
        Fractional GM loss of patients in ``diagnosis_regions`` (Cohen's d about 1.2 with
        the default individual variation).
    diagnosis_regions : tuple of Region
        Where patients lose GM.
    score_gm_effect : float
        Fractional GM gain per standard deviation of the continuous score in
        ``score_regions``.
    score_regions : tuple of Region
        Where the score acts.
    score_diagnosis_shift : float
        Mean score of patients minus controls, in control standard deviations.
    fa_age_per_decade : float
        FA change per decade in white matter (MNI-space maps only).
    fa_diagnosis : float
        FA change of patients in ``fa_regions``.
    fa_regions : tuple of Region
        Where patients' FA differs.
    md_age_per_decade : float
        Relative MD change per decade.
    fc_diagnosis : float
        Change of the seed correlation of patients in ``fc_regions``.
    fc_regions : tuple of Region
        Where patients' seed connectivity differs.
    """

    age_reference: float = 50.0
    age_gm_loss_per_decade: float = 0.03
    ventricle_mm_per_decade: float = 0.6
    sex_size: float = 0.04
    diagnosis_gm_loss: float = 0.10
    diagnosis_regions: tuple[Region, ...] = DIAGNOSIS_REGIONS
    score_gm_effect: float = 0.03
    score_regions: tuple[Region, ...] = SCORE_REGIONS
    score_diagnosis_shift: float = -1.0
    fa_age_per_decade: float = -0.015
    fa_diagnosis: float = -0.06
    fa_regions: tuple[Region, ...] = FA_REGIONS
    md_age_per_decade: float = 0.03
    fc_diagnosis: float = -0.2
    fc_regions: tuple[Region, ...] = FC_DIAGNOSIS_REGIONS

    def __post_init__(self) -> None:
        for name in ("age_gm_loss_per_decade", "diagnosis_gm_loss"):
            value = getattr(self, name)
            if not -0.5 < value < 0.9:
                raise ValueError(f"{name} must lie in (-0.5, 0.9), got {value}")
        if abs(self.ventricle_mm_per_decade) > 3:
            raise ValueError("ventricle_mm_per_decade must be within +-3 mm")
        if not -0.3 < self.sex_size < 0.3:
            raise ValueError("sex_size must lie in (-0.3, 0.3)")


@dataclass(frozen=True)
class Acquisition:
    """Native scanner geometry and artefacts.

    Parameters
    ----------
    voxel_size_range : tuple of float
        Smallest and largest voxel edge (mm).
    anisotropic_fraction : float
        Probability that an image has a thicker slice axis than its in-plane voxels.
    max_rotation_deg : float
        Largest head rotation about each axis (pitch gets the full range, roll/yaw half).
    max_translation_mm : float
        Largest head displacement from the scanner isocentre, per axis.
    oblique_fraction : float
        Probability that the field of view is tilted against the scanner axes.
    max_oblique_deg : float
        Largest tilt of an oblique field of view.
    fov_crop : bool
        Randomly cut the field of view into scalp, skull and neck (never into the brain).
    skull : bool
        Add synthetic extra-cerebral CSF, skull and scalp around the brain.
    noise_range : tuple of float
        Range of the sites' Rician noise level (fraction of the brightest tissue).
    bias_range : tuple of float
        Range of the sites' bias field strength (half the log-intensity span).
    contrast_sd : float
        Site-to-site relative variation of each tissue intensity.
    motion_fraction : float
        Probability that an image carries a k-space motion (ghosting) artefact.
    """

    voxel_size_range: tuple[float, float] = (0.8, 1.5)
    anisotropic_fraction: float = 0.4
    max_rotation_deg: float = 12.0
    max_translation_mm: float = 15.0
    oblique_fraction: float = 0.6
    max_oblique_deg: float = 15.0
    fov_crop: bool = True
    skull: bool = True
    noise_range: tuple[float, float] = (0.01, 0.04)
    bias_range: tuple[float, float] = (0.05, 0.3)
    contrast_sd: float = 0.05
    motion_fraction: float = 0.1

    def __post_init__(self) -> None:
        lo, hi = self.voxel_size_range
        if not 0.3 <= lo <= hi <= 8.0:
            raise ValueError(f"voxel_size_range must satisfy 0.3 <= min <= max <= 8 mm,"
                             f" got {self.voxel_size_range}")
        for name in ("anisotropic_fraction", "oblique_fraction", "motion_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if not 0 <= self.max_rotation_deg <= 45 or not 0 <= self.max_oblique_deg <= 45:
            raise ValueError("rotation and obliquity limits must lie in [0, 45] degrees")
        if not 0 <= self.noise_range[0] <= self.noise_range[1] < 0.5:
            raise ValueError(f"noise_range must satisfy 0 <= min <= max < 0.5,"
                             f" got {self.noise_range}")
        if not 0 <= self.bias_range[0] <= self.bias_range[1] <= 1.0:
            raise ValueError(f"bias_range must satisfy 0 <= min <= max <= 1, got {self.bias_range}")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulated dataset (with ``seed``, it fixes every byte).

    Parameters
    ----------
    n_subjects, n_sites, n_sessions : int
        Cohort size; subjects are spread evenly over sites; sessions are a year or two apart.
    modalities : tuple of str
        Native contrasts (subset of ``T1w``, ``T2w``, ``FLAIR``).
    seed : int
        Seed of every random draw.
    mni_resolution : float
        Ground-truth (and MNI maps) grid in mm: 2 (FSL 91x109x91) by default, 4 for fast tests.
    anatomy_resolution : float
        Grid (mm) on which subjects' anatomy is built and from which native images are drawn.
    age_range : tuple of float
        Uniform range of baseline ages.
    patient_fraction : float
        Expected fraction of patients.
    native : bool
        Write native scanner images (False: only participants, ground truth and MNI maps,
        for fast group-level tests).
    mnimaps : bool
        Also write ``derivatives/mnimaps`` (preprocessed-like MNI-space maps: images, tissue
        probabilities, modulated GM, FA, MD, seed FC).
    native_tissues : bool
        Also write the true GM/WM/CSF probabilities of each native T1w on its own voxel grid
        (ground truth of a T1w-space segmentation, as fMRIPrep's ``label-GM_probseg``).
    maps : tuple of str, optional
        Which of :data:`MNI_MAPS` ``derivatives/mnimaps`` holds (None: all; the contrasts of
        ``modalities`` among them). Leaving a map out does not change the others.
    subject_truth : bool
        Write each session's true MNI maps under ``derivatives/groundtruth`` (False for
        populations: the truth table, configuration and effect maps are still written).
    effects : Effects
        Planted effects.
    acquisition : Acquisition
        Scanner geometry and artefacts.
    deformation_mm : float
        RMS of each component of a subject's smooth random displacement (mm).
    deformation_smoothness_mm : float
        Gaussian smoothing (sigma, mm) of that displacement.
    size_sd : float
        Individual head-size variation (fraction, on top of sex).
    gm_sd : float
        Individual smooth GM density variation (log scale).
    """

    n_subjects: int = 20
    n_sites: int = 2
    n_sessions: int = 1
    modalities: tuple[str, ...] = ("T1w", "FLAIR")
    seed: int = 0
    mni_resolution: float = 2.0
    anatomy_resolution: float = 1.0
    age_range: tuple[float, float] = (20.0, 85.0)
    patient_fraction: float = 0.5
    native: bool = True
    mnimaps: bool = False
    native_tissues: bool = False
    maps: tuple[str, ...] | None = None
    subject_truth: bool = True
    effects: Effects = field(default_factory=Effects)
    acquisition: Acquisition = field(default_factory=Acquisition)
    deformation_mm: float = 2.0
    deformation_smoothness_mm: float = 16.0
    size_sd: float = 0.03
    gm_sd: float = 0.08

    def __post_init__(self) -> None:
        if self.n_subjects < 1:
            raise ValueError(f"n_subjects must be at least 1, got {self.n_subjects}")
        if not 1 <= self.n_sites <= self.n_subjects:
            raise ValueError(f"n_sites must lie in [1, n_subjects], got {self.n_sites}")
        if not 1 <= self.n_sessions <= 9:
            raise ValueError(f"n_sessions must lie in [1, 9], got {self.n_sessions}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names from {MODALITIES},"
                             f" got {list(self.modalities)}")
        if self.maps is not None:
            unknown = [m for m in self.maps if m not in MNI_MAPS]
            if unknown or not self.maps:
                raise ValueError(f"maps must be names from {MNI_MAPS}, got {list(self.maps)}")
            missing = [m for m in self.maps if m in MODALITIES and m not in self.modalities]
            if missing:
                raise ValueError(f"maps {missing} need the contrast among modalities"
                                 f" {list(self.modalities)}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if not 0.5 <= self.mni_resolution <= 8:
            raise ValueError(f"mni_resolution must lie in [0.5, 8] mm, got {self.mni_resolution}")
        if not 0.5 <= self.anatomy_resolution <= 4:
            raise ValueError("anatomy_resolution must lie in [0.5, 4] mm,"
                             f" got {self.anatomy_resolution}")
        lo, hi = self.age_range
        if not 0 <= lo <= hi <= 120:
            raise ValueError(f"age_range must satisfy 0 <= min <= max <= 120, got {self.age_range}")
        if not 0.0 <= self.patient_fraction <= 1.0:
            raise ValueError("patient_fraction must lie in [0, 1]")
        if not 0 <= self.deformation_mm <= 6:
            raise ValueError("deformation_mm must lie in [0, 6]")
        if not 4 <= self.deformation_smoothness_mm <= 40:
            raise ValueError("deformation_smoothness_mm must lie in [4, 40]")
        if not 0 <= self.size_sd < 0.2 or not 0 <= self.gm_sd < 0.5:
            raise ValueError("size_sd must lie in [0, 0.2) and gm_sd in [0, 0.5)")

    @classmethod
    def fast(cls, **overrides) -> SimulationConfig:
        """A configuration for tests: 2-3 mm native voxels, 2 mm anatomy, 4 mm ground truth.

        Parameters
        ----------
        **overrides
            Any field of :class:`SimulationConfig`; ``acquisition`` replaces the fast one.
        """
        base = dict(
            mni_resolution=4.0,
            anatomy_resolution=2.0,
            acquisition=Acquisition(voxel_size_range=(2.0, 3.0)),
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def population(cls, **overrides) -> SimulationConfig:
        """A healthy population for pretraining a foundation model, straight in MNI space.

        2,000 participants aged 18-90 (both sexes, four sites, no patients), one session, no
        native images and no per-session truth: ``derivatives/mnimaps`` holds
        its contrasts and :data:`POPULATION_MAPS` (T1w, FLAIR, GM, modulated GM, FA) on the
        4 mm grid, the
        anatomy built on that grid too (no native image needs a finer one). ``genbrain
        pretrain`` reads it as derivatives.

        Parameters
        ----------
        **overrides
            Any field of :class:`SimulationConfig` (``n_subjects``, ``mni_resolution`` ...);
            ``anatomy_resolution`` follows ``mni_resolution`` unless given (at most 4 mm).
        """
        resolution = float(overrides.get("mni_resolution", 4.0))
        modalities = tuple(overrides.get("modalities", ("T1w", "FLAIR")))
        base = dict(
            n_subjects=2000, n_sites=4, modalities=modalities, age_range=(18.0, 90.0),
            patient_fraction=0.0, native=False, mnimaps=True,
            maps=(*modalities, *POPULATION_MAPS), subject_truth=False,
            mni_resolution=resolution, anatomy_resolution=min(resolution, 4.0),
        )
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes) -> SimulationConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
