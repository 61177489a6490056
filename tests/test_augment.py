"""Causal data augmentation: the DAG parser, the weights against closed forms, the limits, bad input."""

import numpy as np
import pandas as pd
import pytest

from bayes_cmma.augmentation.augment import (
    WEIGHT,
    AugmentationError,
    Categorical,
    Gaussian,
    augment,
    make_dag,
    parse_dag,
)
from bayes_cmma.errors import DataError


def _chain(n=25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 2 * x + rng.normal(size=n)
    z = np.sin(y) + 0.3 * rng.normal(size=n)
    return pd.DataFrame({"x": x, "y": y, "z": z})


def _conditional(values, h):
    """Row-normalised Gaussian kernel matrix: P[a, r] = P(next value of row r | parent value of row a)."""
    k = np.exp(-0.5 * ((values[:, None] - values[None, :]) / h) ** 2)
    return k / k.sum(axis=1, keepdims=True)


def test_parse_dag_order_parents_and_isolated_nodes():
    dag = parse_dag("team -> ndcg; ndcg->gmv\n team -> gmv; other")
    assert dag.order == ("team", "ndcg", "gmv", "other")
    assert dag.parents == {"team": (), "ndcg": ("team",), "gmv": ("ndcg", "team"), "other": ()}
    assert dag.roots == ["team", "other"]
    assert parse_dag("a -> b -> c").edges == [("a", "b"), ("b", "c")]
    # a child named before its parent still comes after it
    assert parse_dag("b -> c; a -> b").order == ("a", "b", "c")
    assert parse_dag(str(dag)).parents == dag.parents


@pytest.mark.parametrize(("text", "message"), [
    ("a -> b; b -> c; c -> a", r"cycle: a -> b -> c -> a"),
    ("a -> a", "self-loop"),
    ("a -> ; b", "empty variable name"),
    (" ; ", "DAG is empty"),
])
def test_bad_dags(text, message):
    with pytest.raises(DataError, match=message):
        parse_dag(text)


def test_full_enumeration_equals_the_factorisation():
    """With theta tiny every path is kept: weighted means equal the kernel factorisation's closed form."""
    df = _chain()
    out = augment(df, "x -> y -> z", theta=1e-300)
    info = out.attrs["augmentation"]
    n = len(df)
    assert len(out) == n**3 and info["retained_mass"] == pytest.approx(1.0)
    assert out[WEIGHT].sum() == pytest.approx(1.0)
    p_y = _conditional(df["x"].to_numpy(), info["bandwidths"]["x"])
    p_z = _conditional(df["y"].to_numpy(), info["bandwidths"]["y"])
    assert np.average(out["y"], weights=out[WEIGHT]) == pytest.approx((p_y @ df["y"]).mean(), rel=1e-10)
    assert np.average(out["z"], weights=out[WEIGHT]) == pytest.approx((p_y @ p_z @ df["z"]).mean(), rel=1e-10)
    # each path's weight is 1/n times its two conditional probabilities
    i = {c: {v: k for k, v in enumerate(df[c])} for c in df}
    row = out.iloc[123]
    a, r, s = i["x"][row["x"]], i["y"][row["y"]], i["z"][row["z"]]
    assert row[WEIGHT] == pytest.approx(p_y[a, r] * p_z[r, s] / n, rel=1e-10)


def test_silverman_bandwidth():
    x = _chain()["x"].to_numpy()
    iqr = np.subtract(*np.percentile(x, [75, 25]))
    assert Gaussian().bandwidth_for(x) == pytest.approx(0.9 * min(x.std(ddof=1), iqr / 1.349) * len(x) ** -0.2)
    assert Gaussian().bandwidth_for(np.ones(5)) == 1.0
    assert Gaussian(0.3).bandwidth_for(x) == 0.3


def test_threshold_prunes_on_the_weight_relative_to_the_root():
    df = _chain()
    n = len(df)
    theta = 1e-3
    out = augment(df, "x -> y -> z", theta=theta)
    info = out.attrs["augmentation"]
    assert 0 < info["retained_mass"] < 1
    full = augment(df, "x -> y -> z", theta=1e-300)
    kept = full[full[WEIGHT] * n > theta]  # the same paths, before renormalisation
    assert len(out) == len(kept)
    np.testing.assert_allclose(np.sort(out[WEIGHT]), np.sort(kept[WEIGHT] / kept[WEIGHT].sum()))


def test_blocks_do_not_change_the_result():
    df = _chain(40)
    a = augment(df, "x -> y -> z", theta=1e-4)
    b = augment(df, "x -> y -> z", theta=1e-4, block_cells=7 * 40)
    pd.testing.assert_frame_equal(a, b)


def test_categories_condition_exactly_and_duplicates_merge():
    df = pd.DataFrame({"team": ["a", "a", "a", "b", "b"], "m": [1.0, 2.0, 3.0, 10.0, 20.0]})
    out = augment(df, "team -> m", theta=1e-9)
    # team 'a' rows merge to one root of weight 3/5, each of its 3 metric values 1/3 of that
    expected = pd.DataFrame({"team": ["a"] * 3 + ["b"] * 2, "m": [1.0, 2.0, 3.0, 10.0, 20.0],
                             WEIGHT: [0.2] * 5})
    pd.testing.assert_frame_equal(out.sort_values(["team", "m"]).reset_index(drop=True), expected)
    assert out.attrs["augmentation"]["rows_per_step"] == {"team": 2, "m": 5}
    # with smoothing, a team borrows the other team's values
    smooth = augment(df, "team -> m", theta=1e-9, kernels={"team": Categorical(0.5)})
    assert len(smooth) == 10
    w = smooth.set_index(["team", "m"])[WEIGHT]
    # P(team a) = 3/5; P(m = 10 | a) = kernel 0.5 on 2 b rows / (0.5 * 3 + 0.5 * 2)
    assert w[("a", 10.0)] == pytest.approx(0.6 * 0.5 / 2.5)


def test_a_categorical_child_sums_its_equal_values_before_pruning():
    df = pd.DataFrame({"x": np.arange(6.0), "c": ["u", "v", "u", "v", "u", "v"]})
    # every x row sees all six c values: 'u' and 'v' each 1/2, though each observed row is < 1/4
    out = augment(df, "x -> c", theta=0.25, kernels={"x": Gaussian(1e6)})
    assert len(out) == 12 and out[WEIGHT].to_numpy() == pytest.approx(np.full(12, 1 / 12))


def test_independent_roots_follow_the_factorisation():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [5.0, 6.0, 7.0]})
    joint = augment(df, "a; b")
    assert len(joint) == 3  # the observed pairs
    ind = augment(df, "a; b", roots="independent")
    assert len(ind) == 9 and ind[WEIGHT].to_numpy() == pytest.approx(np.full(9, 1 / 9))


def test_sampled_augmentation_matches_the_factorisation():
    df = _chain()
    out = augment(df, "x -> y -> z", method="sample", size=60_000, seed=3)
    info = out.attrs["augmentation"]
    p_y = _conditional(df["x"].to_numpy(), info["bandwidths"]["x"])
    p_z = _conditional(df["y"].to_numpy(), info["bandwidths"]["y"])
    exact = (p_y @ p_z @ df["z"]).mean()
    se = df["z"].std() / np.sqrt(len(out))
    assert abs(out["z"].mean() - exact) < 4 * se
    assert len(out) == 60_000 and out[WEIGHT].sum() == pytest.approx(1.0)
    again = augment(df, "x -> y -> z", method="sample", size=60_000, seed=3)
    pd.testing.assert_frame_equal(out, again)


def test_size_limit_and_nothing_left_are_clear_errors():
    df = _chain(30)
    with pytest.raises(AugmentationError, match=r"more than max_rows = 1,000; raise theta \(now 1e-06\)"):
        augment(df, "x -> y -> z", theta=1e-6, max_rows=1000)
    with pytest.raises(AugmentationError, match="no augmented row survived variable 'z'.*lower theta"):
        augment(df, "x -> y -> z", theta=0.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dag": "x -> yy"}, r"DAG variable 'yy' is not a column of the data \(columns: x, y, z\). Did you mean 'y'\?"),
    ({"theta": 0}, r"theta must be a number in \(0, 1\)"),
    ({"theta": 1.5}, r"theta must be a number in \(0, 1\)"),
    ({"roots": "some"}, "roots must be 'joint' or 'independent'"),
    ({"method": "magic"}, "method must be 'threshold' or 'sample'"),
    ({"method": "sample", "size": 0}, "size must be a positive integer"),
    ({"kernels": {"q": "gaussian"}}, "kernels given for 'q', which is not a DAG variable"),
    ({"kernels": {"x": "epanechnikov"}}, "unknown kernel 'epanechnikov'"),
    ({"kernels": {"x": Gaussian(-1.0)}}, "bandwidth must be a positive number"),
    ({"kernels": {"x": Categorical(1.0)}}, r"smoothing must be in \[0, 1\)"),
])
def test_bad_arguments(kwargs, message):
    kwargs = {"dag": "x -> y -> z", **kwargs}
    with pytest.raises(DataError, match=message):
        augment(_chain(), **kwargs)


def test_bad_data():
    df = _chain()
    with pytest.raises(DataError, match="column 'y' has 2 missing value"):
        augment(df.assign(y=df["y"].where(df.index > 1)), "x -> y")
    with pytest.raises(DataError, match="named 'weight'"):
        augment(df.rename(columns={"z": "weight"}), "x -> weight")
    with pytest.raises(DataError, match="Gaussian kernel needs a numeric column"):
        augment(df.assign(x=df["x"].astype(str)), "x -> y", kernels={"x": "gaussian"})
    with pytest.raises(DataError, match="at least 2 rows"):
        augment(df.iloc[:1], "x -> y")
    with pytest.raises(DataError, match="cycle"):
        make_dag([("x", "y"), ("y", "x")])


def test_public_names():
    import bayes_cmma as bc
    import bayes_cmma.augmentation.admgda

    assert bc.augment is augment and callable(bc.augment) and bc.parse_dag is parse_dag
