"""Row-block streaming over file-backed stores: the same rows as in memory, never mapped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_genbrain.arrays import iter_row_blocks, read_rows
from bids_genbrain.stats.glm import fit_glm, make_design


@pytest.fixture(params=["float32", "float16"])
def stored(request, tmp_path):
    rng = np.random.default_rng(0)
    values = rng.random((37, 53)).astype(request.param)
    disk = np.memmap(tmp_path / "data.bin", dtype=values.dtype, mode="w+", shape=values.shape)
    disk[:] = values
    disk.flush()
    del disk
    return values, np.memmap(tmp_path / "data.bin", dtype=values.dtype, mode="r",
                             shape=values.shape)


def _gather(images, rows, n_rows):
    wanted = np.arange(len(images)) if rows is None else np.asarray(rows)
    out = np.full((wanted.size, images.shape[1]), np.nan, dtype=np.float64)
    seen = np.zeros(wanted.size, dtype=int)
    for positions, block in iter_row_blocks(images, rows, n_rows=n_rows):
        out[positions] = block
        seen[positions] += 1
    assert (seen == 1).all()
    return out


@pytest.mark.parametrize("rows", [None, [5, 3, 3, 36, 0, 1, 2, 2, 20, 19], [36, 36, 36]])
@pytest.mark.parametrize("n_rows", [1, 4, 100])
def test_blocks_give_every_wanted_row_once(stored, rows, n_rows):
    values, disk = stored
    expected = values if rows is None else values[np.asarray(rows)]
    np.testing.assert_array_equal(_gather(disk, rows, n_rows), expected)
    np.testing.assert_array_equal(_gather(values, rows, n_rows), expected)


def test_read_rows_uses_pread_and_checks_bounds(stored, tmp_path):
    values, disk = stored
    np.testing.assert_array_equal(read_rows(disk, 3, 9), values[3:9])
    with pytest.raises(ValueError, match="rows must index"):
        next(iter_row_blocks(disk, [0, 37]))
    with open(tmp_path / "data.bin", "r+b") as fh:  # truncated under the reader's feet
        fh.truncate(values.dtype.itemsize * values.shape[1] * 10)
    with pytest.raises(OSError, match="truncated store"):
        read_rows(disk, 8, 12)


def test_glm_streams_a_float16_store_in_tiny_blocks(tmp_path):
    rng = np.random.default_rng(3)
    n, v = 60, 300
    table = pd.DataFrame({"group": np.repeat(["a", "b"], n // 2),
                          "age": rng.uniform(20, 80, n)})
    values = (0.4 + 0.05 * rng.standard_normal((n, v))).astype(np.float16)
    values[n // 2:, :50] += np.float16(0.03)
    disk = np.memmap(tmp_path / "d.f16", dtype=np.float16, mode="w+", shape=values.shape)
    disk[:] = values
    disk.flush()
    design = make_design(table, "group", ["age"])
    whole = fit_glm(values.astype(np.float64), design)
    streamed = fit_glm(np.memmap(tmp_path / "d.f16", dtype=np.float16, mode="r",
                                 shape=values.shape), design, memory_mb=3 * v * 2 / 2**20,
                       chunk_size=7)
    for stat in ("effect", "t", "d", "sigma"):
        np.testing.assert_allclose(getattr(streamed, stat), getattr(whole, stat), rtol=1e-9,
                                   atol=1e-12)
    boot = np.r_[np.arange(0, 30)[::-1], np.arange(30, 60)][rng.integers(0, 60, 60)]
    sub = fit_glm(disk, make_design(table.iloc[boot], "group", ["age"]), rows=boot,
                  memory_mb=0.001)
    direct = fit_glm(values[boot].astype(np.float64),
                     make_design(table.iloc[boot], "group", ["age"]))
    np.testing.assert_allclose(sub.t, direct.t, rtol=1e-9)


def test_glm_threads_give_identical_results(tmp_path):
    rng = np.random.default_rng(5)
    values = rng.random((40, 1000)).astype(np.float32)
    table = pd.DataFrame({"g": np.repeat(["a", "b"], 20), "age": rng.uniform(20, 80, 40)})
    design = make_design(table, "g", ["age"])
    one = fit_glm(values, design, chunk_size=64, memory_mb=0.05)
    two = fit_glm(values, design, chunk_size=64, memory_mb=0.05, n_jobs=3)
    for stat in ("effect", "t", "p", "d", "q", "sigma"):
        np.testing.assert_array_equal(getattr(one, stat), getattr(two, stat))
