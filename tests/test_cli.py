"""The command line on bad input: one 'error:' line naming the culprit, exit 2, nothing written."""

import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from cli_output import unwrap

import bayes_cmma as bc
from bayes_cmma.cli import main


@pytest.fixture
def files(tmp_path, example):
    ds = example.trials.dataset
    rows = []
    for t, team in zip(ds["trial"].values, ds["team"].values, strict=True):
        for q in ds["quantity"].values:
            rows.append({"trial": t, "team": team, "quantity": q,
                         "estimate": float(ds["estimate"].sel(trial=t, quantity=q)),
                         "std_error": float(ds["std_error"].sel(trial=t, quantity=q))})
    trials = pd.DataFrame(rows)
    cov = pd.read_csv(resources.files("bayes_cmma.datasets") / "example_cov.csv")
    return tmp_path, trials, cov


def _write(tmp_path, trials, cov=None):
    t = tmp_path / "trials.csv"
    trials.to_csv(t, index=False)
    args = [str(t)]
    if cov is not None:
        c = tmp_path / "cov.csv"
        cov.to_csv(c, index=False)
        args += ["--cov", str(c)]
    return args


def _run_bad(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    code = main([*argv, "--out", str(out)] if argv[0] == "fit" else argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in unwrap(err).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def _metric_args():
    return ["--kpi", "gmv", "--metric", "ndcg", "--metric", "mrr", "--degree", "2"]


CASES = {
    "missing column": (lambda t, c: (t.drop(columns="estimate"), c), [], "missing column.*'estimate'"),
    "non-numeric estimate": (lambda t, c: (t.assign(estimate=t["estimate"].astype(str).where(t.index != 7, "abc")), c),
                             [], "non-numeric or non-finite value 'abc' at trial 'T001'"),
    "non-finite estimate": (lambda t, c: (t.assign(estimate=t["estimate"].where(t.index != 7, np.inf)), c), [],
                            "non-finite"),
    "zero std_error": (lambda t, c: (t.assign(std_error=t["std_error"].where(t.index != 12, 0.0)), c), [],
                       "std_error must be a positive finite number.*trial 'T002'"),
    "missing std_error": (lambda t, c: (t.assign(std_error=t["std_error"].where(t.index != 12, np.nan)), c), [],
                          "std_error must be a positive finite number"),
    "duplicate": (lambda t, c: (pd.concat([t, t.iloc[[0]]]), c), [], "trial 'T001' has 2 rows for quantity 'gmv'"),
    "KPI reported by one trial": (lambda t, c: (t[(t["quantity"] != "gmv") | (t["trial"] == "T005")],
                                                c[((c["quantity_1"] != "gmv") & (c["quantity_2"] != "gmv"))
                                                  | (c["trial"] == "T005")]),
                                  [], "1 trial\\(s\\) report both the KPI 'gmv' and the metric 'ndcg'"),
    "kpi not in table": (lambda t, c: (t, c), ["--kpi", "revenue"], "KPI 'revenue' is not a quantity"),
    "metric not in table": (lambda t, c: (t, c), ["--metric", "ctr"], "metric 'ctr' is not a quantity"),
    "fewer trials than parameters": (lambda t, c: (t[t["trial"].isin(["T001", "T002", "T003", "T004", "T005"])],
                                                   c[c["trial"].isin(["T001", "T002", "T003", "T004", "T005"])]),
                                     [], "needs at least"),
    "covariance for unknown trial": (lambda t, c: (t, pd.concat([c, pd.DataFrame([{
        "trial": "T999", "quantity_1": "gmv", "quantity_2": "ndcg", "covariance": 0.0}])])), [],
        "trial 'T999' is not in the trial table"),
    "covariance for unknown quantity": (lambda t, c: (t, pd.concat([c, pd.DataFrame([{
        "trial": "T001", "quantity_1": "gmv", "quantity_2": "ctr", "covariance": 0.0}])])), [],
        "trial 'T001' has no estimate of quantity 'ctr'"),
    "covariance not positive definite": (lambda t, c: (t, c.assign(covariance=c["covariance"].where(
        ~((c["trial"] == "T010") & (c["quantity_1"] == "gmv") & (c["quantity_2"] == "ndcg")), 1.0))), [],
        "not positive definite for trial\\(s\\) 'T010'"),
    "at for a metric not fitted": (lambda t, c: (t, c), ["--at", "map=0.002"], "--at names metric 'map'"),
    "at not metric=value": (lambda t, c: (t, c), ["--at", "ndcg"], "not METRIC=VALUE"),
    "joint with a quadratic": (lambda t, c: (t, c), ["--joint"], "--joint fits linear DRFs; the model has degree 2"),
    "LKJ concentration without --joint": (lambda t, c: (t, c), ["--metric-corr-eta", "0.5"],
                                          "--metric-corr-eta is the joint model's LKJ concentration; it goes "
                                          "with --joint"),
    "latent prior without --joint": (lambda t, c: (t, c), ["--latent-prior", "lkj"],
                                     "--latent-prior is the joint model's prior; it goes with --joint"),
}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --at ndcg=VALUE for every metric"),
        (["--at", "ndcg=0.3", "--at", "mrr=0.2"], "give --kpi-baseline"),
        (["--at", "ndcg=0.3", "--at", "mrr=0", "--kpi-baseline", "100"], "positive metric levels; --at mrr=0"),
        (["tie", "--p-tie", "1.5", "--at", "ndcg=0.3", "--at", "mrr=0.2", "--kpi-baseline", "100"],
         "p_tie, the prior probability that the metrics tie, must be in \\[0, 1\\), got 1.5"),
        (["pooled", "--p-tie", "0.3", "--at", "ndcg=0.3", "--at", "mrr=0.2", "--kpi-baseline", "100"],
         "--p-tie is the tie prior's probability; it goes with --joint tie, not --joint pooled"),
        (["pooled", "--observational-bias-prior", "harmonic", "--at", "ndcg=0.3", "--at", "mrr=0.2",
          "--kpi-baseline", "100"],
         "--observational-bias-prior is the observational prior's setting; it goes with --joint observational, "
         "not --joint pooled"),
        (["tie", "--observational-parametrization", "centred", "--at", "ndcg=0.3", "--at", "mrr=0.2",
          "--kpi-baseline", "100"],
         "--observational-parametrization is the observational prior's setting; it goes with --joint "
         "observational, not --joint tie"),
        (["tie", "--metric-corr-eta", "0", "--at", "ndcg=0.3", "--at", "mrr=0.2", "--kpi-baseline", "100"],
         "--metric-corr-eta must be a positive number \\(1 = uniform over correlation matrices\\), got 0.0"),
        (["tie", "--metric-corr-eta", "nan", "--at", "ndcg=0.3", "--at", "mrr=0.2", "--kpi-baseline", "100"],
         "--metric-corr-eta must be a positive number"),
        (["pooled", "--latent-prior", "lkj", "--at", "ndcg=0.3", "--at", "mrr=0.2", "--kpi-baseline", "100"],
         "--latent-prior lkj goes with --joint independent or --joint tie, not --joint pooled"),
        (["pooled", "--latent-prior", "wishart", "--at", "ndcg=0.3", "--at", "mrr=0.2", "--kpi-baseline", "100"],
         "--latent-prior wishart goes with --joint independent or --joint tie, not --joint pooled"),
        (["tie", "--latent-prior", "wishart", "--metric-corr-eta", "0.5", "--at", "ndcg=0.3", "--at", "mrr=0.2",
          "--kpi-baseline", "100"],
         "--metric-corr-eta is an LKJ concentration; --latent-prior wishart has no LKJ prior"),
    ],
)
def test_fit_joint_bad_input(files, capsys, extra, message):
    tmp_path, trials, cov = files
    argv = ["fit", *_write(tmp_path, trials, cov), "--kpi", "gmv", "--metric", "ndcg", "--metric", "mrr",
            "--degree", "1", "--joint", *extra]
    _run_bad(capsys, tmp_path, argv, message)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--observational-slope", "ndcg=1", "--observational-slope", "ctr=2"],
      "--observational-slope names 'ctr', not a fitted metric; fitted metrics: ndcg, mrr"),
     (["--observational-slope", "ndcg=1"], r"no observational slope for metric\(s\) 'mrr'"),
     (["--observational-slope", "ndcg=1", "--observational-partial", "partial.csv"],
      "give the logs' slopes once: --observational-slope or --observational-partial"),
     (["--observational-slope", "ndcg=x"], "--observational-slope"),
     (["--observational-slope", "ndcg=0", "--observational-slope", "mrr=0"], "must be finite and not all 0"),
     (["--observational-slope", "ndcg=1", "one metric"], "needs 2 or more metrics; got only 'ndcg'")],
)
def test_fit_fusion_bad_input_stops_before_sampling(files, capsys, extra, message):
    tmp_path, trials, cov = files
    metric_args = _metric_args()
    if extra[-1] == "one metric":
        extra, metric_args = extra[:-1], ["--kpi", "gmv", "--metric", "ndcg", "--degree", "2"]
    argv = ["fit", *_write(tmp_path, trials, cov), *metric_args, *extra]
    _run_bad(capsys, tmp_path, argv, message)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_bad_input(case, files, capsys):
    tmp_path, trials, cov = files
    change, extra, message = CASES[case]
    t, c = change(trials, cov)
    argv = ["fit", *_write(tmp_path, t, c), *_metric_args(), *extra]
    _run_bad(capsys, tmp_path, argv, message)


def test_empty_file(tmp_path, capsys):
    (tmp_path / "trials.csv").write_text("")
    _run_bad(capsys, tmp_path, ["fit", str(tmp_path / "trials.csv"), "--kpi", "gmv", "--metric", "ndcg"],
             "is empty")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('degree = 2\n[priors]\nbeta_sd = { dist = "normal", sigma = 1.0 }\n', "unknown key 'beta_sd'.*'beta_std'"),
        ('degree = 2\n[priors]\npi_sd = { dist = "normal", sigma = 1.0 }\n', "pi_sd: dist 'normal' is not allowed"),
        ('degree = 2\n[priors]\nalpha = { dist = "normal", sigma = 0 }\n', "alpha.sigma must be > 0"),
    ],
)
def test_bad_spec_file(spec, message, files, capsys):
    tmp_path, trials, cov = files
    (tmp_path / "spec.toml").write_text(spec)
    argv = ["fit", *_write(tmp_path, trials, cov), "--kpi", "gmv", "--metric", "ndcg", "--model",
            str(tmp_path / "spec.toml")]
    _run_bad(capsys, tmp_path, argv, message)


def test_ols_command_prints_table_and_wald_tests(files, capsys):
    tmp_path, trials, cov = files
    code = main(["ols", *_write(tmp_path, trials, cov), "--kpi", "gmv", "--metric", "ndcg", "--degree", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ndcg^3" in out and "ndcg^2 = ndcg^3 = 0" in out and "ndcg = ndcg^2 = ndcg^3 = 0" in out


def test_ols_command_methods(files, capsys):
    """--method tc / liml print the errors-in-variables estimates (baselines.eiv); OLS says it ignores --cov."""
    from bayes_cmma.baselines.eiv import summary_estimate

    tmp_path, trials, cov = files
    paths = _write(tmp_path, trials, cov)
    for method, title in (("tc", "Total covariance"), ("liml", "LIML")):
        assert main(["ols", *paths, "--kpi", "gmv", "--metric", "ndcg", "--degree", "2", "--method", method,
                     "--within-trial-correlation", "0.3"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(title) and "sandwich covariance" in out and "coefficient" not in out
        r = summary_estimate(bc.read_trials(paths[0], paths[2]), "gmv", "ndcg", 2, method, 0.3)
        assert f"{r.beta.iloc[0]:.6g}" in out
    assert main(["ols", *paths, "--kpi", "gmv", "--metric", "ndcg"]) == 0
    assert "--cov and --within-trial-correlation do not change it" in capsys.readouterr().out
    _run_bad(capsys, tmp_path, ["ols", *paths, "--kpi", "gmv", "--metric", "ndcg", "--method", "tc",
                                "--within-trial-correlation", "1"], "strictly between -1 and 1")


def test_ols_command_bad_input(files, capsys, tmp_path):
    _, trials, cov = files
    _run_bad(capsys, tmp_path, ["ols", *_write(tmp_path, trials.drop(columns="quantity"), cov), "--kpi", "gmv",
                                "--metric", "ndcg"], "missing column.*'quantity'")


def _augment_input(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    frame = pd.DataFrame({"team": rng.choice(["A", "B"], 30), "ndcg": x, "gmv": 2 * x + rng.normal(size=30)})
    path = tmp_path / "trials_wide.csv"
    frame.to_csv(path, index=False)
    return path


def test_augment_command_writes_a_weighted_table(tmp_path, capsys):
    data = _augment_input(tmp_path)
    out = tmp_path / "aug.parquet"
    code = main(["augment", str(data), "--dag", "team->ndcg; ndcg->gmv; team->gmv", "--theta", "0.001",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    aug = pd.read_parquet(out)
    assert list(aug.columns) == ["team", "ndcg", "gmv", "weight"]
    assert aug["weight"].sum() == pytest.approx(1.0) and set(aug["team"]) == {"A", "B"}
    assert "30 rows ->" in captured.out and "probability mass" in captured.out


@pytest.mark.parametrize(("extra", "message"), [
    (["--dag", "team->ndcg; ndcg->team"], "DAG has a cycle: ndcg -> team -> ndcg"),
    (["--dag", "team->ndgc"], "DAG variable 'ndgc' is not a column.*Did you mean 'ndcg'"),
    (["--dag", "ndcg->gmv", "--theta", "2"], r"--theta must be a number in \(0, 1\)"),
    (["--dag", "ndcg->gmv", "--kernel", "ndcg"], "--kernel 'ndcg': write COLUMN=gaussian or COLUMN=categorical"),
    (["--dag", "ndcg->gmv", "--kernel", "team=categorical"], "kernels given for 'team', which is not a DAG"),
    (["--dag", "ndcg->gmv", "--theta", "1e-9", "--max-rows", "100"], "more than max_rows = 100"),
    (["--dag", "ndcg->gmv", "--theta", "0.999"], "no augmented row survived variable 'gmv'"),
])
def test_augment_command_bad_input(tmp_path, capsys, extra, message):
    data = _augment_input(tmp_path)
    out = tmp_path / "out"
    code = main(["augment", str(data), *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [ln for ln in unwrap(err).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["trials_wide.csv"]


def test_number_formats_of_the_terminal_output():
    from bayes_cmma.cli import format_estimate, format_p_value

    # one notation per row, 4 significant digits for the largest magnitude
    assert format_estimate(6516.2, 2650.4, 10380.7) == "6516 [2650, 10381]"
    assert format_estimate(-3.161e5, -6.095e5, -8.008e4) == "-316100 [-609500, -80080]"
    assert format_estimate(1.69e5, -7.951e5, 1.11e6) == "0.169 [-0.795, 1.110] x 1e6"
    assert format_estimate(0.0183, 0.01537, 0.02251) == "0.01830 [0.01537, 0.02251]"
    assert format_estimate(2.174, 2.08, 2.266, digits=3) == "2.17 [2.08, 2.27]"
    assert format_estimate(1.5e-5, 1.0e-5, 2.0e-5) == "1.500 [1.000, 2.000] x 1e-5"
    assert format_estimate(0.0, 0.0, 0.0) == "0.000 [0.000, 0.000]"
    assert format_p_value(0.0) == "< 1e-16" and format_p_value(3.2e-20) == "< 1e-16"
    assert format_p_value(0.0123) == "0.012"


def test_fit_joint_refuses_a_metric_named_joint():
    """Its posterior file would clash with joint.nc, the joint model's."""
    from bayes_cmma.cli import _check_joint
    from bayes_cmma.errors import BayesCMMAError

    with pytest.raises(BayesCMMAError, match="a metric named 'joint' would share joint.nc"):
        _check_joint(1, ["ndcg", "joint"], {"ndcg": 0.3, "joint": 0.2}, 100.0)


def test_fit_joint_options_pass_only_what_was_given():
    """``fit --joint`` hands fit_joint the options given on the command line and leaves the rest at its defaults."""
    from bayes_cmma.cli import build_parser, joint_options

    assert joint_options(p_tie=None, metric_corr_eta=None) == {}
    assert joint_options(p_tie=0.3, observational_bias_prior=None, metric_corr_eta=0.5) == {
        "p_tie": 0.3, "metric_corr_eta": 0.5}
    args = build_parser().parse_args(
        ["fit", "t.csv", "--kpi", "y", "--metric", "a", "--joint", "tie", "--metric-corr-eta", "0.5"])
    assert args.metric_corr_eta == 0.5
    assert args.latent_prior is None
    args = build_parser().parse_args(
        ["fit", "t.csv", "--kpi", "y", "--metric", "a", "--joint", "tie", "--latent-prior", "lkj"])
    assert args.latent_prior == "lkj"
    assert joint_options(latent_prior=args.latent_prior, p_tie=None) == {"latent_prior": "lkj"}


def test_fit_latent_prior_choices_are_the_models(capsys):
    """``fit --latent-prior`` offers exactly fit_joint's latent priors (the CLI spells them out to import lazily)."""
    from bayes_cmma.cli import build_parser
    from bayes_cmma.fitting.joint import LATENT_PRIORS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    offered = re.search(r"--latent-prior \{([^}]*)\}", capsys.readouterr().out)
    assert offered is not None
    assert tuple(offered.group(1).split(",")) == LATENT_PRIORS
    for choice in LATENT_PRIORS:
        args = build_parser().parse_args(
            ["fit", "t.csv", "--kpi", "y", "--metric", "a", "--joint", "tie", "--latent-prior", choice])
        assert args.latent_prior == choice
