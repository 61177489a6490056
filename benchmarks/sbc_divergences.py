"""Where the SBC fits diverge: divergent transitions against the true (prior-drawn) parameters.

Reads the committed ranks of ``bayes-cmma calibrate`` (one divergence count per simulation),
redraws the same prior draws (same spec, template and seed as ``calibrate``'s defaults; no fitting)
and prints the Spearman correlation of the divergence count with each scale parameter, and the
share of fits with divergences by quartile of the true pi_sd.

Usage: ``python benchmarks/sbc_divergences.py [--model linear] [--ranks benchmarks/results/sbc_linear/ranks.csv]``
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from bayes_cmma.checks.calibration import _prior_draws, _template
from bayes_cmma.fitting.bayes import resolve_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="linear")
    ap.add_argument("--ranks", default="benchmarks/results/sbc_linear/ranks.csv")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--teams", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2018)
    args = ap.parse_args()
    spec = resolve_spec(args.model)
    div = pd.read_csv(args.ranks).drop_duplicates("sim").set_index("sim")["divergences"].sort_index()
    design, S = _template(args.trials, args.teams, spec, args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = _prior_draws(spec, design, S, len(div), args.seed)
    truth = pd.DataFrame({"divergences": div.to_numpy(), "pi_sd": prior["pi_sd"],
                          "residual_sd": prior["residual_sd"],
                          "metric_sd[1]": np.abs(np.asarray(prior["metric_chol"])[:, 0])})
    print(f"{args.ranks}: {len(div)} simulations, {int((div > 0).sum())} with divergences")
    print("Spearman correlation with the divergence count:")
    for name, r in truth.corr(method="spearman")["divergences"].drop("divergences").items():
        print(f"  {name}: {r:+.2f}")
    q = pd.qcut(truth["pi_sd"], 4)
    share = truth.groupby(q, observed=True)["divergences"].agg(lambda x: (x > 0).mean())
    print("share of fits with divergences by quartile of the true pi_sd:")
    for interval, v in share.items():
        print(f"  {interval}: {v:.0%}")


if __name__ == "__main__":
    main()
