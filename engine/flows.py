"""How a flow is named and found: the import path "module:qualname" recorded at start
(a flow of the script being run, __main__, by the name other processes import it by),
and loading the function back from it in any process."""
import ast
import importlib
import importlib.util
import inspect
import os
import sys

from engine.errors import FlowNotFound


def flow_name(flow):
    """The import path "module:qualname" by which any process finds the flow."""
    if isinstance(flow, str):
        module_name, sep, qualname = flow.partition(":")
        if not sep or not module_name or not qualname:
            raise ValueError(f"flow {flow!r} must be a function or 'package.module:function'")
        return flow
    if not inspect.isfunction(flow):
        raise TypeError(f"flow must be a module-level Python function, not "
                        f"{type(flow).__name__} {flow!r}")
    if "<locals>" in flow.__qualname__ or flow.__module__ is None:
        raise ValueError(f"flow {flow.__qualname__} must be defined at module level")
    refuse_unrunnable(flow)
    module_name = flow.__module__
    if module_name == "__main__":
        module_name = _main_module_name(flow)
    return f"{module_name}:{flow.__qualname__}"


def refuse_unrunnable(flow):
    """A flow is a plain function that returns its output: a generator, coroutine or
    async generator function would only make an object, which no worker can drive."""
    for test, what in ((inspect.isgeneratorfunction, "a generator function"),
                       (inspect.iscoroutinefunction, "a coroutine function (async def)"),
                       (inspect.isasyncgenfunction, "an async generator function")):
        if test(flow):
            raise ValueError(f"flow {flow.__qualname__} is {what}; a flow is a plain "
                             f"function (def, no yield) that returns its output -- it may "
                             f"call generator functions of its own")


_MAIN_SAFE = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
              ast.ClassDef, ast.Assign, ast.AnnAssign, ast.Pass)


def _main_guard(node):
    """Whether ``node`` is ``if __name__ == "__main__": ...``."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Compare) and \
        isinstance(test.left, ast.Name) and test.left.id == "__name__" and \
        len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant) and \
        test.comparators[0].value == "__main__"


def _main_module_name(flow):
    """A flow defined in the script being run (module __main__) is recorded under the
    name another process can import that script by -- when it can, and importing it runs
    nothing (its top-level code is under ``if __name__ == "__main__":``).  Otherwise it
    is refused: a worker could never resume it."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name                          # python -m package.module
    path = getattr(main, "__file__", None)
    why = ("it is defined in the script being run (__main__), which other processes "
           "cannot import")
    if path and path.endswith(".py"):
        stem = os.path.splitext(os.path.basename(path))[0]
        found = importlib.util.find_spec(stem) if stem.isidentifier() else None
        if found is None or found.origin is None or \
                os.path.realpath(found.origin) != os.path.realpath(path):
            why = (f"it is defined in the script being run (__main__), and {stem!r} does "
                   f"not import that script from sys.path")
        else:
            with open(path, "rb") as fh:
                tree = ast.parse(fh.read(), path)
            loose = [node for node in tree.body if not isinstance(node, _MAIN_SAFE)
                     and not _main_guard(node)
                     and not (isinstance(node, ast.Expr) and isinstance(node.value,
                                                                        ast.Constant))]
            if not loose:
                return stem
            why = (f"it is defined in the script being run (__main__), and importing "
                   f"{stem!r} elsewhere would run that script's top-level code again "
                   f"(line {loose[0].lineno})")
    raise ValueError(f"flow {flow.__qualname__} cannot be resumed by another process: {why}."
                     f" Move it to a module and import it, or put the script's top-level "
                     f"code under `if __name__ == \"__main__\":`")


def load_flow(name):
    """The flow function "module:qualname" names; FlowNotFound if this process cannot
    import it."""
    module_name, _, qualname = name.partition(":")
    module = import_flow_module(module_name)
    target = module
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise FlowNotFound(f"module {module_name} has no flow {qualname!r}") from None
    refuse_unrunnable(target)          # started by name: not checked at start
    return target


def import_flow_module(module_name):
    module = sys.modules.get(module_name)
    if module is not None and module_name != "__main__":
        return module
    try:
        return importlib.import_module(module_name)
    except Exception as e:
        raise FlowNotFound(
            f"cannot import flow module {module_name!r} ({type(e).__name__}: {e}); it is "
            f"searched on sys.path: run from the directory that holds it, or add that "
            f"directory to PYTHONPATH") from None
