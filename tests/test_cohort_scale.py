"""Cohort store at scale: parallel readers give the same store, float16 storage, atomic
folder replacement, leftovers of killed builds cleaned, the disk reserved up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _model_factory import RES, write_cohort

from bids_genbrain.cohort import CohortStore, build_cohort
from bids_genbrain.stats.glm import fit_glm, make_design


@pytest.fixture(scope="module")
def deriv(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    ages = list(np.linspace(20, 85, 40))
    table = write_cohort(root / "deriv", ages, modality="T1w")
    return root, table


def _build(root, table, out, **kw):
    return build_cohort([root / "deriv"], out, modalities=["T1w"], participants=table,
                        conditions=["age", "sex"], resolution=RES, progress=False, **kw)


def test_parallel_readers_build_the_same_store(deriv, tmp_path):
    root, table = deriv
    serial = _build(root, table, tmp_path / "serial")
    parallel = _build(root, table, tmp_path / "parallel", n_jobs=2)
    assert serial.meta["data_sha256"] == parallel.meta["data_sha256"]
    assert serial.normalisation == parallel.normalisation
    assert oct(os.stat(parallel.path).st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_float16_store_half_the_size_same_statistics(deriv, tmp_path):
    root, table = deriv
    f32 = _build(root, table, tmp_path / "f32")
    f16 = _build(root, table, tmp_path / "f16", dtype="float16")
    assert f16.data.dtype == np.float16 and (f16.path / "data.f16").is_file()
    assert (f16.path / "data.f16").stat().st_size * 2 == (f32.path / "data.f32").stat().st_size
    assert json.loads((f16.path / "cohort.json").read_text())["dtype"] == "float16"
    np.testing.assert_allclose(f16.read([0, 5]), f32.read([0, 5]), atol=5e-4)
    design = make_design(f32.table, "age", ["sex"])
    t32, t16 = fit_glm(f32.data, design).t, fit_glm(f16.data, design).t
    assert np.corrcoef(t32, t16)[0, 1] > 0.999
    assert not list(tmp_path.glob(".*"))  # no temporary folders left


def test_rebuild_replaces_whole_and_cleans_killed_builds(deriv, tmp_path):
    root, table = deriv
    out = tmp_path / "store"
    _build(root, table, out)
    # a build killed by SIGKILL leaves its temporary folder (named with its pid) behind
    code = ("import sys\nfrom bids_genbrain.utils import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n"
            "    (tmp / 'half').write_bytes(b'x' * 100)\n"
            "    import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)])
    assert proc.returncode == -9
    assert len(list(tmp_path.glob(".store.*"))) == 1
    assert CohortStore(out).data.dtype == np.float32  # the old store is untouched
    rebuilt = _build(root, table, out, dtype="float16")
    assert rebuilt.data.dtype == np.float16 and not (out / "data.f32").exists()
    assert not list(tmp_path.glob(".store.*"))


def test_store_bigger_than_the_disk_fails_before_reading(deriv, tmp_path, monkeypatch):
    import errno

    from bids_genbrain import cohort

    root, table = deriv

    def no_space(path, nbytes):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    read = []
    monkeypatch.setattr(cohort, "allocate", no_space)
    monkeypatch.setattr(cohort, "_read_images", lambda *a, **k: read.append(1))
    with pytest.raises(OSError, match="No space"):
        _build(root, table, tmp_path / "store")
    assert not read and not list(tmp_path.iterdir())
