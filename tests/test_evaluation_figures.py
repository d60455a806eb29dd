"""Figures of the evaluate report: intervals that round past their mean still plot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_genbrain.reports.evaluation_figures import _error_bars, plot_similarity_curve


def _similarity_table() -> pd.DataFrame:
    # one synthetic set: every draw gives the same cosine, and the percentile bounds differ
    # from the mean in the last bit (as in the bench_augment run that failed on this)
    value = -0.07339510448650524
    return pd.DataFrame({
        "effect": ["age"] * 3, "cohort": ["real", "synthetic", "synthetic"],
        "average": [np.nan, 1.0, 2.0], "n": [30, 30, 30],
        "cosine_t": [0.566, value, 0.2], "ci_low": [0.28, value + 3e-17, 0.1],
        "ci_high": [0.75, value + 3e-17, 0.3]})


def test_error_bars_clip_rounding_and_keep_widths():
    table = _similarity_table()
    bars = _error_bars(table["cosine_t"], table["ci_low"], table["ci_high"])
    assert bars.shape == (2, 3)
    assert (bars >= 0).all()
    np.testing.assert_allclose(bars[:, 2], [0.1, 0.1])
    np.testing.assert_allclose(bars[:, 0], [0.286, 0.184])


def test_similarity_curve_plots_a_constant_synthetic_interval(tmp_path):
    out = plot_similarity_curve(_similarity_table(), tmp_path / "curve.svg")
    assert out.is_file() and "<svg" in out.read_text()
