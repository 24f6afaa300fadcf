"""savepoint-engine: durable executions of plain Python functions by capturing live frames."""
import sys as _sys

# The one place the version is written (pyproject.toml reads it from here without importing).
__version__ = "0.1.0"

if _sys.implementation.name != "cpython" or _sys.version_info[:2] != (3, 11):
    raise ImportError(
        "savepoint-engine needs CPython 3.11: it saves and rebuilds CPython 3.11 frames, "
        f"and this is {_sys.implementation.name} {_sys.version.split()[0]}"
    )


def _check_compiled_core():
    """Refuse, saying why, a package whose compiled extensions are missing: typically the
    source tree, imported from the repository root after a non-editable install (it
    would otherwise fail later with a circular-import error naming none of this)."""
    import importlib.util
    import os

    missing = [name for name in ("_frames", "_codec", "_commit", "_flowapi")
               if importlib.util.find_spec(f"{__name__}.{name}") is None]
    if missing:
        here = os.path.dirname(os.path.abspath(__file__))
        raise ImportError(
            f"savepoint-engine's compiled core is not built in {here} (no "
            f"{', '.join('engine.' + m for m in missing)}): run `pip install -e .` in "
            f"{os.path.dirname(here)}, or import engine from outside the source tree",
            name=__name__, path=here)


_check_compiled_core()
del _check_compiled_core

from engine.errors import (CorruptSavepoint, CorruptStore, EngineError,  # noqa: E402
                           ExecutionNotFound, FlowError, FlowNotFound, InvalidTransition,
                           SavepointError, SavepointNotFound, StoreClosed, StoreFull,
                           StoreUnavailable, WorkerStartError)
from engine.engine import Engine  # noqa: E402
from engine.types import (Change, Execution, ExecutionPage, FrameView,  # noqa: E402
                          Savepoint, SavepointPage, Status)
from engine._flowapi import System, This  # noqa: E402  (to annotate a flow's parameters)
from engine._codec import Unbuilt  # noqa: E402  (what inspection shows for what it did not build)

__all__ = ["Engine", "Execution", "ExecutionPage", "Savepoint", "SavepointPage",
           "FrameView", "Change", "Status", "System", "This",
           "Unbuilt", "EngineError",
           "SavepointError", "CorruptSavepoint", "CorruptStore", "StoreClosed",
           "StoreFull", "StoreUnavailable", "FlowError", "FlowNotFound", "ExecutionNotFound",
           "SavepointNotFound", "InvalidTransition", "WorkerStartError"]
