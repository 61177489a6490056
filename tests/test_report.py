"""The HTML report, from a fake posterior (no sampling): content, self-containment, bad folders."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from cli_output import unwrap
from fakes import fake_result

from bayes_cmma.cli import main
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.reporting.report import ReportInputs, load_fit_dir, render_report, run_record, write_report


@pytest.fixture(scope="module")
def fake(example):
    return fake_result(example.trials, example.kpi, example.metrics, 2, draws=120)


@pytest.fixture
def text_only(monkeypatch):
    """For tests of the report's words: figures are not drawn (each report draws 18, about 10 s).
    The ``page`` fixture and tests/test_plots.py draw them; the linear-DRF test below draws them too."""
    import types

    from bayes_cmma.reporting import report

    def no_figure(*args, **kwargs):
        return None

    monkeypatch.setattr(report, "plots", types.SimpleNamespace(**{
        name: no_figure for name in ("drf_panel", "elasticity_panel", "ranking_plot", "ppc_plot", "pareto_k_plot",
                                     "shrinkage_plot", "team_forest", "trace_plot")}))
    monkeypatch.setattr(report, "_img", lambda fig, alt: f'<img alt="{alt}">')


@pytest.fixture(scope="module")
def page(fake, example):
    inputs = ReportInputs(trees={m: f.posterior for m, f in fake.fits.items()}, kpi="gmv", at=example.at,
                          lift=0.1, baseline=example.kpi_baseline)
    return render_report(inputs)


def test_report_opens_with_the_answer(page, fake, example):
    ranking = fake.ranking(example.at, baseline=example.kpi_baseline)
    best = str(ranking["metric"].values[int(np.argmax(ranking["p_best"].values))])
    answer = page.index('<h2 id="answer">The answer</h2>')
    assert answer < page.index('<h2 id="drf">Dose-response functions</h2>') < page.index('<h2 id="checks">Model checks')
    assert f"Recommended north-star metric: <b>{best}</b>" in page
    assert f"P(best) = <b>{float(ranking['p_best'].max()):.2f}</b>" in page
    sections = re.findall(r'<h2 id="([\w-]+)">([^<]+)</h2>', page)
    assert [title for _, title in sections] == [
        "The answer", "Warnings", "Dose-response functions", "Elasticity", "Ranking",
        "The paper&#x27;s OLS beside the Bayesian estimate", "Model checks", "Sampler diagnostics",
        "Model specification and versions"]
    # a table of contents before the answer, one link per section, every anchor defined once
    toc = page[page.index('<nav class="toc">'):page.index("</nav>")]
    assert page.index('<nav class="toc">') < answer
    assert re.findall(r'href="#([\w-]+)"', toc) == [anchor for anchor, _ in sections]
    assert all(page.count(f'id="{anchor}"') == 1 for anchor, _ in sections)
    # the long diagnostics are collapsed, one <details> per metric
    assert page.count("<details><summary>") == 3 and page.count("</details>") == 3
    # what was asked and what was used for the team effects
    assert re.search(r"Team effects: ndcg: team_effects: auto -&gt; [\w ]+", page)


def test_report_is_self_contained(page):
    # 2 panels + ranking + per metric (ppc, pareto k, shrinkage, teams, trace) x 3 metrics + DRF = 18 figures
    assert page.count('<img alt="') == 3 + 5 * 3
    assert page.count('src="data:image/png;base64,') == 18
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert '"pymc"' in page and '"degree": 2' in page  # versions and spec
    assert "Measurement covariance: pooled over all trials, scaled by arm sizes." in page


def test_report_without_current_values_has_no_ranking(fake, text_only):
    page = render_report(ReportInputs(trees={m: f.posterior for m, f in fake.fits.items()}, kpi="gmv"))
    assert "No current metric values were given" in page
    assert '<h2 id="ranking">' not in page and '<h2 id="drf">Dose-response functions</h2>' in page


def test_report_warns_in_plain_language(fake, example, text_only):
    import pandas as pd

    assumptions = pd.DataFrame([{"metric": "mrr", "weak": True, "p_value": 0.3, "i2": 0.02}])
    page = render_report(ReportInputs(trees={m: f.posterior for m, f in fake.fits.items()}, kpi="gmv",
                                      at=example.at, baseline=example.kpi_baseline, assumptions=assumptions))
    assert "mrr: assumption A4 looks weak" in page and "driven by the prior" in page
    # the A4 table speaks a reader's language, not the CSV's column names
    table = page[page.index('id="assumption-a4"'):page.index('id="checks"')]
    assert "p-value" in table and "I\u00b2" in table and "weak?" in table and ">yes<" in table
    assert "p_value" not in table and "i2" not in table and "reliability_eti" not in table


def test_report_uses_the_callers_summary_tables(fake, example, text_only):
    """A fit's summary table (MetricFit.summary) is computed once: the report reads the one it is given."""
    from bayes_cmma.checks.diagnostics import summary_table

    tables = {m: summary_table(f.posterior) for m, f in fake.fits.items()}
    pd.testing.assert_frame_equal(fake.fits["mrr"].summary, tables["mrr"])
    tables["mrr"].loc["beta[1]", "r_hat"] = 1.5
    page = render_report(ReportInputs(trees={m: f.posterior for m, f in fake.fits.items()}, kpi="gmv",
                                      at=example.at, baseline=example.kpi_baseline, summaries=tables))
    assert "mrr model: R-hat above" in page and "beta[1]: 1.500" in page
    assert ">1.5<" in page[page.index('id="diagnostics"'):]


def _fit_dir(tmp_path, fake, example):
    out = tmp_path / "fit"
    out.mkdir()
    for m, f in fake.fits.items():
        f.posterior.to_netcdf(out / f"{m}.nc", engine="h5netcdf")
    record = run_record("gmv", list(fake.fits), example.at, 0.1, example.kpi_baseline, "quadratic", 1)
    (out / "run.json").write_text(json.dumps(record))
    return out


def test_report_from_a_fit_folder(tmp_path, fake, example, capsys, text_only):
    out = _fit_dir(tmp_path, fake, example)
    inputs = load_fit_dir(out)
    assert list(inputs.trees) == example.metrics and inputs.at == example.at
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Recommended north-star metric" in html
    assert "Wrote" in capsys.readouterr().out


def test_report_finishes_a_fit_interrupted_while_moving_its_files_in(tmp_path, fake, example):
    from bayes_cmma.reporting.outputs import COMMIT_FILE

    out = _fit_dir(tmp_path, fake, example)
    tmp = tmp_path / ".fit.tmp-killed"
    tmp.mkdir()
    (out / "run.json").rename(tmp / "run.json")  # the new run.json had not moved in yet
    (out / COMMIT_FILE).write_text(json.dumps({"tmp": tmp.name, "files": ["run.json", "mrr.nc"], "remove": []}))
    inputs = load_fit_dir(out)
    assert list(inputs.trees) == example.metrics
    assert (out / "run.json").exists() and not (out / COMMIT_FILE).exists() and not tmp.exists()


def test_bad_fit_folders_give_one_clear_error(tmp_path, fake, example, capsys):
    with pytest.raises(BayesCMMAError, match="is not a folder"):
        load_fit_dir(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BayesCMMAError, match="has no run.json"):
        load_fit_dir(empty)
    out = _fit_dir(tmp_path, fake, example)
    (out / "mrr.nc").unlink()
    with pytest.raises(BayesCMMAError, match="mrr.nc is missing"):
        write_report(out)
    assert not (out / "report.html").exists()
    (out / "run.json").write_text("{not json")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in unwrap(err).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "not a valid run record" in errors[0] and "Traceback" not in err
    assert not (out / "report.html").exists()


def test_linear_drf_without_baseline_is_said_once_in_the_report(example):
    """The elasticity warning is not raised for every figure (the suite turns warnings into errors):
    the report's Warnings section says it."""
    linear = fake_result(example.trials, example.kpi, example.metrics[:2], 1, draws=60)
    page = render_report(ReportInputs(trees={m: f.posterior for m, f in linear.fits.items()}, kpi="gmv",
                                      at=example.at))
    assert page.count("cannot rank them") == 1


def test_fusion_section_says_how_much_the_rule_borrows_from_the_logs(fake, example, text_only):
    """The fusion table of three metrics (a real fusion on simulated trials): D^2, the share, each row."""
    import bayes_cmma as bc
    from bayes_cmma.decisions.fusion import decision_focused_fusion, fusion_frame
    from bayes_cmma.inputs.data import trial_frames

    rng = np.random.default_rng(5)
    K = 30
    m = rng.normal(0, 1, (K, 3)) @ np.linalg.cholesky(0.2 * np.eye(3) + 0.8).T
    z = np.column_stack([m[:, 0] + rng.normal(0, 0.3, K), m]) + rng.normal(0, 0.3, (K, 4))
    S = np.broadcast_to(0.09 * np.eye(4), (K, 4, 4)).copy()
    data = bc.read_trials(*trial_frames([f"t{k}" for k in range(K)], ["gmv", "a", "b", "c"], z, S))
    choice = decision_focused_fusion(data, "gmv", ["a", "b", "c"], {"a": 1.0, "b": 0.1, "c": 0.0}, seed=1)
    frame = fusion_frame(choice)
    assert frame["chosen"].sum() == 1 and {"weight_a", "observational_slope_c", "disagreement"} <= set(frame)
    np.testing.assert_allclose(frame.loc[frame["chosen"], ["weight_a", "weight_b", "weight_c"]].values[0],
                               choice.weights.values)
    page = render_report(ReportInputs(trees={m: f.posterior for m, f in fake.fits.items()}, kpi="gmv",
                                      at=example.at, baseline=example.kpi_baseline, fusion=frame))
    section = page[page.index('<h2 id="fusion">'):page.index('<h2 id="ols">')]
    lam = choice.strength
    share = 1.0 if np.isinf(lam) else lam / (1 + lam)
    assert f"D<sup>2</sup> = {choice.disagreement:.3g}" in section and "(about 3 if the logs were right)" in section
    assert f"borrows {share:.0%} of the logs" in section
    assert "a 1, b 0.1, c 0" in section  # the logs' slopes
    assert section.count("<tr") == len(frame) + 1 and section.count("(chosen)") == 1
    assert "0 (the trials alone)" in section and "inf (the logs alone)" in section
