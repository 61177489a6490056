"""The random-SCM generator, the augmentation evaluation (a tiny grid), and the ``admgda`` estimator."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from bayes_cmma.augmentation.admgda import _dag, _trial_frame, admgda_estimate, admgda_fit
from bayes_cmma.augmentation.augment import WEIGHT, Categorical, augment
from bayes_cmma.augmentation.evaluate import EvalSettings, evaluate_once
from bayes_cmma.augmentation.scm import SCMSettings, random_scm
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import metric_design, read_trials
from bayes_cmma.inputs.summarizer import summarize_units
from bayes_cmma.studies.simulate import SimulationSettings, simulate_units
from bayes_cmma.studies.study import Setting, Study, replicate


def test_random_scm_graph_density_and_scales():
    rng = np.random.default_rng(0)
    edges = [len(random_scm(SCMSettings(n=50, d=10, degree=3.0), rng).dag.edges) for _ in range(200)]
    # E[edges] = p * d(d-1)/2 with p = degree / (d - 1): 15; sd of the mean ~ 0.23
    assert abs(np.mean(edges) - 15) < 1.0
    s = random_scm(SCMSettings(n=400, d=6, degree=0.0), rng)
    assert s.dag.edges == [] and set(s.mechanisms.values()) == {"root"}
    s = random_scm(SCMSettings(n=2000, d=5, degree=4.0, noise=0.5, mechanism="linear"), rng)
    assert all(k == "linear" for v, k in s.mechanisms.items() if v != "x0")
    # non-root variables: unit-variance mechanism plus noise of sd 0.5 -> variance 1.25
    assert s.data["x4"].var() == pytest.approx(1.25, rel=0.1)
    s = random_scm(SCMSettings(n=200, d=4, outliers=0.1), rng)
    assert len(s.outlier_rows) == 20
    assert (s.data.abs().max() > 4).any()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"d": 1}, "d >= 2"), ({"degree": 9, "d": 5}, r"degree must be in \[0, d - 1\]"),
    ({"outliers": 1.0}, "outliers in"), ({"mechanism": "tree"}, "mechanism 'tree'"),
])
def test_bad_scm_settings(kwargs, message):
    with pytest.raises(DataError, match=message):
        SCMSettings(**kwargs)


def test_evaluation_runs_on_a_tiny_grid():
    ev = EvalSettings(theta=1e-3, n_estimators=(5, 20), reg_lambda=(1.0, 10.0), sample_factor=3)
    rows = pd.DataFrame(evaluate_once(SCMSettings(n=80, d=4, degree=2.0), ev, np.random.SeedSequence(5)))
    assert rows["target"].tolist() == ["x0", "x1", "x2", "x3"]
    assert (rows["n_train"] == 56).all() and (rows["n_smp"] == 168).all()
    for name in ("orig", "smp"):
        assert rows[f"r2_{name}"].notna().all() and rows[f"n_estimators_{name}"].isin([5, 20]).all()
    # threshold augmentation either ran or says why not
    assert (rows["n_thr"] > 0).all() or (rows["error_thr"] != "").all()
    again = pd.DataFrame(evaluate_once(SCMSettings(n=80, d=4, degree=2.0), ev, np.random.SeedSequence(5)))
    cols = [c for c in rows if not c.startswith("time_")]
    pd.testing.assert_frame_equal(rows[cols], again[cols])


def _design(k=12, degree=1, seed=1):
    sim = simulate_units(SimulationSettings(n_trials=k, n_per=200), np.random.default_rng(seed))
    trials, cov = summarize_units(sim.units, kpi="y", metrics=["m"], degree=degree)
    return metric_design(read_trials(trials, cov), "y", "m", degree, warn_filled=False)


def test_admgda_is_weighted_least_squares_on_the_augmented_table():
    design = _design(k=15, degree=2)
    frame, powers = _trial_frame(design)
    assert list(_dag(powers).parents["kpi"]) == ["team", "m1", "m2"]
    aug = augment(frame, _dag(powers), theta=1e-2, kernels={"team": Categorical()})
    X = pd.get_dummies(aug["team"], drop_first=True, dtype=float).join(aug[powers])
    ref = sm.WLS(aug["kpi"], sm.add_constant(X), weights=aug[WEIGHT]).fit()
    beta, rows = admgda_fit(design)
    assert rows == len(aug)
    np.testing.assert_allclose(beta, ref.params[powers].to_numpy(), rtol=1e-8)


def test_admgda_bootstrap_interval_and_reproducibility():
    design = _design()
    a = admgda_estimate(design, np.random.default_rng(0), n_boot=30)
    b = admgda_estimate(design, np.random.default_rng(0), n_boot=30)
    np.testing.assert_array_equal(a.lower, b.lower)
    assert a.n_boot + a.failed_boot == 30 and a.lower[0] < a.upper[0] and a.std_error[0] > 0
    with pytest.raises(DataError, match="no augmented row survived"):
        admgda_estimate(design, np.random.default_rng(0), theta=0.9)


def test_admgda_in_the_study_runner():
    st = Study("few", (Setting("K=12", SimulationSettings(n_trials=12, n_per=100)),),
               estimators=("cmma_ols", "admgda"), degrees=(1, 2), sims=1)
    df = pd.DataFrame(replicate(st, 0, 0))
    adm = df[df["estimator"] == "admgda"]
    assert adm[["degree", "power"]].values.tolist() == [[1, 1], [2, 1], [2, 2]]
    assert adm["estimate"].notna().all() and (adm["lower"] < adm["upper"]).all()
    assert adm["selected_degree"].nunique() == 1
    # adding admgda leaves the other estimators' rows (and seeds) as they were
    alone = pd.DataFrame(replicate(Study("few", st.settings, estimators=("cmma_ols",), degrees=(1, 2), sims=1), 0, 0))
    cols = ["estimate", "lower", "upper", "seed"]
    pd.testing.assert_frame_equal(df[df["estimator"] == "cmma_ols"][cols].reset_index(drop=True), alone[cols])


def test_distribution_measures_closed_forms():
    from bayes_cmma.augmentation.evaluate import _gauss_kl, distribution_measures

    rng = np.random.default_rng(0)
    a = pd.DataFrame(rng.normal(size=(300, 3)), columns=["x", "y", "z"])
    same = distribution_measures(a, np.ones(300), a)
    assert same["wasserstein"] == pytest.approx(0.0, abs=1e-12) and same["kl"] == pytest.approx(0.0, abs=1e-10)
    # a shift by 1 in one variable: W = 1/3 averaged over three variables; KL = 0.5 * shift' S^-1 shift
    shifted = a.assign(x=a["x"] + 1.0)
    m = distribution_measures(shifted, np.ones(300), a)
    s_inv = np.linalg.inv(np.cov(a.to_numpy(), rowvar=False))
    assert m["wasserstein"] == pytest.approx(1 / 3) and m["kl"] == pytest.approx(0.5 * s_inv[0, 0])
    assert _gauss_kl(a.to_numpy(), a.to_numpy()[:3], np.ones(3)) == np.inf
