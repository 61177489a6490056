"""Trust-check figures on fake results (no sampling): panels, labels, bands from the right quantities."""

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.plots import sbc_rank_histograms, sensitivity_plot


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
