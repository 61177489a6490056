"""nutpie's C callbacks built and cached by bayes_cmma (bayes_cmma.fitting.callbacks) against nutpie's own."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import numpy as np
import pymc as pm
import pytest

from bayes_cmma.fitting.callbacks import compile_model

_DOUBLE_P = ctypes.POINTER(ctypes.c_double)


def _model(K: int = 6, seed: int = 0) -> pm.Model:
    """A small model reading 0-D, 1-D int, 2-D and 3-D float data (the shapes the CMMA models pass)."""
    rng = np.random.default_rng(seed)
    with pm.Model(coords={"team": [0, 1]}) as model:
        idx = pm.Data("idx", rng.integers(0, 2, K))
        y = pm.Data("y", rng.normal(size=(K, 2)))
        S = pm.Data("S", np.broadcast_to(np.eye(2), (K, 2, 2)) * rng.uniform(0.5, 2, (K, 1, 1)))
        shift = pm.Data("shift", 0.25)
        loc = pm.Normal("loc", shift, 1, dims="team")
        sd = pm.HalfNormal("sd", 1)
        pm.Deterministic("scaled", 2 * loc, dims="team")
        var = S[:, 0, 0] + S[:, 1, 1] + sd**2
        pm.Potential("lik", (-0.5 * ((y[:, 0] + y[:, 1] - loc[idx]) ** 2) / var - 0.5 * pm.math.log(var)).sum())
    return model


def _logp(cm, x: np.ndarray) -> tuple[int, float, np.ndarray]:
    grad, logp = np.zeros_like(x), np.zeros(())
    rc = cm.compiled_logp_func.ctypes(len(x), x.ctypes.data_as(_DOUBLE_P), grad.ctypes.data_as(_DOUBLE_P),
                                      logp.ctypes.data_as(_DOUBLE_P), cm.user_data.ctypes.data)
    return rc, float(logp), grad


def _expand(cm, x: np.ndarray) -> tuple[int, np.ndarray]:
    out = np.zeros(cm.n_expanded)
    rc = cm.compiled_expand_func.ctypes(len(x), cm.n_expanded, x.ctypes.data_as(_DOUBLE_P),
                                        out.ctypes.data_as(_DOUBLE_P), cm.user_data.ctypes.data)
    return rc, out


@pytest.fixture(scope="module")
def compiled():
    import nutpie

    model = _model()
    return compile_model(model, ["loc", "sd", "scaled"]), nutpie.compile_pymc_model(model, var_names=["loc", "sd",
                                                                                                        "scaled"])


def _agree(ours, theirs, points) -> None:
    for x in points:
        rc, logp, grad = _logp(ours, x)
        rc_ref, logp_ref, grad_ref = _logp(theirs, x)
        assert rc == rc_ref == 0
        # same graph; LLVM may round the last bit differently once the callbacks are built apart
        np.testing.assert_allclose(logp, logp_ref, rtol=1e-13)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-12, atol=1e-14)
        (rc, out), (rc_ref, out_ref) = _expand(ours, x), _expand(theirs, x)
        assert rc == rc_ref == 0
        np.testing.assert_allclose(out, out_ref, rtol=1e-14)


def test_callbacks_compute_what_nutpies_compute(compiled):
    ours, theirs = compiled
    assert ours.compiled_logp_func.__qualname__ == "logp_callback"  # ours, not a fallback to nutpie's compile
    assert ours._n_dim == theirs._n_dim and ours.n_expanded == theirs.n_expanded
    assert ours.shape_info[0] == theirs.shape_info[0]
    np.testing.assert_array_equal(ours.initial_point_func(3), theirs.initial_point_func(3))
    rng = np.random.default_rng(1)
    _agree(ours, theirs, [rng.normal(size=ours._n_dim) for _ in range(3)])
    assert _logp(ours, np.full(ours._n_dim, 1e300))[0] != 0  # a non-finite density is reported, as nutpie's


def test_callbacks_read_swapped_data_of_another_size(compiled):
    ours, theirs = compiled
    rng = np.random.default_rng(2)
    K = 11
    swap = {"idx": rng.integers(0, 2, K), "y": rng.normal(size=(K, 2)),
            "S": np.broadcast_to(np.eye(2), (K, 2, 2)) * 3.0, "shift": np.asarray(-1.5)}
    ours2, theirs2 = ours.with_data(**swap), theirs.with_data(**swap)
    points = [rng.normal(size=ours._n_dim) for _ in range(2)]
    _agree(ours2, theirs2, points)
    assert _logp(ours2, points[0])[1] != _logp(ours, points[0])[1]  # the new data are read


def _in_new_process(code: str, env: dict[str, str] | None = None):
    """Run ``code`` (which compiles this module's model as ``cm``) in a new Python process (``env`` added to
    this one's); the JSON it prints last."""
    code = ("import json, warnings; warnings.simplefilter('ignore')\n"
            "import numpy as np\n"
            "from tests.test_callbacks import _model, _logp, _expand\n"
            "from bayes_cmma.fitting.callbacks import compile_model\n"
            "cm = compile_model(_model(), ['loc', 'sd', 'scaled'])\n" + code)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True,
                         env=os.environ | {"PYTHONPATH": root} | (env or {}))
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_callbacks_are_loaded_from_the_cache_in_a_new_process(compiled):
    hits = _in_new_process("print(json.dumps([cm.compiled_logp_func.cache_hits, cm.compiled_expand_func.cache_hits]))")
    assert hits == [1, 1]  # this module's fixture saved them


def test_a_first_compile_and_a_cache_load_compute_the_same_bits(tmp_path):
    # With numba's fastmath, a process that compiled PyTensor's functions itself (an empty compile
    # folder) computed other last bits than one that loaded them from the cache, so a user's first fit
    # drew other draws than every later one from the same seed.
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    env = {"PYTENSOR_FLAGS": ",".join(filter(None, [flags, f"base_compiledir={tmp_path}"]))}
    code = ("x = np.linspace(-0.7, 0.9, cm._n_dim)\n"
            "_, logp, grad = _logp(cm, x)\n"
            "print(json.dumps([cm.compiled_logp_func.cache_hits, logp.hex(), [g.hex() for g in grad],"
            " [e.hex() for e in _expand(cm, x)[1]]]))")
    cold, warm = _in_new_process(code, env), _in_new_process(code, env)
    assert (cold[0], warm[0]) == (0, 1)  # compiled, then loaded
    assert cold[1:] == warm[1:]


def test_an_unreadable_cache_entry_is_compiled_afresh(compiled, monkeypatch):
    import numba

    real = numba.cfunc

    def cfunc(sig, **kw):
        if kw.get("cache"):
            raise EOFError("truncated cache file")
        return real(sig, **kw)

    monkeypatch.setattr(numba, "cfunc", cfunc)
    cm = compile_model(_model(), ["loc", "sd", "scaled"])
    assert cm.compiled_logp_func.cache_hits == 0
    _agree(cm, compiled[1], [np.full(cm._n_dim, 0.3)])
    # a fresh compile and a new process's cache load compute the same bits (so the same draws)
    hits, logp, grad, expanded = _in_new_process(
        "x = np.linspace(-0.7, 0.9, cm._n_dim)\n"
        "_, logp, grad = _logp(cm, x)\n"
        "print(json.dumps([cm.compiled_logp_func.cache_hits, logp.hex(), [g.hex() for g in grad],"
        " [e.hex() for e in _expand(cm, x)[1]]]))")
    assert hits == 1
    x = np.linspace(-0.7, 0.9, cm._n_dim)
    _, logp_fresh, grad_fresh = _logp(cm, x)
    assert logp_fresh.hex() == logp
    assert [g.hex() for g in grad_fresh] == grad
    assert [e.hex() for e in _expand(cm, x)[1]] == expanded


def test_without_nutpies_helpers_it_is_nutpies_compile(compiled, monkeypatch):
    from bayes_cmma.fitting import callbacks

    monkeypatch.setattr(callbacks, "_nutpie_helpers", lambda: None)
    cm = compile_model(_model(), ["loc", "sd", "scaled"])
    assert type(cm.compiled_logp_func).__name__ == "CFunc"
    assert "logp_callback" not in cm.compiled_logp_func.__qualname__
    _agree(cm, compiled[1], [np.full(cm._n_dim, -0.2)])


def test_user_data_laid_out_otherwise_is_nutpies_compile(compiled, monkeypatch):
    from bayes_cmma.fitting import callbacks

    monkeypatch.setattr(callbacks, "_field_offsets", lambda dtype: {})  # no field where the callbacks look
    cm = compile_model(_model(), ["loc", "sd", "scaled"])
    assert "logp_callback" not in cm.compiled_logp_func.__qualname__
    _agree(cm, compiled[1], [np.full(cm._n_dim, 0.1)])
