"""The fusion study (`bayes-cmma simulate --study fusion`): the regret formula, the summary and target
tables, reproducing the committed benchmark, the CLI and its bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli_study import _bad

from bayes_cmma.cli import main
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.studies.fusion_study import (
    FUSION_COLUMNS,
    FusionStudy,
    fusion_summary,
    fusion_tables,
    launch_regret,
    simulate_fusion_trials,
    target_table,
)
from bayes_cmma.studies.runner import run_study

COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks/results/fusion_launch_check/results.csv"
#: The benchmark's rule names -> the study's.
BENCHMARK_RULES = {"trials": "trials", "observational": "observational", "stein": "stein",
                   "decision_focused_significant": "significant", "decision_focused": "best",
                   "bilevel_significant": "per_metric", "metric_1": "driver"}


def test_launch_regret_matches_launching_on_simulated_noise():
    """mean(Phi(w'm / sd) y) is the expected value of launching on w' m_hat > 0 over the noise."""
    rng = np.random.default_rng(0)
    n = 400
    m = rng.normal(size=(n, 3))
    y = m @ np.array([1.0, 0.3, -0.2]) + rng.normal(0, 0.5, n)
    se = rng.uniform(0.2, 0.6, (n, 3))
    S = se[:, :, None] * se[:, None, :] * (0.3 + 0.7 * np.eye(3))
    w = np.array([0.8, 0.5, 0.1])
    draws = 4000
    noise = np.einsum("kij,dkj->dki", np.linalg.cholesky(S), rng.standard_normal((draws, n, 3)))
    launched = ((m + noise) @ w > 0)
    value = (launched * y).mean()
    oracle = np.maximum(y, 0).mean()
    mc_se = (launched * y).mean(axis=1).std(ddof=1) / np.sqrt(draws)
    assert abs(launch_regret(w, y, m, S) - (oracle - value) / oracle) < 4 * mc_se / oracle
    # no noise and the KPI's own direction: the oracle, regret 0
    assert launch_regret(np.array([1.0, 0, 0]), m[:, 0], m, S * 1e-12) == pytest.approx(0.0, abs=1e-9)


def test_simulated_tables_follow_the_law():
    """Many trials of one replication's teams: metric effects correlated 0.8 within a team, the KPI
    effect the first metric's plus the team's direct effect, measured with the stated noise."""
    t = simulate_fusion_trials(4000, 0.5, np.random.default_rng(1))
    z, S, team = t["z"], t["S"], t["team"]
    true_m = z[:, 1:]  # measured, so corrected by the mean noise below
    within = np.concatenate([true_m[team == g] - t["alpha"][g] for g in range(4)])
    cov = np.cov(within.T) - S[:, 1:, 1:].mean(axis=0)
    np.testing.assert_allclose(cov, 0.2 * np.eye(3) + 0.8, atol=0.08)
    resid = z[:, 0] - z[:, 1] - t["pi"][team]
    noise = S[:, 0, 0] + S[:, 1, 1] - 2 * S[:, 0, 1]
    assert np.var(resid) - noise.mean() == pytest.approx(0.09, abs=0.03)
    assert np.all(np.sqrt(np.diagonal(S, axis1=1, axis2=2)) >= 0.2)
    assert np.all(np.sqrt(np.diagonal(S, axis1=1, axis2=2)) <= 0.5)


def test_the_study_reproduces_the_committed_benchmark_rows():
    """Same law and seeds as benchmarks/fusion_launch_check.py: its committed rows (6 significant
    digits) for two replications of K = 10, both direct-effect settings."""
    study = FusionStudy(n_trials=(10,), sims=2)
    rows = pd.DataFrame([r for i in range(len(study.settings)) for rep in range(2) for r in study.replicate(i, rep)])
    old = pd.read_csv(COMMITTED)
    old = old[old["rule"].isin(BENCHMARK_RULES)].assign(rule=lambda d: d["rule"].map(BENCHMARK_RULES))
    both = rows.merge(old, on=["trials", "direct_sd", "bias", "rule", "rep"], suffixes=("", "_committed"))
    assert len(both) == len(rows) == 2 * 2 * 5 * 7
    np.testing.assert_allclose(both["regret"], both["regret_committed"], rtol=1e-5)
    chosen = both["strength"].notna()
    assert chosen.sum() == 2 * 2 * 5 * 4
    np.testing.assert_allclose(both.loc[chosen, "strength"], both.loc[chosen, "strength_committed"], rtol=1e-5)


def _fake_results():
    """Two replications, two rules, K = 10, no direct effects, biases 0 and 1, with known regrets."""
    rows = []
    regrets = {("trials", 0.0): (0.10, 0.12), ("stein", 0.0): (0.07, 0.09),
               ("trials", 1.0): (0.10, 0.12), ("stein", 1.0): (0.104, 0.13)}
    for (rule, b), values in regrets.items():
        for rep, r in enumerate(values):
            rows.append({"study": "fusion", "setting": "K=10,direct_sd=0", "rep": rep, "trials": 10,
                         "direct_sd": 0.0, "bias": b, "rule": rule, "regret": r,
                         "strength": 0.5 if rule == "stein" else np.nan, "time_s": 0.0})
    return pd.DataFrame(rows, columns=list(FUSION_COLUMNS))


def test_summary_and_targets_on_known_regrets():
    s = fusion_summary(_fake_results()).set_index(["bias", "rule"])
    # bias 0: stein's paired differences -0.03, -0.03 against a mean of 0.11
    assert s.loc[(0.0, "stein"), "change"] == pytest.approx(-0.03 / 0.11)
    assert s.loc[(0.0, "stein"), "change_se"] == pytest.approx(0.0, abs=1e-12)
    # bias 1: differences +0.004, +0.01: mean 0.007, sd 0.006 / sqrt(2)
    assert s.loc[(1.0, "stein"), "change"] == pytest.approx(0.007 / 0.11)
    assert s.loc[(1.0, "stein"), "change_se"] == pytest.approx(np.std([0.004, 0.01], ddof=1) / np.sqrt(2) / 0.11)
    assert s.loc[(0.0, "trials"), "regret_se"] == pytest.approx(np.std([0.1, 0.12], ddof=1) / np.sqrt(2))
    assert s.loc[(0.0, "stein"), "median_strength"] == 0.5
    t = target_table(fusion_summary(_fake_results())).set_index("rule").loc["stein"]
    assert t["worst_change"] == pytest.approx(0.007 / 0.11) and not t["meets_safety"]  # +6.4% > +5%
    assert t["gain_small_bias"] == pytest.approx(0.03 / 0.11) and t["meets_gain"]  # 27% >= 20%
    assert "K=10, direct sd 0, bias 1" == t["worst_setting"]
    text = fusion_tables(_fake_results())
    assert "| stein | +6.4% (2.7) | K=10, direct sd 0, bias 1 | no | -27.3% (0.0) | yes |" in text


def test_study_settings_are_checked():
    for kwargs, message in [({"estimators": ("stein", "oracle")}, "unknown rule 'oracle'"),
                            ({"estimators": ("stein",)}, "must include 'trials'"),
                            ({"estimators": ("trials", "stein", "stein")}, "rules repeat"),
                            ({"n_trials": (10, 5)}, "at least 6"),
                            ({"direct_sd": (-1.0,)}, "direct-effect sds"),
                            ({"sims": 0}, "sims must be at least 1")]:
        with pytest.raises(BayesCMMAError, match=message):
            FusionStudy(**kwargs)


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    study = FusionStudy(n_trials=(10, 12), direct_sd=(0.0,), estimators=("trials", "stein", "best"), sims=2)
    one = run_study(study, tmp_path / "one", progress=False, workers=1).results
    two = run_study(study, tmp_path / "two", progress=False, workers=2).results
    key = ["setting", "rep", "bias", "rule"]
    a = one.sort_values(key).drop(columns="time_s").reset_index(drop=True)
    b = two.sort_values(key).drop(columns="time_s").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_the_summary_does_not_depend_on_the_order_replications_finished_in(tmp_path):
    """Workers append replications in the order they finish; the summary sums them in replication order."""
    import shutil

    study = FusionStudy(n_trials=(10,), direct_sd=(0.0,), estimators=("trials", "stein", "observational"), sims=6)
    run_study(study, tmp_path / "a", progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    rows = pd.read_csv(tmp_path / "a/results.csv")
    shuffled = pd.concat([rows[rows["rep"] == r] for r in (4, 1, 5, 0, 3, 2)])
    shuffled.to_csv(tmp_path / "b/results.csv", index=False)
    assert run_study(study, tmp_path / "b", progress=False).n_new == 0
    assert (tmp_path / "a/summary.csv").read_text() == (tmp_path / "b/summary.csv").read_text()


def test_simulate_fusion_cli_runs_resumes_and_refuses_another_study(tmp_path, capsys):
    out = tmp_path / "fusion"
    argv = ["simulate", "--study", "fusion", "--sims", "2", "--n-trials", "10", "--estimators", "trials", "stein",
            "driver", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "## Targets" in text and "| stein |" in text and "| 0.5 | 10 | driver |" in text
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == list(FUSION_COLUMNS)
    assert len(results) == 2 * 2 * 5 * 3  # direct-effect settings x reps x biases x rules
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["rule"]) == {"trials", "stein", "driver"}
    md = (out / "summary.md").read_text()
    assert md.startswith("# Simulation study 'fusion'") and "Command: `bayes-cmma simulate --study fusion" in md
    assert main(argv) == 0
    assert "0 new replication(s)" in capsys.readouterr().out
    _bad(capsys, ["simulate", "--study", "fusion", "--sims", "2", "--n-trials", "12", "--out", str(out)],
         "holds results of a different study")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--estimators", "stein", "oracle"], "unknown rule 'oracle'; choose from trials, observational"),
        (["--estimators", "stein"], "must include 'trials'"),
        (["--n-trials", "5"], "--n-trials values must be at least 6"),
        (["--n-per", "200"], "--n-per do\\(es\\) not apply to --study fusion"),
        (["--draws", "100", "--chains", "2"], "--draws, --chains do\\(es\\) not apply"),
    ],
)
def test_simulate_fusion_bad_input(extra, message, tmp_path, capsys):
    out = tmp_path / "study"
    _bad(capsys, ["simulate", "--study", "fusion", *extra, "--out", str(out)], message)
    assert not out.exists()
