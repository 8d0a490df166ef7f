"""The objects a function reaches: the ``nn.Module`` networks behind a pair of plain
functions (``pyro.module("encoder", encoder)`` on a network held in a global or a closure)
or of a pair of bound methods, and the objects with a saved state behind a callback. The
training wing keeps the networks' buffers and the callbacks' states; the pair's survey puts
the networks in evaluation mode while it reruns the pair."""

from __future__ import annotations

import contextlib
import functools
import types

import torch

_DEPTH = 3  # functions and plain objects are followed this many references deep


def reachable_modules(*functions) -> list[torch.nn.Module]:
    """The ``nn.Module`` objects that ``functions`` reference: through a bound method's
    object, closures, the globals their code names (and those globals' attributes it names,
    for a module or class: ``mynets.enc``), default arguments and
    ``functools.partial`` arguments, following the functions and plain objects found there
    (three references deep). Top-level modules only (not their submodules), in the order
    found, each once."""
    found = _reached(functions, lambda value: isinstance(value, torch.nn.Module))
    submodules = {id(sub) for module in found for sub in list(module.modules())[1:]}
    return [module for module in found if id(module) not in submodules]


def reachable_with_state(function) -> list:
    """The objects with a state to save that ``function`` references, found as
    :func:`reachable_modules` finds networks: instances whose class defines ``get_state``
    and ``set_state`` in Python (an :class:`inference.KeepBest` in a closure or a global of
    a plain callback), in the order found, each once; not looked into further."""
    def has_state(value) -> bool:
        methods = [getattr(type(value), name, None) for name in ("get_state", "set_state")]
        return not isinstance(value, type) and all(
            isinstance(method, types.FunctionType) for method in methods)

    return _reached((function,), has_state)


def _reached(functions, wanted) -> list:
    found: dict[int, object] = {}
    seen: set[int] = set()
    for function in functions:
        _visit(function, found, seen, _DEPTH, wanted)
    return list(found.values())


def _visit(value, found: dict, seen: set, depth: int, wanted) -> None:
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    if wanted(value):
        found.setdefault(id(value), value)
        return
    if isinstance(value, torch.nn.Module):
        return
    if isinstance(value, (types.MethodType, functools.partial)):
        owner = value.__self__ if isinstance(value, types.MethodType) else None
        inner = value.__func__ if isinstance(value, types.MethodType) else value.func
        references = [owner, inner]
        if isinstance(value, functools.partial):
            references += [*value.args, *value.keywords.values()]
        for reference in references:
            _visit(reference, found, seen, depth, wanted)
    elif isinstance(value, types.FunctionType):
        code = value.__code__
        references = [cell.cell_contents for cell in value.__closure__ or ()
                      if _filled(cell)]
        names = _names(code)
        used = [value.__globals__[name] for name in names if name in value.__globals__]
        references += used
        # a network held in an imported module or a class (mynets.enc, Nets.enc): the
        # attributes of such a global that the code names
        references += [vars(held)[name] for held in used
                       if isinstance(held, (types.ModuleType, type))
                       for name in names if name in vars(held)]
        references += [*(value.__defaults__ or ()), *(value.__kwdefaults__ or {}).values()]
        for reference in references:
            _visit(reference, found, seen, depth - 1, wanted)
    elif isinstance(value, (list, tuple)) and len(value) <= 64:
        for item in value:
            _visit(item, found, seen, depth - 1, wanted)
    elif isinstance(value, dict) and len(value) <= 64:
        for item in value.values():
            _visit(item, found, seen, depth - 1, wanted)
    elif hasattr(value, "__dict__") and not isinstance(value, (type, types.ModuleType)):
        for item in vars(value).values():
            _visit(item, found, seen, depth - 1, wanted)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return False
    return True


def _names(code) -> set[str]:
    """The global names ``code`` and the code nested in it (lambdas, comprehensions) use."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names(constant)
    return names


@contextlib.contextmanager
def kept_plate_caches(modules):
    """Inside the block ``modules`` may run on other rows and fail (a probe of the pair on
    its first rows); after it the plate caches of Pyro's ``EasyGuide`` among them are as
    before. ``EasyGuide.forward`` clears its plates only when the guide returns, so a run
    that raised left a plate of the probe's size, and every later call of the guide failed
    with a shape mismatch."""
    from pyro.contrib.easyguide import EasyGuide

    saved = [(sub, dict(sub.plates)) for module in modules for sub in module.modules()
             if isinstance(sub, EasyGuide)]
    try:
        yield
    finally:
        for sub, plates in saved:
            sub.plates.clear()
            sub.plates.update(plates)


@contextlib.contextmanager
def kept_buffers(modules):
    """Inside the block, ``modules`` may run (a survey of the pair in training mode); after
    it their buffers hold their values from before (running statistics not moved), also a
    buffer the run replaced by another tensor."""
    saved, seen = [], set()
    for module in modules:
        for sub in module.modules():
            for name, buffer in sub.named_buffers(recurse=False):
                if buffer is not None and id(buffer) not in seen:
                    seen.add(id(buffer))
                    saved.append((sub, name, buffer, buffer.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for sub, name, buffer, value in saved:
                buffer.copy_(value)
                if getattr(sub, name) is not buffer:
                    setattr(sub, name, buffer)
