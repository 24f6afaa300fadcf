"""A test-only way to carry frame snapshots across a process boundary.

The product's byte encoding is the codec's job (engine._codec); these tests only need the
snapshot structure to survive a process exit, so they pickle it, teaching pickle about code
objects (marshal), cells and functions that are not importable by name (lambdas,
comprehensions, closures).
"""
import importlib
import io
import marshal
import pickle
import sys
import types

from engine import _frames


def _code(data):
    return marshal.loads(data)


def _cell():
    return types.CellType()


def _fill_cell(cell, state):
    if state is not _frames.EMPTY:
        cell.cell_contents = state


def _function(code, module, name, qualname, defaults, kwdefaults, closure):
    namespace = importlib.import_module(module).__dict__
    func = types.FunctionType(code, namespace, name, defaults, closure)
    func.__qualname__ = qualname
    func.__kwdefaults__ = kwdefaults
    return func


def _importable(func):
    target = sys.modules.get(func.__module__)
    for part in func.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is func


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        kind = type(obj)
        if kind is types.CodeType:
            return _code, (marshal.dumps(obj),)
        if kind is types.CellType:
            try:
                state = obj.cell_contents
            except ValueError:
                state = _frames.EMPTY
            return _cell, (), state, None, None, _fill_cell
        if kind is types.FunctionType and not _importable(obj):
            return _function, (obj.__code__, obj.__module__, obj.__name__, obj.__qualname__,
                               obj.__defaults__, obj.__kwdefaults__, obj.__closure__)
        if kind is types.ModuleType:
            return importlib.import_module, (obj.__name__,)
        if kind is _frames.Frame:
            return _frames.Frame, (obj.func, obj.code, obj.offset, obj.locals, obj.stack,
                                   obj.exc)
        return NotImplemented


def dumps(snapshot):
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(snapshot)
    return buf.getvalue()


loads = pickle.loads
