"""Cohort store: discovery by the naming contract, conditions, normalisation, resampling."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from _model_factory import RES, gm_map, write_cohort, write_maps

from bids_genbrain.cohort import CohortError, CohortStore, build_cohort, find_images
from bids_genbrain.derivatives import derivative_path
from bids_genbrain.templates import TEMPLATE, brain_mask, mni_grid


def test_store_holds_normalised_images_and_typed_conditions(tmp_path):
    table = write_cohort(tmp_path / "deriv", [30.0, 50.0, 70.0], modality="T1w")
    table.loc[2, "sex"] = None
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store", modalities=["T1w"],
                         participants=table, conditions=["age", "sex"], resolution=RES,
                         progress=False)
    mask = brain_mask(RES)
    assert isinstance(store.data, np.memmap) and store.data.shape == (3, mask.sum())
    assert store.data.min() >= 0.0 and store.data.max() <= 1.0
    norm = store.normalisation["T1w"]
    raw = np.asanyarray(nb.load(store.table["path"][1]).dataobj)[mask]
    inside = (raw > norm["lo"]) & (raw < norm["hi"])  # values not clipped map back exactly
    np.testing.assert_allclose(store.denormalise(store.read([1])[0], "T1w")[inside],
                               raw[inside], rtol=1e-5, atol=1e-2)
    assert inside.mean() > 0.95
    specs = {c.name: c for c in store.conditions}
    assert specs["age"].kind == "continuous" and specs["age"].mean == pytest.approx(50.0)
    assert specs["sex"].levels == ["F", "M"] and specs["modality"].dropout == 0.0
    enc = store.encode()
    assert enc["sex"].tolist() == [1, 0, 2]  # M, F, missing -> null
    assert json.loads((store.path / "cohort.json").read_text())["data_sha256"]
    # rows come back in the order asked, repeats allowed (streamed from the memmap)
    rows = store.read([2, 0, 2])
    np.testing.assert_array_equal(rows[0], rows[2])
    np.testing.assert_array_equal(rows[1], np.asarray(store.data[0]))


def test_an_up_to_date_store_is_reused_and_a_changed_one_rebuilt(tmp_path):
    import os

    table = write_cohort(tmp_path / "deriv", [30.0, 50.0, 70.0])
    kwargs = dict(participants=table, conditions=["age"], resolution=RES, progress=False)
    first = build_cohort([tmp_path / "deriv"], tmp_path / "store", **kwargs)
    digest = first.meta["inputs_sha256"]
    built = os.stat(first.path / "data.f32").st_mtime_ns
    again = build_cohort([tmp_path / "deriv"], tmp_path / "store", reuse=True, **kwargs)
    assert os.stat(again.path / "data.f32").st_mtime_ns == built  # not read again
    table.loc[0, "age"] = 31.0  # other rows: rebuilt
    changed = build_cohort([tmp_path / "deriv"], tmp_path / "store", reuse=True, **kwargs)
    assert changed.meta["inputs_sha256"] != digest
    image = changed.table["path"][1]  # a rewritten image: rebuilt
    os.utime(image, ns=(built, built + 10**9))
    touched = build_cohort([tmp_path / "deriv"], tmp_path / "store", reuse=True, **kwargs)
    assert touched.meta["inputs_sha256"] != changed.meta["inputs_sha256"]
    assert touched.meta["data_sha256"] == changed.meta["data_sha256"]  # same content


def test_probability_maps_keep_their_scale(tmp_path):
    maps = [gm_map(40.0, seed=s) for s in range(2)]
    write_maps(tmp_path / "deriv", maps, modality="GM")
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store", modalities=["GM"],
                         resolution=RES, progress=False)
    assert store.normalisation["GM"]["lo"] == 0.0 and store.normalisation["GM"]["hi"] == 1.0
    np.testing.assert_allclose(store.read([1])[0], maps[1][brain_mask(RES)], atol=1e-6)


def test_sessions_and_several_modalities(tmp_path):
    table = write_cohort(tmp_path / "deriv", [30.0, 60.0], sessions=True)
    write_cohort(tmp_path / "deriv", [30.0, 60.0], sessions=True, modality="T1w")
    table["session_id"] = ["1", "1"]
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store",
                         modalities=["GMmod", "T1w"], participants=table,
                         conditions=["age"], resolution=RES, progress=False)
    assert store.modalities == ["GMmod", "T1w"] and len(store) == 4
    assert store.table["session_id"].tolist() == ["ses-1"] * 4
    assert store.encode()["modality"].tolist() == [0, 0, 1, 1]
    assert store.table["age"].tolist() == [30.0, 60.0, 30.0, 60.0]


def test_exact_resolution_is_preferred_and_others_resampled(tmp_path):
    root = tmp_path / "deriv"
    write_maps(root, [gm_map(40.0, seed=0)])  # res-8
    coarse, affine = mni_grid(12.0)
    other = derivative_path(root, {"sub": "02", "space": TEMPLATE, "res": "12", "label": "GM",
                                   "desc": "modulated"}, "probseg")
    other.parent.mkdir(parents=True, exist_ok=True)
    nb.save(nb.Nifti1Image(gm_map(40.0, seed=1, resolution=12.0), affine), other)
    found = find_images([root], "GMmod", RES)
    assert found["participant_id"].tolist() == ["sub-01", "sub-02"]
    with pytest.warns(UserWarning, match="resampling"):
        store = build_cohort([root], tmp_path / "store", resolution=RES, progress=False)
    first, second = store.read([0, 1])
    assert np.corrcoef(first, second)[0, 1] > 0.8  # same anatomy after resampling


def test_generic_maps_by_desc(tmp_path):
    root = tmp_path / "deriv"
    _, affine = mni_grid(RES)
    path = derivative_path(root, {"sub": "01", "space": TEMPLATE, "res": "8", "desc": "FA"},
                           "dwimap", datatype="dwi")
    path.parent.mkdir(parents=True)
    nb.save(nb.Nifti1Image(gm_map(40.0, 0), affine), path)
    found = find_images([root], "FA", RES)
    assert found["path"].tolist() == [str(path)]
    assert find_images([root], "GMmod", RES).empty


def test_errors_are_clear(tmp_path):
    write_cohort(tmp_path / "deriv", [30.0])
    with pytest.raises(CohortError, match="no T2w images"):
        build_cohort([tmp_path / "deriv"], tmp_path / "s", modalities=["T2w"], resolution=RES,
                     progress=False)
    with pytest.raises(CohortError, match="not found"):
        find_images([tmp_path / "missing"], "GMmod", RES)
    with pytest.raises(CohortError, match="need a participants table"):
        build_cohort([tmp_path / "deriv"], tmp_path / "s", conditions=["age"], resolution=RES,
                     progress=False)
    with pytest.raises(CohortError, match="not columns"):
        build_cohort([tmp_path / "deriv"], tmp_path / "s", conditions=["iq"], resolution=RES,
                     participants=pd.DataFrame({"participant_id": ["sub-01"]}), progress=False)
    with pytest.raises(CohortError, match="not a cohort store"):
        CohortStore(tmp_path)
    assert not (tmp_path / "s").exists()  # nothing half-written


def test_ambiguous_or_reserved_conditions_are_refused(tmp_path):
    table = write_cohort(tmp_path / "deriv", [30.0, 50.0])
    twice = pd.concat([table, table.iloc[[0]]], ignore_index=True)
    with pytest.raises(CohortError, match="several rows"):
        build_cohort([tmp_path / "deriv"], tmp_path / "s", participants=twice,
                     conditions=["age"], resolution=RES, progress=False)
    with pytest.raises(CohortError, match="reserved"):
        build_cohort([tmp_path / "deriv"], tmp_path / "s", participants=table,
                     conditions=["modality"], resolution=RES, progress=False)


def test_reads_the_simulators_mni_maps(tmp_path):
    """The simulator's derivatives/mnimaps follow the naming contract the store reads."""
    from bids_genbrain.bids import read_participants
    from bids_genbrain.simulate import simulate_dataset

    sim = simulate_dataset(tmp_path / "sim", n_subjects=3, native=False, mnimaps=True,
                           mni_resolution=RES, anatomy_resolution=4.0, seed=1)
    table = read_participants(sim.root)
    store = build_cohort([sim.mnimaps], tmp_path / "store", modalities=["GMmod", "FA", "FC"],
                         participants=table, conditions=["age", "sex", "diagnosis"],
                         resolution=RES, progress=False)
    assert len(store) == 9 and store.modalities == ["GMmod", "FA", "FC"]
    assert store.table["path"].str.contains("desc-FC_boldmap").sum() == 3
    np.testing.assert_allclose(store.table["age"][:3], sim.table["age"], rtol=1e-6)
    specs = {c.name: c for c in store.conditions}
    assert specs["diagnosis"].kind == "categorical" and specs["sex"].levels == ["F", "M"]
    assert store.normalisation["FA"]["entities"] == {"suffix": "dwimap", "desc": "FA",
                                                     "label": None}
