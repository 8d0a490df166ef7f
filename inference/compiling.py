"""Trace a pair's tensor arithmetic once and compile it: what the compiled paths share.

Dynamo cannot compile Pyro's effect handlers, so the compiled paths
(:class:`inference.CompiledSVIStep`, ``compile=True`` of the evidence estimators) run the
pair once under ``make_fx`` with the owning module's parameters and buffers swapped for graph
inputs. The result is a plain graph of tensor operations from ``(parameters, arguments)`` to
tensors, the random draws included, which ``torch.compile`` turns into fused kernels. With
``torch._inductor.config.fallback_random`` set while compiling, the draws are those of the
eager code, so compiled and eager results agree up to float rounding.

What a trace freezes: the pair's Python control flow (it must not depend on the values of the
data or of the draws), and every tensor that is neither an argument nor a parameter or buffer
of the module. Of those, what the module and its submodules hold as attributes (settings
such as ``self._beta``, tensors such as ``self.noise = torch.tensor(0.5)``, also in lists,
dicts, distributions and plain objects such as a likelihood object) is part of a graph's key
(:func:`module_key`): rebinding or changing one traces anew. Globals and closures of the
pair's functions are not keyed: a trace keeps the values they had.
"""

from __future__ import annotations

import enum
import functools
import os
import traceback
import types
from collections.abc import Callable

import numpy as np
import pyro
import torch
import torch.utils._pytree as pytree
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils.stateless import _reparametrize_module

from .checks import validation_enabled
from .random_state import forked_rng


def handler_key() -> tuple:
    """What the active Pyro handlers bake into a trace (e.g. a plate's scale), hashable."""
    return tuple((type(h).__name__, tuple(sorted((k, v) for k, v in vars(h).items()
                                                  if isinstance(v, (int, float, str, bool)))))
                 for h in _PYRO_STACK)


def arguments_key(args: tuple, kwargs: dict) -> tuple:
    """What a trace bakes in of the arguments, hashable: their nesting (tuples, lists, dicts),
    the shape, dtype and device of each tensor, and numbers, strings and None as they are.
    Other values (a numpy array, a custom object) raise ``ValueError``: one trace would freeze
    them and nothing tells a later call's value apart."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    key = []
    for leaf in leaves:
        if torch.is_tensor(leaf):
            key.append(("tensor", tuple(leaf.shape), leaf.dtype, leaf.device))
        elif leaf is None or isinstance(leaf, (bool, int, float, str)):
            key.append((type(leaf).__name__, leaf))
        else:
            raise ValueError(f"a compiled path takes tensors, numbers and strings as the pair's "
                             f"arguments (nested in tuples, lists, dicts); got a "
                             f"{type(leaf).__name__}: convert it to a tensor or call without "
                             "compile")
    return (spec, tuple(key))


class _Held:
    """A tensor in a key, compared by identity and kept alive with the key: its ``id`` cannot
    then be reused by a later tensor while a graph keyed by it lives."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def __hash__(self) -> int:
        return id(self.tensor)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Held) and other.tensor is self.tensor


def _tensor_state(tensor: torch.Tensor) -> tuple:
    """A tensor's identity and state: the tensor itself (:class:`_Held`), its version counter
    (bumped by every in-place change), shape, dtype and device. An inference-mode tensor has
    no version counter: a snapshot of its values stands in for it."""
    try:
        version = tensor._version
    except RuntimeError:  # "Inference tensors do not track version counter"
        version = ("values", bytes(tensor.detach().cpu().clone().untyped_storage()))
    return (_Held(tensor), version, tuple(tensor.shape), tensor.dtype, tensor.device)


# nn.Module's own bookkeeping (parameters and buffers are graph inputs, submodules are walked,
# hooks are functions, ``training`` is keyed on its own), and a PyroModule's cache of the
# values its parameters took in the current call: no setting of a user's there.
_SKIPPED = frozenset(vars(torch.nn.Module())) | {"_pyro_context"}
# Arrays up to this many elements are keyed by their values, larger ones by identity.
_ARRAY_VALUES_UP_TO = 4096


def _value_key(value, registered: set[int], depth: int = 0):
    """What a trace reads of an attribute's value, hashable: numbers, strings and None as
    they are (with their type), tensors by identity and version (:func:`_tensor_state`;
    the module's parameters and buffers, graph inputs, by a marker), lists, tuples, dicts,
    distributions and plain objects (a likelihood object, a ``SimpleNamespace`` of
    settings) by what they hold, NumPy arrays by their values (identity above
    ``_ARRAY_VALUES_UP_TO`` elements), functions, classes and modules by identity."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return (type(value).__name__, value)
    if torch.is_tensor(value):
        return ("input",) if id(value) in registered else _tensor_state(value)
    if isinstance(value, enum.Enum):
        return ("enum", value)
    if isinstance(value, np.ndarray):
        if value.size <= _ARRAY_VALUES_UP_TO:
            return ("array", value.dtype.str, value.shape, value.tobytes())
        return ("array", _Held(value), value.shape)
    if isinstance(value, (torch.nn.Module, type, types.FunctionType, types.MethodType,
                          types.BuiltinFunctionType, functools.partial)) or depth > 4:
        return ("object", _Held(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,
                tuple(_value_key(item, registered, depth + 1) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple((repr(k), _value_key(item, registered, depth + 1))
                              for k, item in value.items()))
    if hasattr(value, "__dict__"):
        return (type(value).__qualname__,
                tuple((k, _value_key(item, registered, depth + 1))
                      for k, item in vars(value).items()))
    return ("object", _Held(value))


def module_key(module: torch.nn.Module) -> tuple:
    """What a trace bakes in of ``module``: each submodule's training flag (dropout, batch
    norm) and every attribute it holds besides nn.Module's own bookkeeping, public or
    private (:func:`_value_key`): plain settings (a noise scale, ``self._beta``), tensors
    outside its parameters and buffers (keyed by identity and version counter, so that
    rebinding ``self.noise = torch.tensor(2.0)`` or changing it in place traces again,
    while an unchanged one keeps its graph), containers and plain objects of settings (a
    likelihood object's scale, a list entry), read as constants by a trace; and the
    names, shapes, dtypes and devices of its parameters and buffers. One walk over the
    submodules: compiled paths compute it on every call."""
    # a parameter or buffer also held elsewhere (an RNN's _flat_weights) is a graph input,
    # and changes with every optimizer step: keying it would trace every step again
    registered = {id(t) for t in (*module.parameters(), *module.buffers())}
    walked = []
    for _, sub in module.named_modules(remove_duplicate=False):
        walked.append((sub.training, tuple((name, _value_key(value, registered))
                                           for name, value in vars(sub).items()
                                           if name not in _SKIPPED)))
    tensors = (*module.named_parameters(), *module.named_buffers())
    return (tuple(walked),
            tuple((n, tuple(t.shape), t.dtype, t.device) for n, t in tensors))


def _wrapping_handler(fn) -> str | None:
    """The class name of the Pyro handler that wraps ``fn`` (``poutine.scale(f, 0.5)``,
    ``config_enumerate(f)``: a ``functools.partial`` of the handler's call), else None."""
    if isinstance(fn, functools.partial):
        return next((type(a).__name__ for a in fn.args if isinstance(a, Messenger)), None)
    return None


def owning_module(model: Callable, guide: Callable, purpose: str) -> torch.nn.Module:
    """The ``nn.Module`` whose methods ``model`` and ``guide`` are; ``ValueError`` otherwise."""
    for role, fn in (("model", model), ("guide", guide)):
        handler = _wrapping_handler(fn)
        if handler is not None:
            raise ValueError(
                f"{purpose}: the {role} is wrapped by Pyro's {handler} (config_enumerate, "
                "poutine.scale, poutine.mask and the other handlers wrap a function), and a "
                "compiled graph is built from methods of one torch.nn.Module; call without "
                "compile" + (" (compiled graphs do not sum out enumerated sites either)"
                             if handler == "InferConfigMessenger" else ""))
    for role, fn in (("model", model), ("guide", guide)):
        if isinstance(fn, functools.partial):
            fixed = [*map(repr, fn.args), *(f"{key}={value!r}" for key, value in
                                             fn.keywords.items())]
            raise ValueError(
                f"{purpose}: the {role} is a functools.partial of {_described(fn.func)} "
                f"(fixing {', '.join(fixed) or 'nothing'}), and a compiled graph is built from "
                "the methods of one torch.nn.Module themselves: pass the methods and give the "
                "fixed arguments to the call, which forwards them (e.g. elbo(pair.model, "
                "pair.guide, x, prior_scale=2.0)), or call without compile")
    owner = getattr(model, "__self__", None)
    if not isinstance(owner, torch.nn.Module) or getattr(guide, "__self__", None) is not owner:
        raise ValueError(f"{purpose} needs model and guide to be methods of one "
                         "torch.nn.Module that owns their parameters (e.g. a PyroModule with "
                         f"pyro_method); got model={_described(model)}, "
                         f"guide={_described(guide)}")
    return owner


def _described(fn) -> str:
    """``Pair.model`` (a bound method, named by its class), a function's qualified name, or
    the object's type: a short name for messages (a module's repr runs over many lines)."""
    owner = getattr(fn, "__self__", None)
    if owner is not None and hasattr(fn, "__func__"):
        return f"the method {type(owner).__name__}.{fn.__func__.__name__}"
    name = getattr(fn, "__qualname__", None)
    return f"the function {name}" if name else f"a {type(fn).__name__} object"


def tensor_leaves(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors among ``args`` and ``kwargs`` (nested in tuples, lists, dicts), in order:
    the inputs of a graph from :func:`trace_with_inputs` besides the module's tensors."""
    return [leaf for leaf in pytree.tree_leaves((args, kwargs)) if torch.is_tensor(leaf)]


def trace_with_inputs(module: torch.nn.Module, names: list[str], fn: Callable,
                      tensors: list[torch.Tensor], args: tuple, kwargs: dict):
    """``make_fx`` graph of ``fn(tensors, args, kwargs)`` with ``module``'s ``names`` bound
    to ``tensors``.

    The graph takes ``(tensors, tensor_leaves(args, kwargs))``: ``tensors`` stand for the
    module's parameters and buffers called ``names`` (``fn`` receives them too, e.g. to
    differentiate by them), the second list for every tensor among the arguments. Other
    arguments (numbers, strings) are frozen at their traced values: key graphs by them
    (:func:`arguments_key`). Traced with the random state restored afterwards and Pyro's
    validation off (its checks are data-dependent Python, not tensor arithmetic). Python
    that reads the value of a tensor computed from the inputs or the draws (``if
    x.sum() > 0``, ``float(z)``) cannot be frozen into a graph: ``ValueError``. Traced
    without torch's anomaly detection, whose checks of gradient values no graph holds.
    """
    leaves, spec = pytree.tree_flatten((args, kwargs))
    positions = [i for i, leaf in enumerate(leaves) if torch.is_tensor(leaf)]

    def bound(values, inputs):
        filled = list(leaves)
        for position, value in zip(positions, inputs):
            filled[position] = value
        arguments, keywords = pytree.tree_unflatten(filled, spec)
        with _reparametrize_module(module, dict(zip(names, values))):
            return fn(values, arguments, keywords)

    # anomaly detection (torch.autograd.set_detect_anomaly) reads every gradient's values,
    # which no graph can hold: the trace is taken without it
    with forked_rng(), validation_enabled(False), \
            torch.autograd.set_detect_anomaly(False):
        try:
            return make_fx(bound)(tensors, [leaves[i] for i in positions])
        except RuntimeError as error:
            if "tracing tensor" not in str(error) and "data-dependent" not in str(error):
                raise
            raise ValueError(
                f"a compiled path traces {type(module).__name__}'s pair once, but its Python "
                "code reads the value of a tensor computed from the data, the parameters or "
                f"the draws{_reading_frame(error)} (e.g. `if x.sum() > 0:` or `float(z)`), so "
                "one trace cannot stand for every call; use the eager path "
                "(compile=False)") from error


def _reading_frame(error: BaseException) -> str:
    """`` in f (file.py:12: `line`)``: the innermost frame of ``error``'s traceback outside
    torch, Pyro and Python's standard library (the user's code that read a tensor's value),
    or ``""`` when there is none."""
    skipped = tuple(os.path.dirname(module.__file__) + os.sep for module in (torch, pyro, os))
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if not os.path.abspath(frame.filename).startswith(skipped) \
                and os.path.abspath(frame.filename) != os.path.abspath(__file__):
            line = f": `{frame.line.strip()}`" if frame.line else ""
            return f" in {frame.name} ({frame.filename}:{frame.lineno}{line})"
    return ""


# backends that ship with torch and compile on any machine; others are tried once
_BUNDLED_BACKENDS = ("inductor", "eager", "aot_eager")


class _TrialModule(torch.nn.Module):
    """What :func:`check_backend` compiles: ``x: [n] -> (relu(x) + 1,)`` (a backend takes a
    graph whose output is a tuple)."""

    def forward(self, x: torch.Tensor):  # (no return annotation: TorchScript reads it)
        return (torch.relu(x) + 1,)


def check_backend(backend: str, argument: str) -> None:
    """``ValueError`` naming ``argument`` unless ``backend`` names a ``torch.compile``
    backend that works here: listed by torch, and, beyond those bundled with it, compiling a
    trial function (torch lists ``"tvm"`` and ``"openxla"`` whether or not their packages are
    installed, which failed at the first compiled step)."""
    from torch._dynamo import list_backends  # imported only when a backend is named

    known = list_backends(exclude_tags=())
    if backend not in known:
        raise ValueError(f"{argument}={backend!r} is not a torch.compile backend; choose one "
                         f"of {known}")
    failure = None if backend in _BUNDLED_BACKENDS else _trial_failure(backend)
    if failure is not None:
        raise ValueError(
            f"{argument}={backend!r}: torch lists the backend, but it fails here on a trial "
            f"function ({failure}); install what it needs or use 'inductor'")


@functools.cache
def _trial_failure(backend: str) -> str | None:
    """How ``backend`` fails on :class:`_TrialModule`'s graph (``"ImportError: ..."``), or
    None when it compiles and runs it; once per backend and process. The backend is called
    on a graph of its own, so no cache of dynamo's is reused or filled."""
    from torch._dynamo import lookup_backend

    try:
        graph = torch.fx.symbolic_trace(_TrialModule())
        lookup_backend(backend)(graph, [torch.zeros(2)])(torch.zeros(2))
    except Exception as error:  # noqa: BLE001 (the backend's own failure, whatever it is)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{type(error).__name__}: {first}"
    return None


def compile_graph(graph, backend: str) -> Callable:
    """``graph`` compiled with ``torch.compile(backend=...)``, its random draws those of eager
    code (inductor's ``fallback_random``); ``"eager"`` replays the graph as traced."""
    if backend == "eager":
        return graph
    import torch._inductor.config as inductor_config

    compiled = torch.compile(graph, backend=backend)

    def run(*inputs):
        with inductor_config.patch(fallback_random=True):
            return compiled(*inputs)

    return run
