"""Shared pytest configuration: offline templates, small thread counts."""

from __future__ import annotations

import os

# Tests run offline: skip the TemplateFlow network attempt and use the bundled fallback.
# Subprocess CLI calls inherit these.
os.environ.setdefault("GENBRAIN_TEMPLATES", "fallback")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


# --- simulator fixtures (bids_genbrain.simulate) -----------------------------------------
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _cwd_in_tmp(tmp_path, monkeypatch):
    """Each test runs in its own folder: the CLI's default work dir (./work, as fMRIPrep's)
    then never lands in the repository nor is shared between tests."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def sim_small(tmp_path_factory):
    """A small simulated dataset for any test: ``SimulationResult`` of ``simulate_dataset``.

    6 participants (sub-01..sub-06, 3 per site, sites site1/site2), one session (no ses-),
    native T1w and FLAIR with 2-3 mm voxels (random pose, orientation, obliquity, skull),
    anatomy built at 2 mm, ground truth and ``derivatives/mnimaps`` on the 4 mm MNI grid
    (``res-4``), seed 0. ``.root`` is the raw BIDS dataset, ``.groundtruth`` the truth
    (read with ``bids_genbrain.simulate.load_ground_truth``), ``.mnimaps`` the MNI maps,
    ``.table`` the true covariates and volumes, ``.images`` the native image paths.
    Treat it as read-only (it is shared).
    """
    from bids_genbrain.simulate import SimulationConfig, simulate_dataset

    config = SimulationConfig.fast(n_subjects=6, n_sites=2, modalities=("T1w", "FLAIR"),
                                   mnimaps=True, seed=0)
    return simulate_dataset(tmp_path_factory.mktemp("sim_small") / "bids", config)
