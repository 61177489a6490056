"""One SBC simulation refitted with more chains: the truth, and each chain's posterior mean and sd.

For a fit that ``calibrate`` recorded as not converged (low ESS), this shows whether the chains
sit in different modes. The data set is regenerated exactly (``calibration.simulations``).

Usage: ``python benchmarks/sbc_inspect.py --model linear --seed 2019 --sim 114``
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from bayes_cmma.calibration import _scalars, _with_team_effects, simulations
from bayes_cmma.fitting import resolve_spec
from bayes_cmma.model import Standardised, compiled_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cubic")
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--sim", type=int, required=True)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--team-effects", default="non_centred", choices=["centred", "non_centred"])
    args = ap.parse_args()
    import nutpie

    spec = resolve_spec(int(args.model) if args.model.isdigit() else args.model)
    P = spec.degree
    with warnings.catch_warnings():  # the prior draws: PyMC's note on the likelihood Potential
        warnings.filterwarnings("ignore", message="The effect of Potentials", category=UserWarning)
        *_, (_, truth, design) = simulations(spec, args.sim + 1, seed=args.seed)  # the data sets in order
    teams = len(design.teams)
    true = _scalars({k: np.asarray(v) for k, v in truth.items()}, P, teams)
    noise = float(design.S[:, 1, 1].mean())
    omega2 = float(true["metric_sd[1]"]) ** 2
    print(f"# SBC simulation {args.sim} of model {spec.name!r}, seed {args.seed}\n")
    print(f"True reliability of the metric: {omega2 / (omega2 + noise):.3f}; "
          f"sd of the simulated KPI ATEs: {design.z[:, 0].std():.1f}\n")
    s = _with_team_effects(spec, args.team_effects)
    compiled, _ = compiled_model(s, design, Standardised(design.z, design.S, 1.0, np.eye(P)))
    trace = nutpie.sample(compiled, draws=500, tune=500, chains=args.chains, cores=2, seed=args.seed + args.sim,
                          progress_bar=False, target_accept=float(s.sampler["target_accept"]))
    post = trace["posterior"].to_dataset()
    names = list(true)
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    print("| truth | " + " | ".join(f"{float(true[n]):.4g}" for n in names) + " |")
    for c in range(args.chains):
        est = _scalars({k: post[k].values[c] for k in post.data_vars}, P, teams)
        div = int(trace["sample_stats"]["diverging"].values[c].sum())
        cells = " | ".join(f"{np.mean(est[n]):.4g} ({np.std(est[n]):.2g})" for n in names)
        print(f"| chain {c} ({div} div.) | {cells} |")
    print("\nCells: posterior mean (sd) of each chain, 500 draws after 500 warm-up, "
          f"team effects {args.team_effects}.")


if __name__ == "__main__":
    main()
