"""Trust-check figures on fake results (no sampling): panels, labels, bands from the right quantities."""

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.reporting.plots import sbc_rank_histograms, sensitivity_plot


def test_sbc_rank_histograms():
    rng = np.random.default_rng(0)
    ranks = pd.DataFrame({"parameter": np.repeat(["beta[1]", "pi_sd", "residual_sd"], 200),
                          "rank": rng.integers(0, 101, 600)})
    fig = sbc_rank_histograms(ranks, n_draws=100, bins=10)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["beta[1]", "pi_sd", "residual_sd"]
    assert "among 100 draws" in axes[0].get_xlabel()
    # the grey band is the 99% binomial range of a bin count under uniformity (200 sims, 10 bins)
    lo, hi = stats.binom.interval(0.99, 200, 0.1)
    band = axes[0].patches[0]  # axhspan: a rectangle spanning the axes' width, in data units vertically
    assert np.isclose(band.get_y(), lo) and np.isclose(band.get_y() + band.get_height(), hi)
    heights = [p.get_height() for p in axes[1].patches[1:]]  # after the band: the 10 bars
    assert len(heights) == 10 and sum(heights) == 200


def test_sensitivity_plot():
    rows = [{"rho": r, "metric": m, "elasticity_mean": e + r, "elasticity_eti94_lower": e + r - 0.1,
             "elasticity_eti94_upper": e + r + 0.1, "p_best": p}
            for r in (-0.2, 0.0, 0.2) for m, e, p in (("ndcg", 1.0, 0.7), ("mrr", 0.5, 0.3))]
    fig = sensitivity_plot(pd.DataFrame(rows), tipping_point=-0.2, kpi="gmv")
    ax_el, ax_p = fig.axes
    assert "elasticity of gmv" in ax_el.get_ylabel() and "94% interval" in ax_el.get_ylabel()
    labels = [line.get_label() for line in ax_p.get_lines()]
    assert labels[:2] == ["ndcg", "mrr"] and "tipping point -0.20" in labels
    np.testing.assert_allclose(ax_el.get_lines()[0].get_ydata(), [0.8, 1.0, 1.2])
    assert ax_p.get_ylim() == (-0.02, 1.02)


# --- result and model-checking figures, on a fake posterior of the example data ---------------------

import pytest  # noqa: E402
from fakes import fake_result  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from bayes_cmma.decisions import derived  # noqa: E402
from bayes_cmma.errors import BayesCMMAError  # noqa: E402
from bayes_cmma.reporting import plots  # noqa: E402


@pytest.fixture(scope="module")
def fake(example):
    return fake_result(example.trials, example.kpi, example.metrics, 2, draws=150)


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_drf_panel_has_points_bands_and_naive_line(fake, example):
    fig = plots.drf_panel(fake)
    assert len(fig.axes) == 3
    ax = fig.axes[0]
    assert ax.get_xlabel() == "ATE on ndcg" and ax.get_ylabel() == "ATE on gmv"
    labels = ax.get_legend_handles_labels()[1]
    assert {"94% credible band", "50% credible band", "naive OLS through the points"} <= set(labels)
    # the outer band is the 3%..97% quantile of mu(m) + mean team effect at each grid point
    outer = _bands(ax)[0]
    verts = outer.get_paths()[0].vertices
    tree = fake["ndcg"].posterior
    x = verts[len(verts) // 2 - 5, 0]  # a point on the upper/lower edge
    curve = (derived.drf(tree["posterior"]["beta"], [x]).values[..., 0]
             + tree["posterior"]["pi_mean"].values).ravel()
    lo, hi = np.quantile(curve, [0.03, 0.97])
    ys = verts[np.isclose(verts[:, 0], x), 1]
    assert np.isclose(ys.min(), lo, rtol=1e-6) and np.isclose(ys.max(), hi, rtol=1e-6)
    # the trial points are the observed ATEs (metric on x, KPI on y)
    z = tree["observed_data"]["trial_ate"].values
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), z[:, 1])
    np.testing.assert_allclose(line.get_ydata(), z[:, 0])


def test_elasticity_panel_marks_the_current_value(fake, example):
    fig = plots.elasticity_panel(fake, example.at, lift=0.1, baseline=example.kpi_baseline)
    ax = fig.axes[1]
    assert ax.get_xlabel() == "mrr, per-unit level" and "elasticity of gmv" in ax.get_ylabel()
    m0 = example.at["mrr"]
    marker = next(ln for ln in ax.get_lines() if ln.get_marker() == "D")
    el = derived.elasticity(fake["mrr"].beta, m0, lift=0.1, baseline=example.kpi_baseline)
    assert marker.get_xdata()[0] == m0 and marker.get_ydata()[0] == pytest.approx(float(el.mean()))
    with pytest.raises(BayesCMMAError, match="no current value for metric 'map'"):
        plots.elasticity_panel(fake, {"ndcg": 0.002, "mrr": 0.001})


def test_ranking_plot_legend_has_p_best_and_heat_map_rows_sum_to_one(fake, example):
    fig = plots.ranking_plot(fake, example.at, baseline=example.kpi_baseline)
    ax_d, ax_h = fig.axes[:2]
    ranking = fake.ranking(example.at, baseline=example.kpi_baseline)
    labels = ax_d.get_legend_handles_labels()[1]
    for m in example.metrics:
        assert f"{m} (P(best) = {float(ranking['p_best'].sel(metric=m)):.2f})" in labels
    heat = ax_h.get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(heat).sum(axis=1), 1.0)
    assert [t.get_text() for t in ax_h.get_yticklabels()] == example.metrics


def test_team_forest_one_row_per_team(fake):
    fig = plots.team_forest(fake["ndcg"])
    ax = fig.axes[0]
    teams = list(fake["ndcg"].posterior["posterior"]["team"].values)
    assert [t.get_text() for t in ax.get_yticklabels()] == teams  # top to bottom in team order
    assert ax.get_yticks()[0] > ax.get_yticks()[-1]
    assert ax.get_xlabel() == "direct effect on gmv, not through the metric"


def test_model_check_figures(fake):
    fit = fake["ndcg"]
    ppc = plots.ppc_plot(fit)
    assert len(ppc.axes) == 3 and ppc.axes[0].get_xlabel() == "ATE on ndcg"
    n_trials = fit.posterior["observed_data"].sizes["trial"]
    assert len(ppc.axes[0].patches) == n_trials  # one predictive ellipse per trial
    assert "PIT of the ATE on gmv" == ppc.axes[1].get_xlabel()
    k = plots.pareto_k_plot(fit, label_worst=4)
    ax = k.axes[0]
    texts = [t.get_text() for t in ax.texts]
    loo = __import__("bayes_cmma.checks.checking", fromlist=["loo"]).loo(fit)
    worst = list(loo.pareto_k.sortby(loo.pareto_k, ascending=False)["trial"].values[:4])
    assert sorted(texts) == sorted(worst)
    shrink = plots.shrinkage_plot(fit)
    assert [a.get_xlabel() for a in shrink.axes] == ["observed ATE on ndcg",
                                                      "observed ATE on gmv"]
    trace = plots.trace_plot(fit)
    names = [a.get_ylabel() for a in trace.axes[::2]]
    assert names == ["beta[1]", "beta[2]", "metric_sd[1]", "metric_sd[2]", "residual_sd", "pi_mean", "pi_sd"]
    assert len(trace.axes[0].get_lines()) == 2  # one trace per chain


def test_plot_functions_reject_other_inputs():
    with pytest.raises(BayesCMMAError, match="MetricFit or a posterior DataTree"):
        plots.team_forest({"a": 1})


def test_legends_sit_outside_every_axes_so_they_cover_no_data(fake, example):
    """Each figure has one legend, below its axes (not loc="best" either: that costs time with many
    points, and matplotlib's warning about it once failed a CI run under load)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bayes_cmma.reporting.plots.trust import sensitivity_plot

    rows = [{"rho": r, "metric": m, "elasticity_mean": 1.0, "elasticity_eti94_lower": 0.9,
             "elasticity_eti94_upper": 1.1, "p_best": 0.5} for r in (-0.2, 0.0) for m in ("ndcg", "mrr")]
    figs = {"drf": plots.drf_panel(fake),
            "elasticity": plots.elasticity_panel(fake, example.at, baseline=example.kpi_baseline),
            "ranking": plots.ranking_plot(fake, example.at, baseline=example.kpi_baseline),
            "teams": plots.team_forest(fake["ndcg"]), "ppc": plots.ppc_plot(fake["ndcg"]),
            "pareto": plots.pareto_k_plot(fake["ndcg"]), "shrinkage": plots.shrinkage_plot(fake["ndcg"]),
            "sensitivity": sensitivity_plot(pd.DataFrame(rows), tipping_point=-0.1, kpi="gmv")}
    for name, fig in figs.items():
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)  # the constrained layout places the legend
        assert not [ax for ax in fig.axes if ax.get_legend() is not None], name
        assert len(fig.legends) == 1, name
        box = fig.legends[0].get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (name, ax.get_title())
        assert fig.legends[0]._loc != 0, name  # 0 is matplotlib's code for "best"
    # the panels share their entries: one legend entry per label, not one per metric
    labels = [t.get_text() for t in figs["drf"].legends[0].get_texts()]
    assert len(labels) == len(set(labels)) and "trials (ATE +- 1 SE)" in labels


def test_pareto_k_labels_of_neighbouring_trials_do_not_overlap():
    from bayes_cmma.reporting.plots.checks import label_offsets

    k = np.array([0.1, 0.2, 0.95, 0.93, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8])
    offsets = dict(label_offsets(k, np.array([2, 3, 19])))
    assert offsets[2] == 3 and offsets[3] == 12  # T062/T063-like neighbours stack
    assert offsets[19] == 3  # a far point keeps the plain offset
