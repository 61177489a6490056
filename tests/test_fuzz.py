"""Bad input, fuzzed (hypothesis): the trial-table reader, the model design and the summarizer.

Property: any table either loads into data whose model log-density is finite, or raises the
toolkit's own DataError with a message naming a column, trial, quantity or team. Never another
exception, never a NaN that would reach the sampler.

Tables are built valid first and then damaged, so that the search reaches the deep checks (model
design, covariance, positive definiteness) rather than stopping at the first missing column.
Runs derandomised (a fixed example sequence) so CI is reproducible.
"""

import re
import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import bayes_cmma as bc
from bayes_cmma.errors import AssumptionWarning, DataError
from bayes_cmma.fitting.model import standardise, trial_loglik_numpy
from bayes_cmma.inputs.data import metric_design

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: A DataError must name what is wrong: one of these words, or a quoted label.
NAMES = re.compile(r"trial|quantity|column|team|std_error|estimate|covariance|metric|KPI|unit|arm|'", re.I)

labels = st.one_of(
    st.text(min_size=0, max_size=6),  # unicode, empty, whitespace
    st.sampled_from(["t1", "t2", "ü", "🙂", " ", "", "nan", "None", "0", "007"]),
)
magnitude = st.sampled_from([1e-12, 1e-6, 1e-3, 1.0, 1e3, 1e6, 1e12])


def _check_error(exc: DataError) -> None:
    assert NAMES.search(str(exc)), f"error names nothing: {exc}"


def _assert_model_finite(data, kpi: str, metric: str, degree: int) -> str:
    """Design, standardise and evaluate the marginal log-density at a plain point: finite, or DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AssumptionWarning)
            design = metric_design(data, kpi, metric, degree)
    except DataError as exc:
        _check_error(exc)
        return "design error"
    std = standardise(design)
    assert np.isfinite(std.z).all() and np.isfinite(std.S).all()
    P, T = degree, len(design.teams)
    ll = trial_loglik_numpy(std.z, std.S, design.team_idx, np.zeros(P), np.zeros((T, P)), np.zeros(T),
                            np.eye(P), np.asarray(1.0))
    assert np.isfinite(ll).all(), "a loaded design gives a non-finite log-density"
    return "finite"


@st.composite
def trial_tables(draw):
    """A valid trial table (+ covariance table) for KPI y and metric m (degree up to 2), then damaged."""
    n_trials = draw(st.integers(1, 20))
    n_teams = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = {q: draw(magnitude) for q in ("y", "m", "m^2")}
    # some trial ids unicode, empty, blank or repeated
    trials = [draw(labels) if draw(st.integers(0, 5)) == 0 else f"k{i}" for i in range(n_trials)]
    rows, cov_rows = [], []
    for k, t in enumerate(trials):
        team = f"g{k % n_teams}"
        for q in ("y", "m", "m^2"):
            rows.append({"trial": t, "team": team, "quantity": q,
                         "estimate": rng.normal() * scale[q], "std_error": abs(rng.normal()) * scale[q] * 0.3})
        r = draw(st.sampled_from([0.0, 0.3, 0.5, -0.4, 0.9, 0.99]))  # equicorrelated: positive definite
        for q1, q2 in (("y", "m"), ("y", "m^2"), ("m", "m^2")):
            cov_rows.append({"trial": t, "quantity_1": q1, "quantity_2": q2,
                             "covariance": r * rows[-3 + ("y", "m", "m^2").index(q1)]["std_error"]
                             * rows[-3 + ("y", "m", "m^2").index(q2)]["std_error"]})
    df, cov = pd.DataFrame(rows), pd.DataFrame(cov_rows)
    damage = draw(st.lists(st.sampled_from(
        ["none", "dup_row", "drop_row", "nan_estimate", "text_estimate", "zero_se", "neg_se", "inf_se",
         "no_team", "one_team", "bad_quantity", "power0", "cov_diag_wrong", "cov_unknown_trial",
         "cov_missing", "huge", "tiny", "dup_cov_conflict", "corr_beyond_1"]), min_size=0, max_size=3))
    for d in damage:
        if len(df) == 0:
            break
        i = draw(st.integers(0, len(df) - 1))
        if d == "dup_row":
            df = pd.concat([df, df.iloc[[i]]], ignore_index=True)
        elif d == "drop_row":
            df = df.drop(index=df.index[i]).reset_index(drop=True)
        elif d == "nan_estimate":
            df.loc[df.index[i], "estimate"] = np.nan
        elif d == "text_estimate":
            df["estimate"] = df["estimate"].astype(object)
            df.loc[df.index[i], "estimate"] = "1,5"
        elif d == "zero_se":
            df.loc[df.index[i], "std_error"] = 0.0
        elif d == "neg_se":
            df.loc[df.index[i], "std_error"] = -1.0
        elif d == "inf_se":
            df.loc[df.index[i], "std_error"] = np.inf
        elif d == "no_team" and "team" in df:
            df = df.drop(columns="team")
        elif d == "one_team" and "team" in df:
            df["team"] = "only"
        elif d == "bad_quantity":
            df.loc[df.index[i], "quantity"] = draw(st.sampled_from(["m^x", "", "^2", "m^^2", "🙂"]))
        elif d == "power0":
            df.loc[df.index[i], "quantity"] = "m^0"
        elif d == "cov_diag_wrong" and cov is not None and len(cov):
            cov = pd.concat([cov, pd.DataFrame([{"trial": df["trial"].iloc[i], "quantity_1": "m",
                                                 "quantity_2": "m", "covariance": 123.0}])], ignore_index=True)
        elif d == "cov_unknown_trial" and cov is not None:
            cov = pd.concat([cov, pd.DataFrame([{"trial": "ghost", "quantity_1": "y", "quantity_2": "m",
                                                 "covariance": 0.0}])], ignore_index=True)
        elif d == "cov_missing":
            cov = None
        elif d in ("huge", "tiny"):
            f = 1e12 if d == "huge" else 1e-12
            df["estimate"] = pd.to_numeric(df["estimate"], errors="coerce") * f
            df["std_error"] = pd.to_numeric(df["std_error"], errors="coerce") * f
            if cov is not None:
                cov = cov.assign(covariance=cov["covariance"] * f * f)
        elif d == "corr_beyond_1" and cov is not None and len(cov):
            # a covariance that disagrees with the standard errors: |correlation| > 1
            j = draw(st.integers(0, len(cov) - 1))
            cov.loc[cov.index[j], "covariance"] *= draw(st.sampled_from([2.0, 10.0, -5.0]))
        elif d == "dup_cov_conflict" and cov is not None and len(cov):
            row = cov.iloc[[0]].assign(covariance=cov["covariance"].iloc[0] + 1.0)
            cov = pd.concat([cov, row], ignore_index=True)
    return df, cov


@FUZZ
@given(trial_tables(), st.integers(1, 2))
def test_trial_tables_load_or_fail_cleanly(tables, degree):
    df, cov = tables
    try:
        data = bc.read_trials(df, cov)
    except DataError as exc:
        _check_error(exc)
        event("read_trials: DataError")
        return
    assert data.dataset["estimate"].notnull().any()
    event(f"loaded; model: {_assert_model_finite(data, 'y', 'm', degree)}")


@st.composite
def unit_tables(draw):
    """A unit-level log (trial, team, treated, y, m), valid or damaged."""
    n_trials = draw(st.integers(0, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    trial_ids = [draw(labels) if draw(st.integers(0, 3)) == 0 else f"t{k}" for k in range(n_trials)]
    parts = []
    for k, t in enumerate(trial_ids):
        n = draw(st.sampled_from([1, 4, 8, 12, 25, 40]))
        parts.append(pd.DataFrame({
            "trial": [t] * n,
            "team": [draw(st.sampled_from(["a", "b"])) if k % 2 else "a"] * n,
            "treated": np.arange(n) % 2,
            "y": rng.normal(size=n) * draw(magnitude) + draw(st.sampled_from([0.0, 0.0, 1e6, -1e12])),
            "m": rng.normal(size=n) * draw(magnitude),
        }))
    units = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(units) and draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(units) - 1))
        col, value = draw(st.sampled_from([("treated", 2), ("treated", -1), ("y", np.nan), ("m", np.inf),
                                           ("team", "other"), ("trial", "")]))
        units.loc[units.index[i], col] = value
    if len(units) and draw(st.booleans()):
        units = pd.concat([units, units.iloc[: draw(st.integers(1, len(units)))]], ignore_index=True)
    return units


@settings(FUZZ, max_examples=300)
@given(unit_tables(), st.integers(1, 3))
def test_unit_tables_summarize_or_fail_cleanly(units, degree):
    try:
        trials, cov = bc.summarize(units, kpi="y", metrics=["m"], degree=degree)
    except DataError as exc:
        _check_error(exc)
        event("summarize: DataError")
        return
    data = bc.read_trials(trials, cov)  # a summary the reader rejects would be the summarizer's bug
    event(f"summarized; model: {_assert_model_finite(data, 'y', 'm', degree)}")


def test_fuzz_reaches_loaded_data():
    """The strategies are not all-failing: a plain valid table loads and gives a finite log-density."""
    rng = np.random.default_rng(0)
    rows = [{"trial": f"k{k}", "team": f"g{k % 2}", "quantity": q, "estimate": rng.normal(), "std_error": 0.3}
            for k in range(8) for q in ("y", "m", "m^2")]
    data = bc.read_trials(pd.DataFrame(rows))
    assert _assert_model_finite(data, "y", "m", 2) == "finite"
