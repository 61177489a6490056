"""Model specs: bundled files load; bad specs name the key and suggest a fix."""

import pytest

import bayes_cmma as bc
from bayes_cmma.errors import SpecError
from bayes_cmma.fitting.spec import parse_spec


@pytest.mark.parametrize(("name", "degree"), [("linear", 1), ("quadratic", 2), ("cubic", 3)])
def test_bundled_specs(name, degree):
    spec = bc.load_spec(name)
    assert spec.degree == degree
    assert spec.priors["beta_std"].dist == "normal"
    assert spec.sampler["adaptation"] == "low_rank"
    assert not spec.within_trial_correlation_given


def test_user_file_overrides_defaults(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('degree = 2\n[priors]\nresidual_sd = { dist = "exponential", lam = 2.0 }\n'
                 "[measurement]\nwithin_trial_correlation = 0.4\n")
    spec = bc.load_spec(p)
    assert spec.degree == 2 and spec.priors["residual_sd"].params == {"lam": 2.0}
    assert spec.within_trial_correlation == 0.4 and spec.within_trial_correlation_given
    p.write_text('degree = 1\nteam_effects = "independent"\n')
    assert bc.load_spec(p).team_effects == "independent"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"degree": 2, "prior": {}}, "unknown key 'prior'.*Did you mean 'priors'"),
        ({"degree": 2, "priors": {"betastd": {"dist": "normal", "sigma": 1}}}, "unknown key 'betastd'.*'beta_std'"),
        ({"degree": 2, "priors": {"pi_sd": {"dist": "normal", "sigma": 1}}}, "pi_sd: dist 'normal' is not allowed"),
        ({"degree": 2, "priors": {"beta_std": {"dist": "normal", "sigma": -1}}}, "beta_std.sigma must be > 0"),
        ({"degree": 2, "priors": {"beta_std": {"dist": "normal", "sgima": 1}}}, "unknown key 'sgima'.*'sigma'"),
        ({"degree": 2, "priors": {"beta_std": {"dist": "studentt", "sigma": 1}}}, "needs parameter 'nu'"),
        ({"priors": {}}, "'degree' is required"),
        ({"degree": 0}, "integer from 1 to 5"),
        ({"degree": 2, "measurement": {"within_trial_correlation": 1.0}}, "strictly between -1 and 1"),
        ({"degree": 2, "sampler": {"adaptation": "dense"}}, "adaptation must be one of"),
        ({"degree": 2, "sampler": {"draws": 0}}, "draws must be a positive integer"),
        ({"degree": 2, "team_effects": "noncentred"}, "team_effects must be one of.*Did you mean 'non_centred'"),
        ({"degree": 2, "team_effects": "indepedent"}, "team_effects must be one of.*Did you mean 'independent'"),
        ({"degree": 2, "team_efects": "centred"}, "unknown key 'team_efects'.*'team_effects'"),
    ],
)
def test_bad_spec(raw, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(raw, source="test.toml")


def test_unknown_model_name_and_bad_toml(tmp_path):
    with pytest.raises(SpecError, match="neither a bundled model.*Did you mean 'cubic'"):
        bc.load_spec("cubc")
    p = tmp_path / "bad.toml"
    p.write_text("degree = = 2")
    with pytest.raises(SpecError, match="not valid TOML"):
        bc.load_spec(p)
