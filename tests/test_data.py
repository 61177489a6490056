"""Reading and validating trial tables: the happy path and every bad input the issue lists."""

import numpy as np
import pandas as pd
import pytest

import bayes_cmma as bc
from bayes_cmma.errors import AssumptionWarning, DataError
from bayes_cmma.inputs.data import metric_design


def _table():
    rows = []
    for k in range(12):
        for q, est in (("gmv", 1.0 + k), ("ndcg", 0.1 * k), ("ndcg^2", 0.01 * k)):
            rows.append({"trial": f"t{k}", "team": "a" if k % 2 else "b", "quantity": q,
                         "estimate": est + 0.01 * k**2, "std_error": 0.1, "note": "x"})
    return pd.DataFrame(rows)


def _cov():
    return pd.DataFrame([{"trial": f"t{k}", "quantity_1": "gmv", "quantity_2": "ndcg", "covariance": 0.005}
                         for k in range(12)])


def test_reads_table_and_keeps_extra_columns():
    data = bc.read_trials(_table(), _cov())
    ds = data.dataset
    assert ds["estimate"].dims == ("trial", "quantity")
    assert ds["covariance"].dims == ("trial", "quantity", "quantity_other")
    assert data.quantities == ["gmv", "ndcg", "ndcg^2"]
    assert data.teams == ["a", "b"]
    assert float(ds["covariance"].sel(trial="t3", quantity="ndcg", quantity_other="gmv")) == 0.005
    assert float(ds["covariance"].sel(trial="t3", quantity="ndcg", quantity_other="ndcg")) == pytest.approx(0.01)
    assert np.isnan(float(ds["covariance"].sel(trial="t3", quantity="ndcg^2", quantity_other="gmv")))
    assert "note" in data.extra.columns


def test_csv_and_parquet_round_trip(tmp_path):
    df = _table()
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    a = bc.read_trials(tmp_path / "t.csv").dataset
    b = bc.read_trials(tmp_path / "t.parquet").dataset
    np.testing.assert_array_equal(a["estimate"].values, b["estimate"].values)


def test_team_may_be_absent():
    data = bc.read_trials(_table().drop(columns="team"))
    assert data.teams == ["all"]


def test_ndcg_power_1_label_is_canonical():
    df = _table()
    df.loc[df["quantity"] == "ndcg", "quantity"] = "ndcg^1"
    assert "ndcg" in bc.read_trials(df).quantities


def test_unknown_covariances_are_filled_with_a_warning_that_says_how():
    data = bc.read_trials(_table(), _cov())
    with pytest.warns(AssumptionWarning, match="within_trial_correlation"):
        d = metric_design(data, "gmv", "ndcg", 2, within_trial_correlation=0.5)
    # (gmv, ndcg) came from the table, (gmv, ndcg^2) and (ndcg, ndcg^2) were filled: 0.5 * 0.1 * 0.1
    np.testing.assert_allclose(d.S[0, 0, 1], 0.005)
    np.testing.assert_allclose(d.S[0, 0, 2], 0.005)
    assert d.n_filled == 12 * 2


BAD_TABLES = {
    "missing column": (lambda df: df.drop(columns="std_error"), "missing column.*'std_error'"),
    "non-numeric estimate": (lambda df: df.assign(estimate=df["estimate"].astype(object).where(df.index != 4,
                                                                                               "abc")),
                             "non-numeric or non-finite.*'abc'.*trial 't1'"),
    "infinite estimate": (lambda df: df.assign(estimate=df["estimate"].where(df.index != 0, np.inf)),
                          "non-finite value 'inf' at trial 't0'"),
    "missing estimate": (lambda df: df.assign(estimate=df["estimate"].where(df.index != 0, np.nan)),
                         "a missing \\(NA\\) value at trial 't0'"),
    "zero std_error": (lambda df: df.assign(std_error=df["std_error"].where(df.index != 5, 0.0)),
                       "std_error must be a positive.*trial 't1'.*'ndcg\\^2'"),
    "negative std_error": (lambda df: df.assign(std_error=df["std_error"].where(df.index != 5, -1.0)),
                           "std_error must be a positive"),
    "missing std_error": (lambda df: df.assign(std_error=df["std_error"].where(df.index != 5, np.nan)),
                          "std_error must be a positive"),
    "duplicate row": (lambda df: pd.concat([df, df.iloc[[3]]]), "trial 't1' has 2 rows for quantity 'gmv'"),
    "empty trial label": (lambda df: df.assign(trial=df["trial"].where(df.index != 2, " ")), "column 'trial' is empty"),
    "two teams for a trial": (lambda df: df.assign(team=df["team"].where(df.index != 0, "z")),
                              "trial 't0'.*several teams"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_trial_table(case):
    change, message = BAD_TABLES[case]
    with pytest.raises(DataError, match=message):
        bc.read_trials(change(_table()))


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        bc.read_trials(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("trial,quantity,estimate,std_error\n")
    with pytest.raises(DataError, match="no data rows"):
        bc.read_trials(tmp_path / "header.csv")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        bc.read_trials(tmp_path / "nope.csv")


def test_kpi_or_metric_not_in_table():
    data = bc.read_trials(_table())
    with pytest.raises(DataError, match="KPI 'revenue' is not a quantity.*'gmv', 'ndcg'"):
        metric_design(data, "revenue", "ndcg", 1)
    with pytest.raises(DataError, match="metric 'mrr' is not a quantity"):
        metric_design(data, "gmv", "mrr", 1)


def test_metric_power_missing_entirely_or_for_some_trials():
    data = bc.read_trials(_table())
    with pytest.raises(DataError, match="'ndcg\\^3'.*Lower the degree"):
        metric_design(data, "gmv", "ndcg", 3)
    # missing for some trials: they enter with what they report (tests/test_incomplete.py)
    df = _table()
    df = df[~((df["trial"].isin(["t4", "t7"])) & (df["quantity"] == "ndcg^2"))]
    design = metric_design(bc.read_trials(df), "gmv", "ndcg", 2, warn_filled=False)
    lacking = [t for t, seen in zip(design.trials, design.observed[:, 2], strict=True) if not seen]
    assert lacking == ["t4", "t7"] and design.observed[:, :2].all()


def test_fewer_trials_than_parameters():
    df = _table()
    df = df[df["trial"].isin(["t0", "t1", "t2", "t3"])]
    with pytest.raises(DataError, match="4 trial\\(s\\).*needs at least 5"):
        metric_design(bc.read_trials(df), "gmv", "ndcg", 2)


def test_covariance_for_unknown_trial_or_quantity():
    bad_trial = pd.concat([_cov(), pd.DataFrame([{"trial": "t99", "quantity_1": "gmv", "quantity_2": "ndcg",
                                                   "covariance": 0.001}])])
    with pytest.raises(DataError, match="trial 't99' is not in the trial table"):
        bc.read_trials(_table(), bad_trial)
    bad_q = _cov().assign(quantity_2="mrr")
    with pytest.raises(DataError, match="trial 't0' has no estimate of quantity 'mrr'"):
        bc.read_trials(_table(), bad_q)


def test_covariance_table_missing_column_and_conflicting_variance():
    with pytest.raises(DataError, match="covariance table is missing column.*'covariance'"):
        bc.read_trials(_table(), _cov().drop(columns="covariance"))
    diag = pd.DataFrame([{"trial": "t0", "quantity_1": "gmv", "quantity_2": "gmv", "covariance": 1.0}])
    with pytest.raises(DataError, match="variance of 'gmv' for trial 't0' is 1 but its std_error squared is 0.01"):
        bc.read_trials(_table(), diag)


def test_covariance_not_positive_definite():
    cov = _cov()
    cov.loc[cov["trial"] == "t5", "covariance"] = 0.02  # correlation 2
    data = bc.read_trials(_table(), cov)
    with pytest.raises(DataError, match="not positive definite for trial\\(s\\) 't5'"):
        metric_design(data, "gmv", "ndcg", 1)
