"""team_effects = "auto": the decision between the centred and non-centred fits (no sampling)."""

import pytest
from fakes import fake_fit

from bayes_cmma.fitting import bayes as fitting
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.inputs.data import metric_design


@pytest.fixture
def fake_sampler(synthetic, monkeypatch):
    """_fit_concrete returns a fake fit whose divergence count depends on the parametrization."""
    data, _ = synthetic
    counts = {}
    calls = []

    def fake_concrete(design, spec, **kw):
        calls.append(spec.team_effects)
        fit = fake_fit(data, "y", "m", spec)
        fit.posterior["sample_stats"]["diverging"][0, : counts[spec.team_effects]] = True
        fit.timings = {"compile_s": 1.0, "sample_s": 2.0}
        return fit

    monkeypatch.setattr(fitting, "_fit_concrete", fake_concrete)
    design = metric_design(data, "y", "m", 2, warn_filled=False)
    return design, counts, calls


def test_auto_keeps_centred_when_it_does_not_diverge(fake_sampler):
    design, counts, calls = fake_sampler
    counts.update(centred=0, non_centred=0)
    fit = fitting.fit_design(design, spec_for_degree(2), check_convergence=False)
    assert calls == ["centred"] and fit.spec.team_effects == "centred"
    assert fit.posterior.attrs["team_effects"] == "centred (auto: no divergent transitions)"


@pytest.mark.parametrize(("centred", "non_centred", "kept"), [(12, 3, "non_centred"), (5, 5, "centred"),
                                                             (2, 9, "centred")])
def test_auto_refits_non_centred_after_divergences_and_keeps_the_fewer(fake_sampler, centred, non_centred, kept):
    design, counts, calls = fake_sampler
    counts.update(centred=centred, non_centred=non_centred)
    fit = fitting.fit_design(design, spec_for_degree(2), check_convergence=False)
    assert calls == ["centred", "non_centred"]
    assert fit.spec.team_effects == kept
    assert fit.posterior.attrs["team_effects"] == (
        f"{kept.replace('_', '-')} (auto: {centred} divergent transitions centred, {non_centred} non-centred)")
    assert fit.timings == {"compile_s": 2.0, "sample_s": 4.0}  # both fits' cost


def test_a_spec_that_names_the_parametrization_is_obeyed(fake_sampler):
    design, counts, calls = fake_sampler
    counts.update(centred=50, non_centred=0)
    fit = fitting.fit_design(design, replace_spec(spec_for_degree(2), team_effects="centred"),
                             check_convergence=False)
    assert calls == ["centred"] and fit.posterior.attrs["team_effects"] == "centred (set in the spec)"


def test_auto_does_nothing_without_pooling(example, monkeypatch):
    """With fewer than 4 teams the team effects are independent: nothing to parametrize."""
    import numpy as np

    from bayes_cmma.studies.synthetic import simulate_summaries

    data, _ = simulate_summaries(np.random.default_rng(2), n_trials=40, n_teams=3, beta=(1.0,))
    calls = []

    def fake_concrete(design, spec, **kw):
        calls.append(spec.team_effects)
        fit = fake_fit(data, "y", "m", spec)
        fit.posterior["sample_stats"]["diverging"][0, :7] = True
        return fit

    monkeypatch.setattr(fitting, "_fit_concrete", fake_concrete)
    design = metric_design(data, "y", "m", 1, warn_filled=False)
    fit = fitting.fit_design(design, spec_for_degree(1), check_convergence=False)
    assert calls == ["centred"]
    assert fit.posterior.attrs["team_effects"].startswith("independent")


def test_the_default_is_auto():
    assert spec_for_degree(3).team_effects == "auto"


def test_independent_team_effects_are_fitted_as_the_spec_says(fake_sampler):
    design, counts, calls = fake_sampler
    counts.update(independent=4)
    fit = fitting.fit_design(design, replace_spec(spec_for_degree(2), team_effects="independent"),
                             check_convergence=False)
    assert calls == ["independent"] and fit.posterior.attrs["team_effects"] == "independent (set in the spec)"
    assert "pi_sd" not in fit.posterior["posterior"] and "pi_mean" not in fit.posterior["posterior"]


def test_independent_team_effects_keep_a_proxy_s_slope_within_teams():
    """A proxy metric whose team means do not follow the KPI's (they follow the driver m1): with pooled
    team effects the between-team relation (about 0) pulls its slope down; with independent ones the
    posterior mean is the within-team sample slope (no measurement noise to speak of) up to Monte Carlo
    error, about 0.05 posterior sd here (docs: checks.md, "The inverse-Wishart latent prior")."""
    import warnings

    import numpy as np

    import bayes_cmma as bc
    from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates, within_team_slopes
    from bayes_cmma.errors import ConvergenceWarning

    truth = candidate_truth(0.3, "near_tie")
    data = simulate_candidates(np.random.default_rng([2026, 0]), truth, metric_corr=0.3, n_trials=20,
                               se_range=(0.01, 0.02))
    sample = within_team_slopes(data, truth.metrics)[1][2]
    gap = {}
    for team_effects in ("auto", "independent"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 1000 draws: R-hat of pi_sd may pass 1.01
            fit = bc.fit(data, "y", ["m3"], model=replace_spec(spec_for_degree(1), team_effects=team_effects),
                         seed=1, draws=500, tune=500, chains=2, cores=1)["m3"]
        b = fit.beta.values[..., 0]
        gap[team_effects] = (b.mean() - sample) / b.std()
    assert abs(gap["independent"]) < 0.15
    assert gap["auto"] < -0.15  # the pooled fit's pull, which the option removes
