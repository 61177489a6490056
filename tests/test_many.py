"""fit_many: several metrics x several models, grouped by compiled shape, optionally in worker processes."""

import re
import warnings

import numpy as np
import pytest

import bayes_cmma as bc
from bayes_cmma.errors import AssumptionWarning, BayesCMMAError, ConvergenceWarning, DataError

SHORT = dict(draws=60, tune=60, chains=2)


@pytest.fixture(scope="module")
def example():
    return bc.load_example()


def _recorded(fn):
    """Run fn, returning its result and the toolkit's own warnings it raised (in this process)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, sorted({(w.category.__name__, str(w.message)) for w in caught
                        if issubclass(w.category, (ConvergenceWarning, AssumptionWarning))})


@pytest.mark.mcmc
def test_parallel_grid_equals_sequential_fits(example):
    """Two worker processes give the same draws (and the same warnings) as fit() model by model."""
    metrics = ["ndcg", "mrr"]
    grid, grid_warnings = _recorded(lambda: bc.fit_many(example.trials, "gmv", metrics, models=[1, 2], seed=5,
                                                        workers=2, **SHORT))
    seq_warnings = []
    for degree, name in [(1, "linear"), (2, "quadratic")]:
        res, w = _recorded(lambda d=degree: bc.fit(example.trials, "gmv", metrics, model=d, seed=5, **SHORT))
        seq_warnings += w
        for m in metrics:
            # (the same team-effects decision first: if this fails, the two processes' centred fits differed in
            # their divergent transitions, the first visible effect of any numerical difference)
            assert grid[m, name].posterior.attrs["team_effects"] == res[m].posterior.attrs["team_effects"], (m, name)
            np.testing.assert_array_equal(grid[m, name].beta.values, res[m].beta.values)
            assert grid[m, name].posterior.attrs["seed"] == res[m].posterior.attrs["seed"]
    assert seq_warnings, "60 draws per chain should give ESS warnings; the check below needs some"
    # the workers' warnings reach the caller, labelled with their model
    assert all(re.match(r"model '(linear|quadratic)', ", m) for _, m in grid_warnings)
    assert sorted({(c, re.sub(r"^model '\w+', ", "", m)) for c, m in grid_warnings}) == sorted(set(seq_warnings))
    assert grid.metrics == metrics and grid.models == ["linear", "quadratic"]
    assert list(grid.fits) == [("ndcg", "linear"), ("mrr", "linear"), ("ndcg", "quadratic"), ("mrr", "quadratic")]
    t = grid.timings()
    # one compile per shape: in each group the first fit compiles, the second reuses it; one worker per group
    for _, g in t.groupby("model"):
        assert (g["compile_s"] > 0).sum() == 1 and g["worker"].nunique() == 1
    assert t["worker"].nunique() == 2
    assert grid.result("quadratic")["mrr"] is grid["mrr", "quadratic"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(models=[2, "quadratic"]), "model names repeat"),
        (dict(models=[]), "no model given"),
        (dict(workers=0), "workers must be at least 1"),
        (dict(metrics=[]), "no metric given"),
        (dict(metrics=["ndcg", "ndcg"]), "metric names repeat"),
    ],
)
def test_bad_requests_fail_before_any_fit(example, kwargs, message):
    args = dict(metrics=["ndcg"], models=[1, 2]) | kwargs
    with pytest.raises(BayesCMMAError, match=message):
        bc.fit_many(example.trials, "gmv", args.pop("metrics"), **args)


def test_unknown_metric_names_it(example):
    with pytest.raises(DataError, match="nope"):
        bc.fit_many(example.trials, "gmv", ["ndcg", "nope"], models=[1])


def test_grid_lookup_errors(example):
    grid = bc.FitGrid(fits={}, kpi="gmv", order=(["ndcg"], ["linear"]))
    with pytest.raises(BayesCMMAError, match="no fit for"):
        grid["ndcg", "cubic"]
    with pytest.raises(BayesCMMAError, match="model 'cubic' was not fitted"):
        grid.result("cubic")
