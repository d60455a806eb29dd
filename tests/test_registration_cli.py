"""``--registration {fast,accurate}`` through the CLI (accuracy: test_workflows_preproc, slow)."""

from __future__ import annotations

from _bids_factory import make_dataset
from test_cli_bids_app import assert_one_line_error, run_app


def test_unknown_registration_preset_is_a_one_line_error(tmp_path):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), modalities=("T1w",))
    proc = run_app(bids, tmp_path / "out", "participant", "--registration", "precise")
    assert_one_line_error(proc, "--registration", "'precise'", "fast", "accurate")
    assert not (tmp_path / "out").exists()


def test_registration_preset_is_recorded_in_the_run_log(tmp_path):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), modalities=("T1w",))
    out = tmp_path / "out"
    run_app(bids, out, "participant", "--registration", "accurate", "--check-only",
            check_code=0)
    logs = [p.read_text() for p in (out / "logs").glob("participant-*.json")]
    assert logs and all('"registration": "accurate"' in text for text in logs), logs
