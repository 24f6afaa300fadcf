"""savepoint-engine: durable executions of plain Python functions by capturing live frames."""
import sys as _sys

if _sys.implementation.name != "cpython" or _sys.version_info[:2] != (3, 11):
    raise ImportError(
        "savepoint-engine needs CPython 3.11: it saves and rebuilds CPython 3.11 frames, "
        f"and this is {_sys.implementation.name} {_sys.version.split()[0]}"
    )

from engine.errors import CorruptSavepoint, SavepointError  # noqa: E402
from engine.runtime import Engine, Execution, FlowError, Savepoint, Status  # noqa: E402

__all__ = ["Engine", "Execution", "Savepoint", "Status", "FlowError", "SavepointError",
           "CorruptSavepoint"]
__version__ = "0.1.0"
