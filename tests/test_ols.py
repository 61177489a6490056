"""The paper's Algorithm 1 against statsmodels' OLS and F tests."""

import numpy as np
import pytest
import statsmodels.api as sm

import bayes_cmma as bc
from bayes_cmma.baselines.ols import ols_arrays
from bayes_cmma.inputs.data import metric_design


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_ols_matches_statsmodels(example, degree):
    res = bc.cmma_ols(example.trials, "gmv", "ndcg", degree)
    design = metric_design(example.trials, "gmv", "ndcg", degree, warn_filled=False)
    X, _names, y = ols_arrays(design.z[:, 0], design.z[:, 1:], design.team_idx, design.teams, "ndcg")
    ref = sm.OLS(y, X).fit()
    np.testing.assert_allclose(res.params.to_numpy(), ref.params, rtol=1e-8)
    np.testing.assert_allclose(res.std_errors.to_numpy(), ref.bse, rtol=1e-8)
    assert res.df_resid == ref.df_resid
    tests = res.wald_tests()
    k = X.shape[1]
    for q, row in zip(range(1, degree + 1), tests.itertuples(), strict=True):
        R = np.zeros((q, k))
        R[np.arange(q), np.arange(k - q, k)] = 1
        f = ref.f_test(R)
        assert row.F == pytest.approx(float(np.squeeze(f.fvalue)), rel=1e-8)
        assert row.p_value == pytest.approx(float(f.pvalue), rel=1e-6, abs=1e-300)
    assert list(tests["restrictions"]) == list(range(1, degree + 1))


def test_ols_matches_numpy_lstsq_and_design_is_algorithm_1(example):
    res = bc.cmma_ols(example.trials, "gmv", "mrr", 2)
    design = metric_design(example.trials, "gmv", "mrr", 2, warn_filled=False)
    n_teams = len(design.teams)
    X = np.column_stack([np.ones(design.n_trials)]
                        + [(design.team_idx == g).astype(float) for g in range(1, n_teams)]
                        + [design.z[:, 1], design.z[:, 2]])
    coef = np.linalg.lstsq(X, design.z[:, 0], rcond=None)[0]
    np.testing.assert_allclose(res.params.to_numpy(), coef, rtol=1e-8)
    assert list(res.params.index[-2:]) == ["mrr", "mrr^2"]
    np.testing.assert_allclose(res.beta.to_numpy(), coef[-2:], rtol=1e-8)
