"""nutpie's compiled model, with its two C callbacks cached on disk (docs: scale.md).

nutpie samples through two C callbacks (the log density with its gradient, and the expansion of a
point into the stored variables) that numba compiles around PyTensor's numba function of the graph.
PyTensor caches its own functions on disk, but nutpie's callbacks are closures that numba cannot
cache, and compiling them is most of a compile: numba links PyTensor's code into each callback and
LLVM optimises it all again, 6-7 s per process for the example's model against about 0.1 s to
load it (``benchmarks/compile_breakdown.py``).

:func:`compile_model` builds the same ``nutpie.CompiledPyMCModel`` as
``nutpie.compile_pymc_model(model, var_names=...)`` (same graphs, same initial points), with
callbacks generated as source code and cached in PyTensor's numba cache folder under a key that
hashes everything they are made of: their source, PyTensor's cache keys of the two functions they
call, and the layout of the data they read. Their arithmetic agrees with nutpie's callbacks to the
last bit or two (LLVM rounds a few operations differently once they are built apart), so draws
agree with nutpie's compile in distribution, not bit for bit; from a fresh compile or from the
cache they are bit-identical. It uses nutpie's internal helpers (``nutpie.compile_pymc._make_functions``,
the model class and its user-data record); if those are missing or changed (another nutpie
version), it falls back to ``nutpie.compile_pymc_model`` (same model, slower compile).
``tests/test_callbacks.py`` checks that both agree.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

#: Bump when the generated callbacks change in a way their source does not show.
_VERSION = 1


@intrinsic
def _as_voidptr(typingctx: Any, src: Any) -> Any:
    """A void pointer from an integer address (inside the generated callbacks)."""
    sig = types.voidptr(src)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


def _field_offsets(dtype: np.dtype, base: int = 0) -> dict[tuple[str, ...], int]:
    """Byte offset of every leaf field of a nested record dtype, keyed by its path."""
    out: dict[tuple[str, ...], int] = {}
    for name, (sub, offset, *_) in dtype.fields.items():
        if sub.fields is not None:
            out.update({(name, *k): v for k, v in _field_offsets(sub, base + offset).items()})
        else:
            out[(name,)] = base + offset
    return out


def _reads(user_data: np.ndarray, keys: list[str], shared_data: dict[str, np.ndarray]) -> tuple[list[str], str]:
    """Source lines that view each shared array from nutpie's user data (a record of uint64)."""
    offsets = _field_offsets(user_data.dtype)
    if any(v % 8 for v in offsets.values()) or user_data.dtype.itemsize % 8:
        raise _Unsupported("nutpie's user data is not a record of 64-bit fields")
    lines, layout = [], []
    for i, key in enumerate(keys):
        arr = shared_data[key]
        if ("shared", "data", key) not in offsets or ("shared", "shape", key) not in offsets:
            raise _Unsupported(f"nutpie's user data has no field for {key}")
        data = offsets[("shared", "data", key)] // 8
        shape = offsets[("shared", "shape", key)] // 8
        dims = "".join(f"int(ud[{shape + j}]), " for j in range(arr.ndim))
        dtype = np.dtype(arr.dtype).name
        lines.append(f"        a{i} = carray(as_voidptr(ud[{data}]), ({dims}), np.{dtype})")
        layout.append(f"{data}:{shape}:{arr.ndim}:{dtype}")
    return lines, ";".join(layout)


_LOGP_SRC = """
def logp_callback(dim, x_, out_, logp_, user_data_):
    if dim != {n_dim}:
        return -1
    try:
        ud = carray(user_data_, ({n_words},), np.uint64)
{reads}
        x = carray(x_, ({n_dim},))
        out = carray(out_, ({n_dim},))
        logp = carray(logp_, ())
        logp_val, grad = inner(x{args})
        logp[()] = logp_val
        out[...] = grad
        if not np.all(np.isfinite(out)):
            return 3
        if not np.isfinite(logp_val):
            return 4
    except Exception:
        return 1
    return 0
"""

_EXPAND_SRC = """
def expand_callback(dim, expanded, x_, out_, user_data_):
    if dim != {n_dim}:
        return -1
    if expanded != {n_expanded}:
        return -1
    try:
        ud = carray(user_data_, ({n_words},), np.uint64)
{reads}
        x = carray(x_, ({n_dim},))
        out = carray(out_, ({n_expanded},))
        (values,) = inner(x{args})
        out[...] = values
    except Exception:
        return -2
    return 0
"""


def _callback(template: str, fn_pt: Any, signature: Any, user_data: np.ndarray, shared_var_keys: dict,
              shared_data: dict, **fmt: int) -> Any:
    """Generate, and compile or load from PyTensor's numba cache, one C callback around ``fn_pt``."""
    import numba
    from pytensor.configdefaults import config
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS, compile_numba_function_src

    inner = fn_pt.vm.jit_fn
    keys = [shared_var_keys[var] for var in fn_pt.get_shared()]
    reads, layout = _reads(user_data, keys, shared_data)
    src = template.format(n_words=user_data.dtype.itemsize // 8, reads="\n".join(reads),
                          args="".join(f", a{i}" for i in range(len(keys))), **fmt)
    name = src.split("def ", 1)[1].split("(", 1)[0]
    inner_key = CACHED_SRC_FUNCTIONS.get(getattr(inner, "py_func", None))
    cache_key = None
    if inner_key is not None and config.numba__cache:  # PyTensor caches the inner function: cache the callback
        text = "\n".join([str(_VERSION), numba.__version__, inner_key, layout, src])
        cache_key = "bayes_cmma_" + hashlib.sha256(text.encode()).hexdigest()
    env = {"__name__": __name__, "np": np, "carray": numba.carray, "as_voidptr": _as_voidptr, "inner": inner}
    py_func = compile_numba_function_src(src, name, env, cache_key=cache_key)
    with warnings.catch_warnings():
        # the same message nutpie silences: only when PyTensor could not cache the inner function
        warnings.filterwarnings("ignore", message="Cannot cache compiled function .* as it uses dynamic globals",
                                category=numba.NumbaWarning)
        if cache_key is None:
            return numba.cfunc(signature)(py_func)
        try:
            return numba.cfunc(signature, cache=True)(py_func)
        except Exception:  # an unreadable cache entry: compile afresh, as without a cache
            return numba.cfunc(signature)(compile_numba_function_src(src, name, env))


def _nutpie_helpers() -> tuple | None:
    """nutpie's internal helpers that :func:`compile_model` uses, or None if this nutpie lacks them."""
    try:
        from nutpie.compile_pymc import (
            CompiledPyMCModel,
            _make_functions,
            _prepare_dims_and_coords,
            _wrap_with_lock,
            make_user_data,
        )
    except ImportError:
        return None
    import dataclasses
    import inspect

    if not dataclasses.is_dataclass(CompiledPyMCModel):
        return None
    fields = dataclasses.fields(CompiledPyMCModel)
    names = {f.name for f in fields}
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not (_MAKE_FUNCTIONS_ARGS <= set(inspect.signature(_make_functions).parameters)
            and required <= _MODEL_FIELDS <= names):
        return None
    return CompiledPyMCModel, _make_functions, _prepare_dims_and_coords, _wrap_with_lock, make_user_data


#: What :func:`compile_model` passes to nutpie's helpers (checked, so that another nutpie falls back).
_MAKE_FUNCTIONS_ARGS = {"model", "mode", "compute_grad", "join_expanded", "pymc_initial_point_fn", "var_names"}
_MODEL_FIELDS = {"_n_dim", "dims", "_coords", "_shapes", "compiled_logp_func", "compiled_expand_func",
                 "initial_point_func", "shared_data", "shared_var_keys", "user_data", "n_expanded", "shape_info",
                 "logp_func", "expand_func", "reparameterized_names"}


class _Unsupported(Exception):
    """nutpie's user data are not laid out as :func:`_reads` expects (another nutpie)."""


def compile_model(model: Any, var_names: list[str]) -> Any:
    """``nutpie.compile_pymc_model(model, var_names=var_names)``, with its callbacks cached on disk,
    compiled without numba's fastmath (so a fresh compile and a cache load compute the same bits).

    Parameters
    ----------
    model : pymc.Model
    var_names : list of str
        The variables to store in the trace.

    Returns
    -------
    nutpie.compile_pymc.CompiledPyMCModel
    """
    from pytensor import config

    # Without fastmath: with it, LLVM may reassociate differently when PyTensor's numba functions are
    # compiled in this process than when they are loaded from its disk cache, so a first (cold) process
    # drew other draws than every later one from the same seed (docs: scale.md).
    with config.change_flags(numba__fastmath=False):
        return _compile_model(model, var_names)


def _compile_model(model: Any, var_names: list[str]) -> Any:
    import nutpie

    helpers = _nutpie_helpers()
    if helpers is None:  # another nutpie: its own compile (same model, slower)
        return nutpie.compile_pymc_model(model, var_names=var_names)
    CompiledPyMCModel, _make_functions, _prepare_dims_and_coords, _wrap_with_lock, make_user_data = helpers
    import numba
    from pymc.initial_point import make_initial_point_fn

    # as nutpie.compile_pymc_model with its defaults (backend numba, support_point initial values jittered)
    initial_point_fn = _wrap_with_lock(make_initial_point_fn(
        model=model, overrides=None, default_strategy="support_point", jitter_rvs=set(model.free_RVs),
        return_transformed=True))
    n_dim, n_expanded, logp_fn_pt, expand_fn_pt, initial_point_fn, shape_info, reparameterized = _make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=initial_point_fn,
        var_names=var_names)
    shared_data: dict[str, np.ndarray] = {}
    shared_var_keys: dict[Any, str] = {}
    for i, val in enumerate(dict.fromkeys([*logp_fn_pt.get_shared(), *expand_fn_pt.get_shared()])):
        key = f"shared{i}"  # nutpie uses random names; fixed ones keep the callbacks' source, and cache key, stable
        shared_data[key] = np.array(val.get_value(), order="C", copy=True)
        shared_data[key].flags.writeable = False
        shared_var_keys[val] = key
    user_data = make_user_data(shared_var_keys, shared_data)
    T = numba.types
    logp_sig = T.int64(T.uint64, T.CPointer(T.double), T.CPointer(T.double), T.CPointer(T.double), T.voidptr)
    expand_sig = T.int64(T.uint64, T.uint64, T.CPointer(T.double), T.CPointer(T.double), T.voidptr)
    try:
        logp_cb = _callback(_LOGP_SRC, logp_fn_pt, logp_sig, user_data, shared_var_keys, shared_data, n_dim=n_dim)
        expand_cb = _callback(_EXPAND_SRC, expand_fn_pt, expand_sig, user_data, shared_var_keys, shared_data,
                              n_dim=n_dim, n_expanded=n_expanded)
    except _Unsupported:
        return nutpie.compile_pymc_model(model, var_names=var_names)
    dims, coords = _prepare_dims_and_coords(model, shape_info, reparameterized)
    return CompiledPyMCModel(
        _n_dim=n_dim,
        dims=dims,
        _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info, strict=True)},
        compiled_logp_func=logp_cb,
        compiled_expand_func=expand_cb,
        initial_point_func=initial_point_fn,
        shared_data=shared_data,
        shared_var_keys=shared_var_keys,
        user_data=user_data,
        n_expanded=n_expanded,
        shape_info=shape_info,
        logp_func=logp_fn_pt,
        expand_func=expand_fn_pt,
        reparameterized_names=reparameterized,
    )
