"""Simulation study: replication rows, seeds, summary statistics, resumable runner, study files."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from bayes_cmma.errors import BayesCMMAError, SpecError
from bayes_cmma.studies.runner import run_study
from bayes_cmma.studies.simulate import SimulationSettings
from bayes_cmma.studies.study import (
    RESULT_COLUMNS,
    Setting,
    Study,
    builtin_study,
    load_study,
    paper_tables,
    replicate,
    selection_table,
    summary_table,
)

SMALL = SimulationSettings(n_trials=12, n_per=60)


def _study(estimators=("liml", "cmma_ols"), sims=3, **kw):
    return Study("tiny", (Setting("small", SMALL), Setting("A4", SMALL.replace(violation="A4"))),
                 estimators=estimators, sims=sims, **kw)


def test_replication_rows_and_truth():
    rows = replicate(_study(("liml", "2sls", "sobel_iv", "lsem", "cmma_ols")), 0, 0)
    df = pd.DataFrame(rows)
    assert list(df.columns) == list(RESULT_COLUMNS)
    assert df["estimator"].tolist() == ["liml", "2sls", "sobel_iv", "lsem", "cmma_ols"]
    assert (df["true"] == 4.0).all() and (df["lower"] < df["upper"]).all()
    np.testing.assert_allclose(df["width"], df["upper"] - df["lower"])
    assert (df["covered"] == ((df["lower"] <= 4.0) & (df["upper"] >= 4.0))).all()


def test_replication_seed_depends_on_setting_and_rep_not_on_order():
    st = _study()
    a = pd.DataFrame(replicate(st, 1, 2))
    replicate(st, 0, 0)
    b = pd.DataFrame(replicate(st, 1, 2))
    pd.testing.assert_frame_equal(a.drop(columns="time_s"), b.drop(columns="time_s"))
    c = pd.DataFrame(replicate(st, 1, 1))
    assert not np.allclose(a["estimate"], c["estimate"])
    # a different base seed gives different data
    d = pd.DataFrame(replicate(dataclasses.replace(st, seed=7), 1, 2))
    assert not np.allclose(a["estimate"], d["estimate"])


def test_degree_selection_rows():
    st = Study("sel", (Setting("quad", SimulationSettings(n_trials=30, n_per=400, beta=(4.0, 2.0))),),
               estimators=("cmma_ols",), degrees=(1, 2, 3))
    df = pd.DataFrame(replicate(st, 0, 0))
    assert df[["degree", "power"]].values.tolist() == [[1, 1], [2, 1], [2, 2], [3, 1], [3, 2], [3, 3]]
    assert df["true"].tolist() == [4.0, 4.0, 2.0, 4.0, 2.0, 0.0]
    assert df["selected_degree"].nunique() == 1
    # a strong quadratic term: the backward Wald tests keep degree >= 2
    assert df["selected_degree"].iloc[0] >= 2


def test_summary_statistics_against_closed_form():
    est = np.array([3.9, 4.1, 4.3, 4.5])
    lo, hi = est - 0.25, est + 0.25
    df = pd.DataFrame({
        "study": "s", "setting": "a", "rep": range(4), "seed": 0, "estimator": "cmma_ols", "degree": 1,
        "power": 1, "true": 4.0, "estimate": est, "std_error": 0.1, "lower": lo, "upper": hi,
        "covered": (lo <= 4) & (hi >= 4), "width": hi - lo, "selected_degree": [1, 1, 2, 1], "time_s": 1.0,
        "rhat_max": np.nan, "ess_bulk_min": np.nan, "divergences": np.nan,
    })
    s = summary_table(df).iloc[0]
    assert s["bias"] == pytest.approx(0.2)
    assert s["rmse"] == pytest.approx(np.sqrt(np.mean((est - 4) ** 2)))
    assert s["coverage"] == pytest.approx(0.5)  # 3.9 and 4.1 cover 4
    assert s["bias_mcse"] == pytest.approx(est.std(ddof=1) / 2)
    assert s["mean_width"] == pytest.approx(0.5)
    sel = selection_table(df.iloc[::-1])
    assert list(sel.columns) == ["setting", "estimator", "n", "P(degree=1)", "P(degree=2)"]
    assert sel.loc[0, "P(degree=1)"] == pytest.approx(0.75) and sel.loc[0, "P(degree=2)"] == pytest.approx(0.25)
    text = paper_tables(df)
    assert "| cmma_ols | 0.200 (" in text and "/ 50% |" in text


def test_run_resume_after_interrupt_and_repair(tmp_path):
    st = _study(sims=3)
    calls = []

    def stop_after_two(done, todo):
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(st, tmp_path, progress=False, on_replication=stop_after_two)
    first = pd.read_csv(tmp_path / "results.csv")
    assert len(first) == 2 * 2  # two replications x two estimators
    run = run_study(st, tmp_path, progress=False)
    assert run.n_new == 4 and run.n_skipped == 2
    res = pd.read_csv(tmp_path / "results.csv")
    counts = res.groupby(["setting", "estimator"]).size()
    assert (counts == 3).all() and len(counts) == 4
    assert not res.duplicated(["setting", "rep", "estimator"]).any()
    # the rows written before the interruption are kept as they were
    pd.testing.assert_frame_equal(res.iloc[:4].reset_index(drop=True), first)

    # a kill mid-write leaves a partial last line; a replication may lack a row: both are repaired
    rows = (tmp_path / "results.csv").read_text().splitlines(keepends=True)
    kept = [r for r in rows if not r.startswith("tiny,A4,2,")]
    dropped_one = [r for r in rows if r.startswith("tiny,A4,2,")][:1]
    (tmp_path / "results.csv").write_text("".join(kept + dropped_one) + "tiny,small,3,123,li")
    run = run_study(dataclasses.replace(st, sims=3), tmp_path, progress=False)
    assert run.n_new == 1
    res = pd.read_csv(tmp_path / "results.csv")
    assert len(res) == 12 and not res.duplicated(["setting", "rep", "estimator"]).any()
    assert (tmp_path / "summary.md").read_text().startswith("# Simulation study 'tiny'")
    assert set(pd.read_csv(tmp_path / "summary.csv")["estimator"]) == {"liml", "cmma_ols"}


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    st = _study(sims=2)
    one = run_study(st, tmp_path / "one", progress=False, workers=1).results
    two = run_study(st, tmp_path / "two", progress=False, workers=2).results
    key = ["setting", "rep", "estimator"]
    a = one.sort_values(key).drop(columns="time_s").reset_index(drop=True)
    b = two.sort_values(key).drop(columns="time_s").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_a_folder_of_another_study_is_refused(tmp_path):
    run_study(_study(sims=1), tmp_path, progress=False)
    with pytest.raises(BayesCMMAError, match="different study"):
        run_study(_study(sims=1, seed=99), tmp_path, progress=False)


@pytest.mark.mcmc
def test_three_replications_end_to_end_with_the_bayesian_model(tmp_path):
    st = Study("e2e", (Setting("K=12", SimulationSettings(n_trials=12, n_per=100)),),
               sims=3, bayes={"draws": 200, "tune": 200, "chains": 2})
    run = run_study(st, tmp_path, progress=False)
    res = run.results
    assert res.groupby("estimator").size().to_dict() == {e: 3 for e in st.estimators}
    bayes = res[res["estimator"] == "bayes"]
    assert bayes["rhat_max"].notna().all() and (bayes["ess_bulk_min"] > 0).all()
    assert (bayes["std_error"] > 0).all() and (bayes["lower"] < bayes["estimate"]).all()
    assert "| bayes |" in run.tables


def test_summary_level_peers_and_the_measurement_choice_of_the_bayesian_fits(monkeypatch):
    """The errors-in-variables rows equal bayes_cmma.baselines.eiv on the same summaries; [bayes] measurement keys reach
    the fit (arm sizes withheld -> the size proxy)."""
    from bayes_cmma.studies import study as study_mod

    st = Study("peers", (Setting("quad", SimulationSettings(n_trials=30, n_per=400, beta=(4.0, 2.0))),),
               estimators=("cmma_ols", "summary_tc", "summary_liml"), degrees=(1, 2))
    df = pd.DataFrame(replicate(st, 0, 0))
    assert df.groupby("estimator", sort=False).size().to_dict() == {"cmma_ols": 3, "summary_tc": 3, "summary_liml": 3}
    from bayes_cmma.baselines.eiv import eiv_estimate
    from bayes_cmma.inputs.data import metric_design, read_trials
    from bayes_cmma.inputs.summarizer import summarize_units
    from bayes_cmma.studies.simulate import simulate_units

    ss = study_mod.replication_seed(st, st.settings[0], 0)
    data_seed, _ = ss.spawn(2)
    sim = simulate_units(st.settings[0].sim, np.random.default_rng(data_seed))
    trials, cov = summarize_units(sim.units, kpi="y", metrics=["m"], degree=2)
    design = metric_design(read_trials(trials, cov), "y", "m", 2, warn_filled=False)
    for est, method in (("summary_tc", "tc"), ("summary_liml", "liml")):
        got = df[(df["estimator"] == est) & (df["degree"] == 2)]["estimate"].to_numpy()
        np.testing.assert_allclose(got, eiv_estimate(design, method).beta.to_numpy(), rtol=1e-12)
    seen = {}

    def fake_fit(design, spec, **kw):
        seen.update(measurement=spec.error_covariance, proxy=spec.size_proxy, sizes=design.arm_sizes,
                    team_effects=spec.team_effects)
        raise RuntimeError("stop")

    monkeypatch.setattr("bayes_cmma.fitting.bayes.fit_design", fake_fit)
    bayes = Study("b", st.settings, estimators=("bayes",), degrees=(1,),
                  bayes={"draws": 10, "arm_sizes": False, "size_proxy": "kpi_se"})
    with pytest.raises(RuntimeError, match="stop"):
        replicate(bayes, 0, 0)
    assert seen == {"measurement": "pooled", "proxy": "kpi_se", "sizes": None, "team_effects": "auto"}
    per_trial = dataclasses.replace(bayes, bayes={"error_covariance": "per_trial", "team_effects": "independent"})
    with pytest.raises(RuntimeError, match="stop"):
        replicate(per_trial, 0, 0)
    assert seen["measurement"] == "per_trial" and seen["sizes"].shape == (30, 2)
    assert seen["team_effects"] == "independent"


def test_unequal_trial_sizes_are_log_uniform_and_keep_the_default_seeds():
    from bayes_cmma.studies.simulate import simulate_units

    s = SimulationSettings(n_trials=400, n_per=200, n_per_max=5000)
    units = simulate_units(s, np.random.default_rng(1)).units
    sizes = units.groupby("trial").size()
    assert sizes.min() >= 200 and sizes.max() <= 5000
    # log-uniform: the median size is near the geometric mean sqrt(200 * 5000) = 1000
    assert 850 < sizes.median() < 1150
    assert "n_per_max" not in SimulationSettings().to_dict()  # absent: earlier studies keep their identity
    assert s.to_dict()["n_per_max"] == 5000


def test_builtin_studies():
    t1 = builtin_study("table1")
    assert [s.label for s in t1.settings] == ["N_per=200", "N_per=500", "N_per=1000"]
    assert all(s.sim.n_trials == 50 for s in t1.settings) and t1.sims == 100
    t2 = builtin_study("table2")
    assert [s.sim.violation for s in t2.settings] == ["A2", "A3", "A4"]
    t3 = builtin_study("table3")
    assert t3.degrees == (1, 2, 3) and t3.estimators == ("cmma_ols", "summary_tc", "summary_liml", "bayes")
    assert t3.settings[2].sim.beta == (4.0, 0.0, 5.0) and not t3.settings[2].sim.random_slope
    assert [s.sim.n_trials for s in builtin_study("small_k").settings] == [10, 20]
    assert builtin_study("small_k").estimators[-2:] == ("admgda", "bayes") and "admgda" not in t1.estimators
    with pytest.raises(BayesCMMAError, match="unknown study 'table9'"):
        builtin_study("table9")


def test_unit_estimators_need_a_linear_drf():
    with pytest.raises(BayesCMMAError, match="linear DRF only"):
        Study("x", (Setting("q", SimulationSettings(beta=(4.0, 2.0))),), degrees=(2,))


def test_load_study_file(tmp_path):
    f = tmp_path / "few.toml"
    f.write_text(
        'name = "few"\nsims = 4\nestimators = ["cmma_ols", "bayes"]\n[base]\nn_per = 200\n'
        '[[settings]]\nlabel = "K=10"\nn_trials = 10\n[[settings]]\nlabel = "K=10 A2"\nn_trials = 10\n'
        'violation = "A2"\n[bayes]\ndraws = 300\n'
    )
    st = load_study(f)
    assert st.name == "few" and st.sims == 4 and st.estimators == ("cmma_ols", "bayes")
    assert [s.sim.violation for s in st.settings] == [None, "A2"]
    assert all(s.sim.n_per == 200 and s.sim.n_trials == 10 for s in st.settings)
    assert st.bayes == {"draws": 300, "tune": 1000, "chains": 4}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("simz = 3\n", "unknown key 'simz'.*Did you mean 'sims'"),
        ("[base]\nn_pre = 3\n", "unknown key 'n_pre' in \\[base\\].*Did you mean 'n_per'"),
        ("[[settings]]\nlabel = 'a'\nviolaton = 'A2'\n", "Did you mean 'violation'"),
        ("estimators = ['ols']\n", "unknown estimator 'ols'"),
        ("[bayes]\ndraws = 0\n", "bayes setting draws=0"),
        ("[bayes]\ntarget_accept = 1.5\n", "bayes setting target_accept=1.5"),
        ("[bayes]\nadapt = 1\n", "bayes setting adapt=1"),
        ("[bayes]\nerror_covariance = 'pooledd'\n", "bayes setting error_covariance='pooledd'"),
        ("[bayes]\narm_sizes = 1\n", "bayes setting arm_sizes=1"),
        ("[bayes]\nteam_effects = 'indep'\n", "bayes setting team_effects='indep'.*team_effects one of auto, centred"),
        ("[base]\nn_per = 200\nn_per_max = 100\n", "n_per_max must be an integer >= n_per"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_bad_study_files(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises((SpecError, BayesCMMAError), match=message):
        load_study(f)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"settings": (Setting("a", SMALL), Setting("a", SMALL))}, "setting labels repeat"),
        ({"settings": ()}, "no setting given"),
        ({"degrees": (4,)}, "degrees must be among 1, 2, 3"),
        ({"sims": 0}, "sims must be at least 1"),
        ({"estimators": ()}, "no estimator given"),
    ],
)
def test_bad_study_definitions(kwargs, message):
    base = {"name": "x", "settings": (Setting("a", SMALL),), "estimators": ("cmma_ols",)}
    with pytest.raises(BayesCMMAError, match=message):
        Study(**{**base, **kwargs})


def test_missing_study_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_study(tmp_path / "nope.toml")


def test_damaged_output_folder_is_refused(tmp_path):
    st = _study(sims=1)
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(BayesCMMAError, match="study.json is not valid JSON"):
        run_study(st, tmp_path, progress=False)
    other = tmp_path / "other"
    run_study(st, other, progress=False)
    (other / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BayesCMMAError, match="does not have the columns of a results file"):
        run_study(st, other, progress=False)
