"""genbrain simulate: BIDS validity, ground truth consistency, planted effects, CLI."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import map_coordinates

from bids_genbrain.simulate import (Acquisition, Effects, Region, SimulationConfig,
                                    load_effect_map, load_ground_truth, simulate_dataset)
from bids_genbrain.utils import cache_dir

BIDS_VALIDATOR = "bids-validator@1.15.0"


@pytest.fixture(scope="module")
def sim_sessions(tmp_path_factory):
    """2 participants x 2 sessions, all three contrasts."""
    config = SimulationConfig.fast(n_subjects=2, n_sites=2, n_sessions=2,
                                   modalities=("T1w", "T2w", "FLAIR"), seed=5)
    return simulate_dataset(tmp_path_factory.mktemp("sessions") / "bids", config)


@pytest.fixture(scope="session")
def bids_validator() -> Path:
    """The official bids-validator from npm, installed once into the cache folder."""
    npm = shutil.which("npm")
    if not shutil.which("node") or not npm:
        pytest.skip("node/npm not installed")
    folder = cache_dir() / "npm"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / BIDS_VALIDATOR.replace("@", "-")
    exe = target / "node_modules" / ".bin" / "bids-validator"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            tmp = tempfile.mkdtemp(prefix=".install-", dir=folder)
            proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", tmp,
                                   BIDS_VALIDATOR], capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                pytest.skip(f"npm install {BIDS_VALIDATOR} failed: {proc.stderr[-300:]}")
            os.replace(tmp, target)
    return exe


def _validate(exe: Path, root: Path) -> dict:
    proc = subprocess.run([str(exe), str(root), "--json"], capture_output=True, text=True,
                          timeout=300)
    return json.loads(proc.stdout)["issues"]


@pytest.mark.parametrize("dataset", ["sim_small", "sim_sessions"])
def test_official_bids_validator_finds_no_error(dataset, bids_validator, request):
    result = request.getfixturevalue(dataset)
    issues = _validate(bids_validator, result.root)
    assert [e["key"] for e in issues["errors"]] == []


def test_official_bids_validator_catches_a_broken_copy(sim_sessions, bids_validator, tmp_path):
    """The validator run above really checks the data: damage a copy and it complains."""
    broken = tmp_path / "broken"
    shutil.copytree(sim_sessions.root, broken, ignore=shutil.ignore_patterns("derivatives"))
    (broken / "dataset_description.json").unlink()
    image = next(broken.rglob("*_T1w.nii.gz"))
    image.rename(image.with_name(image.name.replace("_T1w", "_T1")))
    keys = {e["key"] for e in _validate(bids_validator, broken)["errors"]}
    assert {"NOT_INCLUDED", "DATASET_DESCRIPTION_JSON_MISSING"} <= keys


def test_pybids_layout_sidecars_and_participants(sim_small):
    from bids import BIDSLayout

    from bids_genbrain.bids import read_participants

    layout = BIDSLayout(sim_small.root, validate=True)
    assert layout.get_subjects() == [f"{i:02d}" for i in range(1, 7)]
    for modality in ("T1w", "FLAIR"):
        files = layout.get(suffix=modality, extension=".nii.gz")
        assert len(files) == 6
        meta = layout.get_metadata(files[0].path)
        assert meta["RepetitionTime"] > 0 and meta["MagneticFieldStrength"] in (1.5, 3.0)
    participants = layout.get_collections("dataset")[0].to_df().set_index("subject")
    typed = read_participants(sim_small.root)
    truth = sim_small.table.set_index(sim_small.table["participant_id"].str[4:])
    for label, row in truth.iterrows():
        assert participants.loc[label, "age"] == pytest.approx(row["age"])
        assert participants.loc[label, "site"] == row["site"] == typed.loc[label, "site"]
        assert typed.loc[label, "sex"] == row["sex"]
        assert typed.loc[label, "diagnosis"] == row["diagnosis"]
    assert set(typed.attrs["columns"]) >= {"age", "sex", "diagnosis", "site", "score"}
    assert sorted(typed["site"].unique()) == ["site1", "site2"]

    derivatives = BIDSLayout(sim_small.root, validate=True, derivatives=True).derivatives
    gt = derivatives["derivatives/groundtruth"]
    assert len(gt.get(desc="coords", suffix="xfm", extension=".nii.gz")) == 12
    assert len(gt.get(label="GM", desc="modulated", suffix="probseg", extension=".nii.gz")) == 6
    maps = derivatives["derivatives/mnimaps"]
    assert len(maps.get(desc="FA", suffix="dwimap", extension=".nii.gz")) == 6


def test_ground_truth_mapping_points_into_the_native_image(sim_small):
    """Sampling each native image where the true MNI -> scanner map says reproduces the truth."""
    for _, image in sim_small.images.iterrows():
        truth = load_ground_truth(sim_small.groundtruth, image.participant_id,
                                  modality=image.modality)
        assert truth.native_path == image.path
        native = nb.load(image.path)
        data = np.asanyarray(native.dataobj, dtype=np.float32)
        scanner = truth.coords[truth.brain_mask]
        inv = np.linalg.inv(native.affine)
        ijk = inv[:3, :3] @ scanner.T + inv[:3, 3:4]
        assert (ijk > -0.5).all() and (ijk < np.array(data.shape)[:, None] - 0.5).all()
        expected = truth.image[truth.brain_mask]
        r_true = np.corrcoef(map_coordinates(data, ijk, order=1), expected)[0, 1]
        offset = ijk + (inv[:3, :3] @ np.array([4.0, 0, 0]))[:, None]  # 4 mm off in x
        r_off = np.corrcoef(map_coordinates(data, offset, order=1), expected)[0, 1]
        assert r_true > 0.95 and r_off < r_true - 0.15, (image.path, r_true, r_off)


def test_ground_truth_helpers(sim_small):
    truth = load_ground_truth(sim_small.groundtruth, "sub-02", modality="FLAIR")
    voxels = np.argwhere(truth.brain_mask)[::97]
    np.testing.assert_allclose(truth.mni_to_scanner(voxels), truth.coords[tuple(voxels.T)],
                               atol=1e-4)
    halfway = truth.mni_to_scanner(voxels[:5] + 0.5)
    corners = np.stack([truth.coords[tuple((voxels[:5] + np.array(o)).T)]
                        for o in np.ndindex(2, 2, 2)]).mean(0)
    np.testing.assert_allclose(halfway, corners, atol=1e-3)
    assert truth.displacement_error(truth.coords) == 0.0
    assert truth.displacement_error(truth.coords + np.array([3.0, 4.0, 0.0])) == pytest.approx(5.0)
    assert truth.metadata["coords"]["Geometry"]["AxisCodes"] == "".join(
        nb.aff2axcodes(nb.load(truth.native_path).affine))
    np.testing.assert_allclose(truth.gm_modulated, truth.tissue["GM"] * np.exp(truth.log_jacobian),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        load_ground_truth(sim_small.groundtruth, "sub-99")


def test_native_geometry_varies(sim_small):
    zooms, codes, oblique = [], set(), []
    for path in sim_small.images["path"]:
        img = nb.load(path)
        zooms.append(img.header.get_zooms())
        codes.add("".join(nb.aff2axcodes(img.affine)))
        directions = img.affine[:3, :3] / np.array(img.header.get_zooms())
        oblique.append(np.abs(directions).max(0).min() < 0.999)
        assert img.get_data_dtype() == np.int16 and int(img.header["sform_code"]) == 1
    zooms = np.array(zooms)
    assert (zooms >= 2.0 - 1e-3).all() and (zooms <= 3.0 + 1e-3).all()
    assert len({tuple(np.round(z, 3)) for z in zooms}) == len(zooms)  # every image its own grid
    assert (np.ptp(zooms, axis=1) > 0.01).any()  # some anisotropic
    assert len(codes) >= 3
    assert any(oblique) and not all(oblique)


def test_determinism(tmp_path):
    config = SimulationConfig.fast(n_subjects=2, modalities=("T1w",), seed=11)
    first = simulate_dataset(tmp_path / "a", config)
    second = simulate_dataset(tmp_path / "b", config, n_jobs=2)
    other = simulate_dataset(tmp_path / "c", config.replace(seed=12))

    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a, b, c = digests(first.root), digests(second.root), digests(other.root)
    assert len(a) > 30 and a == b
    images = [k for k in a if k.endswith("_T1w.nii.gz")]
    assert images and all(a[k] != c[k] for k in images)


def test_sessions_are_longitudinal(sim_sessions):
    table = sim_sessions.table
    assert list(table["session_id"]) == ["ses-1", "ses-2"] * 2
    sessions_tsv = pd.read_csv(sim_sessions.root / "sub-01" / "sub-01_sessions.tsv", sep="\t")
    assert list(sessions_tsv["session_id"]) == ["ses-1", "ses-2"]
    for _, rows in table.groupby("participant_id"):
        first, second = rows.iloc[0], rows.iloc[1]
        assert 1.0 <= second["age"] - first["age"] <= 2.0
        assert second["gm_ml"] < first["gm_ml"]  # GM loss with age
        assert second["icv_ml"] == pytest.approx(first["icv_ml"], rel=1e-3)
    poses = [load_ground_truth(sim_sessions.groundtruth, "01", s, "T2w").metadata["coords"]["Pose"]
             for s in ("1", "2")]
    assert poses[0] != poses[1]


def _glm_t(y: np.ndarray, design: np.ndarray, column: int) -> np.ndarray:
    """Voxel-wise OLS t statistic of one design column; y is (n, voxels)."""
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    dof = len(y) - design.shape[1]
    var = (resid**2).sum(0) / dof * np.linalg.inv(design.T @ design)[column, column]
    return beta[column] / np.sqrt(np.maximum(var, 1e-20))


def test_planted_effects_are_recovered_by_a_voxel_glm(tmp_path):
    config = SimulationConfig.fast(n_subjects=30, modalities=("T1w",), native=False,
                                   mnimaps=True, seed=1)
    config = config.replace(effects=Effects(diagnosis_gm_loss=0.2))
    sim = simulate_dataset(tmp_path / "bids", config, n_jobs=2)
    table = sim.table
    truths = [load_ground_truth(sim.groundtruth, p) for p in table["participant_id"]]
    mask = truths[0].brain_mask
    gm_mean = np.mean([t.tissue["GM"] for t in truths], axis=0)
    grey = mask & (gm_mean > 0.2)
    design = np.column_stack([np.ones(len(table)), table["diagnosis"] == "patient",
                              table["age"], table["sex"] == "M"]).astype(float)
    gm = np.stack([t.tissue["GM"][grey] for t in truths])

    effect, sidecar = load_effect_map(sim.groundtruth, "GM", "diagnosis", 4.0)
    assert {r["Name"] for r in sidecar["Regions"]} == {"hippocampusL", "hippocampusR", "precuneus"}
    region = (effect < 0.5 * effect.min())[grey]
    elsewhere = (effect == 0)[grey]
    t_dx = _glm_t(gm, design, 1)
    assert np.median(t_dx[region]) < -4.0
    assert np.mean(np.abs(t_dx[elsewhere]) > 3.5) < 0.01
    assert abs(np.mean(t_dx[elsewhere])) < 0.5
    t_age = _glm_t(gm, design, 2)  # GM loss with age everywhere, strongest frontally
    age_effect, _ = load_effect_map(sim.groundtruth, "GM", "age", 4.0)
    assert np.median(t_age) < -2.0
    assert np.corrcoef(t_age, age_effect[grey])[0, 1] > 0.3

    # FA of patients is lower in the planted region of derivatives/mnimaps, nowhere else
    fa_effect, _ = load_effect_map(sim.groundtruth, "FA", "diagnosis", 4.0)
    fa_paths = [next((sim.mnimaps / p).rglob("*desc-FA_dwimap.nii.gz"))
                for p in table["participant_id"]]
    fa = np.stack([nb.load(path).get_fdata()[mask] for path in fa_paths])
    t_fa = _glm_t(fa, design, 1)
    assert np.median(t_fa[(fa_effect < 0.5 * fa_effect.min())[mask]]) < -3.0
    assert np.mean(np.abs(t_fa[(fa_effect == 0)[mask]]) > 3.5) < 0.01


def test_config_validation():
    with pytest.raises(ValueError, match="n_subjects"):
        SimulationConfig(n_subjects=0)
    with pytest.raises(ValueError, match="modalities"):
        SimulationConfig(modalities=("PD",))
    with pytest.raises(ValueError, match="n_sites"):
        SimulationConfig(n_subjects=2, n_sites=3)
    with pytest.raises(ValueError, match="voxel_size_range"):
        Acquisition(voxel_size_range=(2.0, 1.0))
    assert Region.parse("amygdalaL:-22,-4,-18,6") == Region("amygdalaL", (-22.0, -4.0, -18.0), 6.0)
    with pytest.raises(ValueError, match="name:x,y,z,radius"):
        Region.parse("amygdala:1,2")


def test_refuses_to_overwrite_foreign_folders(tmp_path, sim_small):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a simulated dataset"):
        simulate_dataset(foreign, SimulationConfig.fast(n_subjects=1, n_sites=1), overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_dataset(sim_small.root, SimulationConfig.fast(n_subjects=1, n_sites=1))


def _genbrain(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("genbrain")
    return subprocess.run([str(exe), "simulate", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_writes_a_dataset(tmp_path):
    out = tmp_path / "cli"
    proc = _genbrain(str(out), "--fast", "--n-subjects", "2", "--n-sites", "1", "--modality",
                     "T1w", "--seed", "4", "--no-skull", "--mni-resolution", "6", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "2 native images" in proc.stdout
    config = json.loads((out / "derivatives" / "groundtruth" / "simulation.json").read_text())
    assert config["Config"]["seed"] == 4 and config["Config"]["acquisition"]["skull"] is False
    assert len(list(out.glob("sub-*/anat/*_T1w.nii.gz"))) == 2
    truth = out.glob("derivatives/groundtruth/sub-*/anat/*res-6_label-GM_probseg.nii.gz")
    assert len(list(truth)) == 2


def test_cli_population_preset(tmp_path):
    """--population: healthy adults of both sexes, the pretraining maps in MNI space only."""
    from bids_genbrain.cohort import find_images
    from bids_genbrain.simulation.config import POPULATION_MAPS

    out = tmp_path / "pop"
    proc = _genbrain(str(out), "--population", "--n-subjects", "12", "--mni-resolution", "8",
                     "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "12 participants, 0 native images" in proc.stdout
    participants = pd.read_csv(out / "participants.tsv", sep="\t")
    assert set(participants["diagnosis"]) == {"CN"} and set(participants["sex"]) == {"F", "M"}
    assert participants["age"].between(18, 90).all() and participants["site"].nunique() == 4
    assert not list(out.glob("sub-*"))  # no raw images
    truth = out / "derivatives" / "groundtruth"
    assert not list(truth.glob("sub-*")) and (truth / "simulation.tsv").is_file()
    config = json.loads((truth / "simulation.json").read_text())["Config"]
    assert config["anatomy_resolution"] == 4.0 and config["subject_truth"] is False
    maps = out / "derivatives" / "mnimaps"
    for name in ("T1w", "FLAIR", *POPULATION_MAPS):  # each readable by the cohort store
        found = find_images([maps], name, 8.0)
        assert len(found) == 12 and found["participant_id"].is_unique, name
    for name in ("WM", "CSF", "MD", "FC"):  # not written
        assert find_images([maps], name, 8.0).empty, name
    assert len(list(maps.glob("sub-01/*/*.nii.gz"))) == 6  # five maps and the brain mask


def test_leaving_maps_out_changes_no_other_map(tmp_path):
    from bids_genbrain.simulate import SimulationConfig, simulate_dataset

    config = SimulationConfig.population(n_subjects=2, n_sites=1, mni_resolution=8.0)
    full = simulate_dataset(tmp_path / "full", config.replace(maps=None))
    some = simulate_dataset(tmp_path / "some", config.replace(maps=("GMmod", "FA")))
    written = sorted(p.name for p in some.mnimaps.rglob("*.nii.gz"))
    assert [n for n in written if "mask" not in n] == [
        f"sub-{i}_space-MNI152NLin6Asym_res-8_{e}.nii.gz" for i in ("01", "02")
        for e in ("desc-FA_dwimap", "label-GM_desc-modulated_probseg")]
    for path in some.mnimaps.rglob("*.nii.gz"):
        twin = full.mnimaps / path.relative_to(some.mnimaps)
        assert np.array_equal(nb.load(path).get_fdata(), nb.load(twin).get_fdata()), path.name


@pytest.mark.parametrize("args, message", [
    (["--n-subjects", "0"], "n_subjects"),
    (["--modality", "PD"], "modalities"),
    (["--diagnosis-region", "hippo:1,2"], "name:x,y,z,radius"),
    (["--n-subjects", "many"], "Invalid value"),
    (["--map", "ADC"], "maps must be names"),
    (["--map", "FLAIR", "--modality", "T1w"], "need the contrast"),
    (["--population"], "two presets"),
])
def test_cli_bad_options_exit_2(tmp_path, args, message):
    proc = _genbrain(str(tmp_path / "out"), "--fast", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
