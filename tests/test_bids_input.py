"""participants.tsv typing, argv normalisation and image checks."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from _bids_factory import make_dataset, write_image

from bids_genbrain.bids import read_participants, select_participants, load_layout
from bids_genbrain.cli.bids_app import normalize_argv
from bids_genbrain.errors import InputError
from bids_genbrain.participant import ImageError, check_image


def _write(tmp_path, tsv: str, sidecar: dict | None = None):
    (tmp_path / "participants.tsv").write_text(tsv)
    if sidecar is not None:
        (tmp_path / "participants.json").write_text(json.dumps(sidecar))
    return read_participants(tmp_path)


@pytest.mark.parametrize("codes", [("M", "F"), ("male", "female"), ("m", "f"), ("Male", "FEMALE")])
def test_sex_spellings(tmp_path, codes):
    df = _write(tmp_path, f"participant_id\tsex\nsub-a\t{codes[0]}\nsub-b\t{codes[1]}\nsub-c\tn/a\n")
    assert df.loc["a", "sex"] == "M" and df.loc["b", "sex"] == "F"
    assert pd.isna(df.loc["c", "sex"])
    assert list(df["sex"].cat.categories) == ["F", "M"]


def test_numeric_sex_codes_need_levels(tmp_path):
    tsv = "participant_id\tsex\nsub-a\t1\nsub-b\t2\n"
    df = _write(tmp_path, tsv, {"sex": {"Levels": {"1": "male", "2": "female"}}})
    assert list(df["sex"]) == ["M", "F"]
    df = _write(tmp_path, tsv, {"sex": {"Levels": {"1": "female", "2": "male"}}})
    assert list(df["sex"]) == ["F", "M"]
    (tmp_path / "participants.json").unlink()
    with pytest.raises(InputError, match="sex value '1'"):
        read_participants(tmp_path)


def test_types_and_sidecar_meaning(tmp_path):
    tsv = ("participant_id\tage\tdiagnosis\tscore\tgroup\n"
           "sub-01\t25.5\tCN\t3\t1\nsub-02\tn/a\tAD\tn/a\t2\nsub-03\t70\tn/a\t7.5\t1\n")
    meta = {"score": {"Description": "MMSE"}, "group": {"Levels": {"1": "a", "2": "b"}}}
    df = _write(tmp_path, tsv, meta)
    assert df["age"].dtype == float and np.isnan(df.loc["02", "age"]) and df.loc["01", "age"] == 25.5
    assert isinstance(df["diagnosis"].dtype, pd.CategoricalDtype)
    assert pd.isna(df.loc["03", "diagnosis"])
    assert df["score"].dtype == float and df.loc["03", "score"] == 7.5
    assert isinstance(df["group"].dtype, pd.CategoricalDtype), "Levels make a column categorical"
    assert df.attrs["columns"]["score"]["Description"] == "MMSE"
    assert list(df["participant_id"]) == ["sub-01", "sub-02", "sub-03"]


@pytest.mark.parametrize("tsv, match", [
    ("participant_id\tage\nsub-01\t3\nsub-01\t4\n", "appears twice"),
    ("participant_id\tage\n01\t3\n", "not of the form sub-<label>"),
    ("participant_id\tage\nsub-01\t3\t4\t5\n", "malformed TSV"),
    ("", "malformed TSV"),
])
def test_malformed_participants(tmp_path, tsv, match):
    with pytest.raises(InputError, match=match):
        _write(tmp_path, tsv)


def test_select_participants(tmp_path):
    layout = load_layout(make_dataset(tmp_path / "ds", subjects=("01", "02", "10")))
    assert select_participants(layout, None) == ["01", "02", "10"]
    assert select_participants(layout, ["sub-10", "01"]) == ["01", "10"]
    with pytest.raises(InputError, match="sub-05"):
        select_participants(layout, ["05"])


def test_normalize_argv():
    argv = ["ds", "out", "participant", "--participant_label", "01", "02", "--nprocs", "2",
            "--derivatives=/a", "--condition", "age", "sex", "-w", "/tmp/w"]
    assert normalize_argv(argv) == [
        "ds", "out", "participant", "--participant-label", "01", "--participant-label", "02",
        "--nprocs", "2", "--derivatives=/a", "--condition", "age", "--condition", "sex",
        "-w", "/tmp/w"]


def test_check_image(tmp_path):
    good = write_image(tmp_path / "good.nii.gz")
    info = check_image(good, "T1w")
    assert info.shape == (24, 28, 24) and info.orientation == "RAS" and not info.oblique
    flat = tmp_path / "flat.nii.gz"
    nb.save(nb.Nifti1Image(np.ones((24, 24), np.float32), np.eye(4)), flat)
    with pytest.raises(ImageError, match="expected a 3D image"):
        check_image(flat, "T1w")
    singular = tmp_path / "singular.nii.gz"
    hdr = nb.Nifti1Header()
    hdr.set_data_shape((20, 20, 20))
    hdr.set_data_dtype(np.float32)
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]
    nb.save(nb.Nifti1Image(np.ones((20, 20, 20), np.float32), None, header=hdr), singular)
    with pytest.raises(ImageError, match="affine"):
        check_image(singular, "T1w")
    empty = tmp_path / "empty.nii.gz"
    nb.save(nb.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), empty)
    with pytest.raises(ImageError, match="no finite non-zero"):
        check_image(empty, "T1w")
    oblique = tmp_path / "oblique.nii.gz"
    c, s = np.cos(0.2), np.sin(0.2)
    aff = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nb.save(nb.Nifti1Image(np.ones((20, 20, 20), np.float32), aff), oblique)
    assert check_image(oblique, "T1w").oblique
