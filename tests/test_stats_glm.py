"""Voxel-wise GLM: agreement with nilearn and statsmodels, chunking, design checks, statmaps."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests

from bids_genbrain.stats.glm import DesignError, fit_glm, make_design, write_statmaps
from bids_genbrain.templates import mni_grid

SHAPE = (5, 6, 7)  # 210 voxels, all in the mask


@pytest.fixture
def cohort() -> tuple[np.ndarray, pd.DataFrame]:
    """36 images of 210 voxels, two sites, a diagnosis effect on the first 60 voxels."""
    rng = np.random.default_rng(7)
    n = 36
    table = pd.DataFrame({
        "diagnosis": np.repeat(["control", "patient"], n // 2),
        "age": rng.uniform(20, 80, n).round(1),
        "sex": rng.choice(["F", "M"], n),
        "site": np.tile(["siteA", "siteB", "siteC"], n // 3),
    })
    images = rng.normal(0.5, 0.1, (n, int(np.prod(SHAPE))))
    images[table["diagnosis"] == "patient", :60] += 0.08
    images += 0.002 * table["age"].to_numpy()[:, None]
    return images.astype(np.float32), table


def test_design_columns_and_coding(cohort):
    _, table = cohort
    design = make_design(table, "diagnosis", ["age", "sex", "site"])
    assert design.columns == ["diagnosis[patient]", "age", "sex[M]", "site[siteB]",
                              "site[siteC]", "intercept"]
    assert design.kind == "two-group"
    assert design.levels == ("control", "patient")
    assert design.group_sizes == {"control": 18, "patient": 18}
    assert design.df == 36 - 6
    assert design.formula == "Y ~ C(diagnosis) + age + C(sex) + C(site) + 1"
    # one site only: the site confound contributes no column
    single = make_design(table.assign(site="siteA"), "diagnosis", ["age", "site"])
    assert single.columns == ["diagnosis[patient]", "age", "intercept"]
    # numeric continuous contrast, reversed levels
    assert make_design(table, "age", ["sex"]).kind == "continuous"
    flipped = make_design(table, "diagnosis", levels=("patient", "control"))
    assert flipped.columns[0] == "diagnosis[control]"


def test_t_matches_nilearn_second_level(cohort):
    from nilearn.glm.second_level import SecondLevelModel

    images, table = cohort
    design = make_design(table, "diagnosis", ["age", "sex", "site"])
    result = fit_glm(images, design)
    affine = np.eye(4)
    mask = np.ones(SHAPE, dtype=bool)
    imgs = [nb.Nifti1Image(row.reshape(SHAPE), affine) for row in images]
    model = SecondLevelModel(mask_img=nb.Nifti1Image(mask.astype(np.uint8), affine))
    model.fit(imgs, design_matrix=design.matrix)
    t_img = model.compute_contrast(design.contrast, second_level_stat_type="t",
                                   output_type="stat")
    t_nilearn = np.asarray(t_img.dataobj)[mask]
    np.testing.assert_allclose(result.t, t_nilearn, rtol=1e-5, atol=1e-5)
    # the planted effect is found where it was planted
    assert result.t[:60].mean() > 2.0 > abs(result.t[60:].mean())


@pytest.mark.parametrize("contrast", ["diagnosis", "age"])
def test_t_p_d_match_statsmodels(cohort, contrast):
    images, table = cohort
    confounds = ["sex", "site"] + (["age"] if contrast == "diagnosis" else [])
    design = make_design(table, contrast, confounds)
    result = fit_glm(images, design)
    x = design.matrix.to_numpy()
    t_sm, p_sm, d_sm = [], [], []
    for y in images.T.astype(np.float64):
        fit = sm.OLS(y, x).fit()
        test = fit.t_test(design.contrast)
        t_sm.append(float(test.tvalue.squeeze()))
        p_sm.append(float(test.pvalue))
        d_sm.append(fit.params[0] / np.sqrt(fit.scale) if design.kind == "two-group"
                    else 2 * t_sm[-1] / np.sqrt(fit.df_resid))
    np.testing.assert_allclose(result.t, t_sm, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.p, p_sm, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result.d, d_sm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.q, multipletests(result.p, method="fdr_bh")[1],
                               rtol=1e-12)


def test_cohens_d_without_confounds_is_classical(cohort):
    images, table = cohort
    result = fit_glm(images, make_design(table, "diagnosis"))
    group = (table["diagnosis"] == "patient").to_numpy()
    a, b = images[group].astype(float), images[~group].astype(float)
    pooled = np.sqrt(((len(a) - 1) * a.var(0, ddof=1) + (len(b) - 1) * b.var(0, ddof=1))
                     / (len(a) + len(b) - 2))
    np.testing.assert_allclose(result.d, (a.mean(0) - b.mean(0)) / pooled, rtol=1e-6)


def test_chunked_memmap_equals_in_memory(cohort, tmp_path):
    images, table = cohort
    store = np.lib.format.open_memmap(tmp_path / "cohort.npy", mode="w+",
                                      dtype=np.float32, shape=images.shape)
    store[:] = images
    store.flush()
    design = make_design(table, "diagnosis", ["age", "sex", "site"])
    whole = fit_glm(images, design, chunk_size=10_000)
    chunked = fit_glm(np.load(tmp_path / "cohort.npy", mmap_mode="r"), design, chunk_size=7)
    for stat in ("effect", "t", "p", "d", "q", "sigma"):
        # equal up to BLAS summation order
        np.testing.assert_allclose(getattr(whole, stat), getattr(chunked, stat), rtol=1e-10)
    # rows= selects (and repeats) images without copying the array
    rows = np.r_[0:18, 18:36][::-1]
    sub = fit_glm(images, make_design(table.iloc[rows], "diagnosis"), rows=rows, chunk_size=5)
    direct = fit_glm(images[rows], make_design(table.iloc[rows], "diagnosis"))
    np.testing.assert_allclose(sub.t, direct.t, rtol=1e-12)


def test_constant_voxels_give_zero_t(cohort):
    images, table = cohort
    images = images.copy()
    images[:, 0] = 0.0
    images[:, 1:3] = 0.7  # constant but not 0: no rounding-noise t
    result = fit_glm(images, make_design(table, "diagnosis", ["age"]))
    assert result.n_constant == 3
    assert np.all(result.t[:3] == 0) and np.all(result.p[:3] == 1) and np.all(result.d[:3] == 0)
    assert np.isfinite(result.q).all()


@pytest.mark.parametrize(
    ("change", "contrast", "confounds", "message"),
    [
        (lambda t: t.assign(age2=2 * t["age"] + 1), "diagnosis", ["age", "age2"],
         "rank-deficient design: regressor 'age2'"),
        (lambda t: t.assign(sex=np.where(t["diagnosis"] == "patient", "M", "F")), "diagnosis",
         ["sex"], r"regressor 'sex\[M\]' is a linear combination of \['diagnosis\[patient\]'\]"),
        (lambda t: t.assign(diagnosis="patient"), "diagnosis", [], "is constant"),
        (lambda t: t.assign(age=t["age"].where(t.index != 4)), "diagnosis", ["age"],
         r"missing values \(NaN\).*'age': \[4\]"),
        (lambda t: t, "site", [], "has 3 levels"),
        (lambda t: t, "diagnosis", ["bmi"], r"columns \['bmi'\] not in the table"),
        (lambda t: t.iloc[[0, 1, 18, 19]], "diagnosis", ["age", "site"],
         "4 images for 4 regressors: need at least one residual"),
        (lambda t: t, "diagnosis", [], None),
    ],
)
def test_bad_designs_raise_clear_errors(cohort, change, contrast, confounds, message):
    _, table = cohort
    if message is None:  # the unchanged table is valid: the checks are not over-eager
        assert make_design(change(table), contrast, confounds).n == 36
        return
    with pytest.raises(DesignError, match=message):
        make_design(change(table), contrast, confounds)


def test_bad_images_raise(cohort):
    images, table = cohort
    design = make_design(table, "diagnosis")
    with pytest.raises(ValueError, match="35 images but the design has 36 rows"):
        fit_glm(images[:35], design)
    broken = images.copy()
    broken[3, 11] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(voxels \[11\]"):
        fit_glm(broken, design, chunk_size=4)
    with pytest.raises(ValueError, match="shape"):
        fit_glm(images[0], design)


def test_write_statmaps(cohort, tmp_path):
    images, table = cohort
    result = fit_glm(images, make_design(table, "diagnosis", ["age", "sex", "site"]))
    shape, affine = mni_grid(4.0)
    mask = np.zeros(shape, dtype=bool)
    mask[20:25, 20:26, 20:27] = True
    paths = write_statmaps(result, tmp_path / "bwas", desc="synthetic", resolution=4.0,
                           mask=mask, metadata={"ModelSHA256": "abc"})
    assert sorted(paths) == ["d", "p", "q", "t"]
    name = paths["t"].name
    assert name == ("space-MNI152NLin6Asym_res-4_contrast-diagnosis_desc-synthetic_stat-t_"
                    "statmap.nii.gz")
    img = nb.load(paths["d"])
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(np.asarray(img.dataobj)[mask], result.d, rtol=1e-6)
    assert np.asarray(img.dataobj)[~mask].max() == 0
    sidecar = json.loads(paths["q"].with_name(name.replace("stat-t", "stat-q")
                                              .replace(".nii.gz", ".json")).read_text())
    assert sidecar["N"] == 36 and sidecar["DegreesOfFreedom"] == 30
    assert sidecar["DesignColumns"][0] == "diagnosis[patient]"
    assert sidecar["Formula"] == "Y ~ C(diagnosis) + age + C(sex) + C(site) + 1"
    assert sidecar["GroupSizes"] == {"control": 18, "patient": 18}
    assert sidecar["ModelSHA256"] == "abc"
    with pytest.raises(ValueError, match="result has 210 voxels, mask has"):
        write_statmaps(result, tmp_path, resolution=4.0, mask=mask & (np.arange(mask.size)
                                                                     .reshape(shape) % 2 == 0))
