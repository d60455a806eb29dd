"""participants.tsv typing as public datasets write it: top-coded and ranged ages, units,
decimal commas, Neurobagel annotations; one-line errors naming file, column, line, value."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _model_factory import RES, write_cohort

from bids_genbrain.bids import read_participants_table
from bids_genbrain.cohort import build_cohort
from bids_genbrain.covariates import (display_table, read_number, type_covariates,
                                     write_covariates_table)
from bids_genbrain.errors import InputError


def _table(tmp_path, column: str, values: list[str], sidecar: dict | None = None):
    rows = "".join(f"sub-{i + 1:02d}\t{v}\n" for i, v in enumerate(values))
    (tmp_path / "participants.tsv").write_text(f"participant_id\t{column}\n{rows}")
    if sidecar is not None:
        (tmp_path / "participants.json").write_text(json.dumps({column: sidecar}))
    return read_participants_table(tmp_path)


@pytest.mark.parametrize("text, value, notes", [
    ("25", 25.0, set()),
    ("-3.5", -3.5, set()),
    ("1e3", 1000.0, set()),
    ("26,9", 26.9, {"decimal comma"}),              # ds000244 writes ages so
    ("89+", 89.0, {"top-coded"}),                   # the BIDS recommendation
    ("> 89", 89.0, {"top-coded"}),
    ("≥90", 90.0, {"top-coded"}),
    ("90 or older", 90.0, {"top-coded"}),
    ("89+ years", 89.0, {"top-coded", "unit"}),
    ("<18", 18.0, {"bottom-coded"}),
    ("26-30", 28.0, {"range"}),                     # HCP's open-access age bins
    ("26 – 30", 28.0, {"range"}),
    ("26 to 30 years", 28.0, {"range", "unit"}),
    ("[20-30)", 25.0, {"range"}),
    ("26,5-30,5", 28.5, {"range", "decimal comma"}),
    ("25 years", 25.0, {"unit"}),
    ("25y", 25.0, {"unit"}),
    ("25 y.o.", 25.0, {"unit"}),
    ("70 kg", 70.0, {"unit"}),
    ("45%", 45.0, {"unit"}),
    ("P20Y6M", 20.5, {"duration"}),                 # ISO 8601 (Neurobagel nb:FromISO8601)
    ("20y 6m", 20.5, {"duration"}),
    ("2 years 3 months", 2.25, {"duration"}),
    ("1,234.5", 1234.5, {"thousands separator"}),
    ("1.234,5", 1234.5, {"thousands separator", "decimal comma"}),
    ("1,234,567", 1234567.0, {"thousands separator"}),
])
def test_read_number(text, value, notes):
    reading = read_number(text)
    assert reading.value == pytest.approx(value) and reading.notes == notes
    flag = ("censored" if notes & {"top-coded", "bottom-coded"}
            else "range" if "range" in notes else None)
    assert reading.flag == flag


@pytest.mark.parametrize("text", ["about 30", "~30", "thirty", "30-20", "2020-01-05", "1.2.3",
                                  "1,234"])
def test_read_number_refuses(text):
    with pytest.raises(ValueError):
        read_number(text)


def test_age_column_typed_flagged_and_described(tmp_path):
    table = _table(tmp_path, "age", ["89+", "26-30", "26,9", "31 years", "6 months", "n/a",
                                     "NaN", ""])
    typed = type_covariates(table, ["age"])
    age = typed.table["age"]
    np.testing.assert_allclose(age.iloc[:5], [89.0, 28.0, 26.9, 31.0, 0.5])
    assert age.iloc[5:].isna().all()
    assert list(typed.table["age_flag"].iloc[:3]) == ["censored", "range", None]
    note = typed.columns["age"].describe()
    for fragment in ("1 top-coded ('89+')", "flagged censored", "1 range(s) ('26-30')",
                     "midpoint", "decimal comma", "'6 months'): converted to years"):
        assert fragment in note, note
    flagged = typed.flagged()
    assert flagged[["participant_id", "written", "used", "flag"]].values.tolist() == [
        ["sub-01", "89+", 89.0, "censored"], ["sub-02", "26-30", 28.0, "range"]]
    summary = typed.summary().set_index("column")
    assert summary.loc["age", "values"] == 5 and summary.loc["age", "missing"] == 3
    assert summary.loc["age", "unit"] == "years"


def test_sidecar_units_and_neurobagel_annotations(tmp_path):
    months = _table(tmp_path, "age", ["18", "30"], {"Units": "months"})
    typed = type_covariates(months, ["age"])
    assert typed.table["age"].tolist() == [1.5, 2.5]
    assert "Units months: converted to years" in typed.columns["age"].describe()
    euro = _table(tmp_path, "age", ["1,500", "-999"], {"Annotations": {
        "Format": {"TermURL": "nb:FromEuro"}, "MissingValues": ["-999"]}})
    typed = type_covariates(euro, ["age"])
    assert typed.table["age"].iloc[0] == 1.5 and np.isnan(typed.table["age"].iloc[1])
    # the column's own decimal commas settle 1,234 too
    column = _table(tmp_path, "score", ["1,234", "2,5"])
    assert type_covariates(column, ["score"]).table["score"].tolist() == [1.234, 2.5]
    weight = _table(tmp_path, "weight", ["70", "154 lb"], {"Units": "kg"})
    with pytest.raises(InputError, match=r"line 3 \(sub-02\): value '154 lb' has the unit 'lb';"
                                         r" the column needs 'kg'"):
        type_covariates(weight, ["weight"])


@pytest.mark.parametrize("column, values, fragments", [
    ("age", ["30", "about 30"], ["column 'age', line 3 (sub-02)", "value 'about 30'",
                                 "89+", "26-30"]),
    ("age", ["30", "1,234"], ["value '1,234' is ambiguous", "1.234 or 1234"]),
    ("age", ["30", "70 kg"], ["unit 'kg'", "time unit"]),
    ("age", ["30", "-999"], ["negative", "MissingValues"]),
    ("score", ["1", "2", "3", "2O"], ["column 'score', line 5 (sub-04)", "value '2O'",
                                      "declare Levels"]),
    ("sex", ["M", "X"], ["column 'sex', line 3 (sub-02)", "sex value 'X'", "Levels"]),
])
def test_unreadable_values_are_one_line_errors(tmp_path, column, values, fragments):
    table = _table(tmp_path, column, values)
    with pytest.raises(InputError) as info:
        type_covariates(table, [column])
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "participants.tsv"))
    for fragment in fragments:
        assert fragment in message, message


def test_kinds_of_columns(tmp_path):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tSex\tsite\tgroup\thandedness\tscanner\n"
        "sub-01\tmale\t1\t1\tR\t3T\nsub-02\tO\t2\t2\tL\t1.5T\nsub-03\t2\t1\t1\t??\t3T\n")
    (tmp_path / "participants.json").write_text(json.dumps({
        "Sex": {"Levels": {"2": "female", "1": "male"}}, "group": {"Levels": {"1": "patient"}}}))
    typed = type_covariates(read_participants_table(tmp_path))
    table = typed.table
    assert table["sex"].tolist()[::2] == ["M", "F"] and pd.isna(table["sex"].iloc[1])
    assert "1 'other' ('O')" in typed.columns["sex"].describe()
    for column in ("site", "group", "handedness"):
        assert isinstance(table[column].dtype, pd.CategoricalDtype), column
    assert "not among participants.json Levels ('2')" in typed.columns["group"].describe()
    assert table["scanner"].tolist() == [3.0, 1.5, 3.0]
    assert typed.table.attrs["columns"]["sex"]["Levels"]["1"] == "male"
    # only the requested columns are typed: an unreadable one elsewhere does not matter
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tiq\nsub-01\t30\t100\nsub-02\t40\tnot tested\n"
        "sub-03\t50\t1O5\n")
    assert type_covariates(read_participants_table(tmp_path), ["age"]).table["age"].tolist() \
        == [30.0, 40.0, 50.0]


def test_display_never_fails_and_keeps_what_was_written(tmp_path):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\tiq\nsub-01\t89+\tmale\t100\nsub-02\t\"26,9\"\tX\t1O5\n"
        "sub-03\tn/a\tF\t110\n")
    shown = display_table(read_participants_table(tmp_path))
    assert shown.loc["01", "age"] == "89+ (read as 89 years, censored)"
    assert shown.loc["02", "age"] == "26,9 (read as 26.9 years)"
    assert shown.loc["03", "age"] == "n/a"
    # a column that does not type is shown as written, whole
    assert shown["sex"].tolist() == ["male", "X", "F"]
    assert shown["iq"].tolist() == ["100", "1O5", "110"]
    (tmp_path / "participants.tsv").write_text("participant_id\tsex\nsub-01\tmale\n")
    assert display_table(read_participants_table(tmp_path)).loc["01", "sex"] == "male (M)"


def test_cohort_table_carries_the_flags(tmp_path):
    """The cohort stage: typed covariates with flags -> the store's table.tsv."""
    write_cohort(tmp_path / "deriv", [30.0, 50.0, 70.0])
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\nsub-01\t30\tM\nsub-02\t46-54\tF\nsub-03\t70+\tM\n")
    typed = type_covariates(read_participants_table(tmp_path), ["age", "sex"])
    store = build_cohort([tmp_path / "deriv"], tmp_path / "store", participants=typed.table,
                         conditions=["age", "sex"], resolution=RES, progress=False)
    assert store.table["age"].tolist() == [30.0, 50.0, 70.0]
    assert store.table["age_flag"].fillna("").tolist() == ["", "range", "censored"]
    on_disk = pd.read_csv(store.path / "table.tsv", sep="\t")
    assert on_disk["age_flag"].fillna("").tolist() == ["", "range", "censored"]


def test_covariates_table_keeps_what_was_written(tmp_path):
    """group/covariates.tsv: typed values, flags and the written value, described in JSON."""
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\tgroup\nsub-01\t89+\tM\tAD\nsub-02\t26-30\tF\tCN\n"
        "sub-03\t40\tF\tCN\nsub-04\tn/a\tM\tAD\n")
    (tmp_path / "participants.json").write_text(json.dumps(
        {"age": {"Description": "age at scan"}}))
    typed = type_covariates(read_participants_table(tmp_path), ["age", "sex", "group"])
    path = write_covariates_table(typed, tmp_path / "group" / "covariates.tsv",
                                  ["sub-01", "sub-02", "sub-04"])
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    assert table.columns.tolist() == ["participant_id", "age", "age_flag", "age_written", "sex",
                                      "group"]
    assert table["participant_id"].tolist() == ["sub-01", "sub-02", "sub-04"]
    assert [float(v) if v != "n/a" else v for v in table["age"]] == [89.0, 28.0, "n/a"]
    assert table["age_flag"].tolist() == ["censored", "range", "n/a"]
    assert table["age_written"].tolist() == ["89+", "26-30", "n/a"]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert set(sidecar) == set(table.columns) - {"participant_id"}
    assert sidecar["age"]["Description"] == "age at scan" and sidecar["age"]["Units"] == "years"
    assert "1 top-coded ('89+')" in sidecar["age"]["Typing"]["WhatWasDone"]
    assert set(sidecar["age_flag"]["Levels"]) == {"censored", "range"}
