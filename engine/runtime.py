"""The runtime: Engine, executions, savepoints and restore (../shared/SPEC.md).

An execution runs its flow under a frame-core Root.  Every Flow-API call (engine._flowapi)
comes back here through an _Context: the call's work, then a savepoint of the flow's
frames with the call's result, committed with the execution's new state.  The driver
(_Context.drive) starts a flow fresh or resumes it from a savepoint, and turns whatever
leaves the flow -- a return, an exception, an Unwind for load_dump or an idle wait --
into the execution's next state.
"""
import ast
import ctypes
import dataclasses
import datetime
import enum
import importlib
import importlib.util
import inspect
import linecache
import logging
import _thread
import os
import sys
import threading
import time
import types
import uuid
from typing import Any, Callable, TypeVar

from engine import _codec, _flowapi, _frames, config
from engine.errors import (EngineError, ExecutionNotFound, FlowError, FlowNotFound,
                           InvalidTransition, SavepointError, SavepointNotFound, StoreFull)
from engine.store import Owner, Store, retention_error

log = logging.getLogger("engine")
_F = TypeVar("_F", bound=Callable[..., Any])

RESTORE_LOOP_LIMIT = 100
WATCH_SECONDS = 0.05            # how often the watchdog looks for timeouts and requests
IDLE_WATCH_SECONDS = 1.0        # ... when it watches nothing (a new timeout pokes it)
FLOW_IMPORT_RETRY_SECONDS = 5.0  # a flow module that cannot be imported: try again then


class Status(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    PAUSED = "PAUSED"
    ENDED_SUCCESS = "ENDED_SUCCESS"
    ENDED_ERROR = "ENDED_ERROR"
    ENDED_CANCELLED = "ENDED_CANCELLED"

    def __str__(self):
        return self.value


ENDED = (Status.ENDED_SUCCESS, Status.ENDED_ERROR, Status.ENDED_CANCELLED)


def _utc(ts):
    return None if ts is None else datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


@dataclasses.dataclass
class Execution:
    id: str
    flow: str
    status: Status
    inputs: Any = None
    output: Any = None
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    name: str | None = None
    restore_count: int = 0
    parent: str | None = None
    # [(aware UTC datetime, text)]; None for entries stored before the log had times
    log: list[tuple[datetime.datetime | None, str]] = dataclasses.field(default_factory=list)
    # what of it is damaged in the store (its record, its newest savepoint), or None.
    # Its record damaged: ENDED_ERROR, flow "" (lost); it can only be deleted.  Its
    # newest savepoint damaged: as its record says; restore to an intact savepoint.
    damaged: str | None = None

    @classmethod
    def _from(cls, record):
        return cls(id=record["id"], flow=record.get("flow") or "",
                   status=Status(record["status"]),
                   inputs=record.get("inputs"), output=record.get("output"),
                   outputs=dict(record.get("outputs") or {}), error=record.get("error"),
                   created_at=_utc(record.get("created_at")),
                   updated_at=_utc(record.get("updated_at")), name=record.get("name"),
                   restore_count=record.get("restore_count") or 0,
                   parent=record.get("parent"), log=_log_entries(record.get("log")),
                   damaged=record.get("damaged"))


def _log_entries(stored):
    """The log as (aware UTC datetime, text) pairs; entries written before the log had
    times (plain strings) get None."""
    return [(_utc(entry[0]), entry[1]) if isinstance(entry, (list, tuple))
            else (None, str(entry)) for entry in stored or ()]


@dataclasses.dataclass
class Savepoint:
    id: str
    execution_id: str
    seq: int
    kind: str
    name: str | None
    created_at: datetime.datetime
    line: int
    action: str
    command: str | None
    size: int
    damaged: str | None = None      # what is damaged (kind "damaged"; the rest is None)


@dataclasses.dataclass
class FrameView:
    """One frame of a savepoint as inspection shows it (Engine.inspect): nothing of the
    flow ran to make it, no module was imported; instances, iterators and names of
    modules not imported are engine._codec.Unbuilt stand-ins showing class and state."""
    function: str
    module: str
    file: str
    line: int | None
    locals: dict[str, Any]
    unbound: list[str] = dataclasses.field(default_factory=list)   # no value yet


def _savepoint_id(exec_id, seq):
    return f"{exec_id}.{seq}"


def _flow_name(flow):
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
    module_name = flow.__module__
    if module_name == "__main__":
        module_name = _main_module_name(flow)
    return f"{module_name}:{flow.__qualname__}"


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


def _load_flow(name):
    """The flow function "module:qualname" names; FlowNotFound if this process cannot
    import it."""
    module_name, _, qualname = name.partition(":")
    module = _import_flow_module(module_name)
    target = module
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise FlowNotFound(f"module {module_name} has no flow {qualname!r}") from None
    return target


def _import_flow_module(module_name):
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


# (id(code), offset) -> (code, source text); the code keeps the id.  Bounded: a
# long-lived worker meets ever new code objects (each restored savepoint pins its own)
_commands: dict[tuple[int, int], tuple[Any, str | None]] = {}
COMMAND_CACHE_SIZE = 4096


def _command(frame):
    """The source text of the call the innermost frame waits on (co_positions)."""
    code = frame.code
    found = _commands.get((id(code), frame.offset))
    if found is not None and found[0] is code:
        return found[1]
    text = _command_text(code, frame.offset)
    if len(_commands) >= COMMAND_CACHE_SIZE:
        _commands.clear()                 # cheap to rebuild: one co_positions() each
    _commands[(id(code), frame.offset)] = (code, text)
    return text


def _command_text(code, offset):
    positions = list(code.co_positions())
    unit = offset // 2
    start, end, col, end_col = positions[unit] if unit < len(positions) else (None,) * 4
    if start is None or col is None:
        return None
    lines = linecache.getlines(code.co_filename)
    if not lines or end > len(lines):
        return None
    if start == end:
        text = lines[start - 1].encode()[col:end_col].decode(errors="replace")
    else:
        first = lines[start - 1].encode()[col:].decode(errors="replace")
        last = lines[end - 1].encode()[:end_col].decode(errors="replace")
        text = first + "".join(lines[start:end - 1]) + last
    return text.strip()


class _Success:
    """What this.success(value) returns: the flow returns it, its value is the output."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (_Success, (self.value,))


# --- the life of an execution ------------------------------------------------------------
# Which operations from outside apply in which state: one table, used by the API, the CLI
# and the worker that carries out a request for an execution it is running.
_LIVE = frozenset({Status.QUEUED, Status.RUNNING, Status.WAITING, Status.PAUSED})
ALLOWED = {
    "cancel": _LIVE,
    "pause": frozenset({Status.QUEUED, Status.RUNNING, Status.WAITING}),
    "resume": frozenset({Status.PAUSED}),
    "restore": frozenset(Status),
}


def check_transition(operation, record):
    """InvalidTransition unless ``operation`` applies to the execution in its state."""
    if record.get("damaged") and not record.get("flow"):
        raise InvalidTransition(f"cannot {operation} execution {record['id']}: "
                                f"{record['damaged']}; it can only be deleted")
    status = Status(record["status"])
    if status not in ALLOWED[operation]:
        why = "it has ended" if status in ENDED else f"it is {status.value}"
        if operation == "resume":
            why += "; only a PAUSED execution can be resumed"
        elif operation == "pause" and status == Status.PAUSED:
            why = "it is PAUSED already"
        raise InvalidTransition(f"cannot {operation} execution {record['id']}: {why} "
                                f"(status {status.value})")


def apply_request(record, request):
    """Change ``record`` as the request ([operation, *arguments]) asks; checked first."""
    operation = request[0]
    check_transition(operation, record)
    now = time.time()
    if operation == "cancel":
        record.update(status=Status.ENDED_CANCELLED.value, due=None, timeout_at=None)
        record.pop("paused", None)
    elif operation == "pause":
        # what resume puts back: the status and the due time (a sleeper wakes on time)
        record["paused"] = [record["status"], record.get("due")]
        record.update(status=Status.PAUSED.value, due=None)
    elif operation == "resume":
        status, due = record.pop("paused", None) or (Status.QUEUED.value, None)
        waiting = status == Status.WAITING.value and due is not None and \
            not record.get("waiting_for")
        record.update(status=Status.WAITING.value if waiting else Status.QUEUED.value,
                      due=due if due is not None else now)
    elif operation == "restore":
        record.pop("paused", None)
        record.update(status=Status.QUEUED.value, due=now, resume_from=request[1],
                      restore_count=(record.get("restore_count") or 0) + 1,
                      timeout_at=None, error=None, output=None, waiting_for=None)
    record["updated_at"] = now


class _Interrupted(BaseException):
    """Raised in a flow's thread (PyThreadState_SetAsyncExc) when its execution ended
    elsewhere -- a timeout, a cancel, a delete -- while the flow computed: it stops the
    computation.  Never seen by users: the driver catches it."""


def _set_async_exc(thread_id, exc_type):
    """CPython's PyThreadState_SetAsyncExc (public C API): ``exc_type`` is raised in that
    thread at its next bytecode boundary -- never inside C code, such as a connector
    blocked in a read; None (NULL) clears a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc_type is None else ctypes.py_object(exc_type))


class _Context:
    """One execution being run by one engine in this process.

    Its flow runs on one thread; the engine's watchdog thread may end it meanwhile
    (timeout, or a cancel/pause/restore/delete from outside).  Every store write for the
    execution happens under ``lock`` after checking ``done``, so once the watchdog has
    ended it, nothing the flow does afterwards is written: no savepoint, no state."""

    def __init__(self, engine, record):
        self.engine = engine
        self.store = engine._store
        self.record = record
        self.execution_id = record["id"]
        self.root = _frames.Root()
        self.this = _flowapi.This(self, self.root)
        self.system = _flowapi.System(self.this)
        self.externals = {"this": self.this, "system": self.system}
        self.trust = engine._trust_for(record)
        self.lock = threading.Lock()
        self.done = False                # ended (or deleted) by someone else: write nothing
        self.keep_lease = False          # a full disk: see _store_full
        self.wake = threading.Event()    # ends an in-process sleep early
        self.thread = None               # the flow's thread, while it runs flow code
        self.in_flow = False

    # -- facts --
    @property
    def inputs(self):
        return self.record.get("inputs")

    @property
    def restore_count(self):
        return self.record.get("restore_count") or 0

    # -- writes, guarded --
    def _guarded_put(self):
        """Write the record, unless the execution was ended elsewhere: then leave."""
        with self.lock:
            if self.done:
                self.leave(("gone",))
            self.store.put_execution(self.record)

    # -- savepoints --
    def next_savepoint_id(self):
        return _savepoint_id(self.execution_id, (self.record.get("last_seq") or 0) + 1)

    def savepoint(self, frames, action, result, kind="implicit", name=None):
        engine = self.engine
        chunks = {}
        record, codes = _codec.encode_snapshot(frames, externals=self.externals,
                                               trust=self.trust, chunks=chunks,
                                               result=result)
        inner = frames[-1]
        meta = {"kind": kind, "name": name, "created_at": time.time(), "line": inner.line,
                "action": action, "command": _command(inner)}
        with self.lock:
            if self.done:
                self.leave(("gone",))
            self.record["updated_at"] = meta["created_at"]
            self.store.commit_savepoint(
                self.record, meta, record, codes, chunks,
                retention=self.record.get("retention") or engine.savepoint_retention)
        engine._calls += 1

    # -- checks at every call --
    def check(self):
        engine = self.engine
        if self.done:
            self.leave(("gone",))
        if engine._stopping.is_set():                # the worker is shutting down
            self.leave(("stop",))
        now = time.monotonic()
        if now > engine._lease_checked.get(self.execution_id, now):
            # no renewal for a while (this process was stopped?): make sure the lease is
            # still ours before doing anything more for this execution
            if not engine._renew(self.execution_id):
                self.leave(("lost",))
        timeout_at = self.record.get("timeout_at")
        if timeout_at is not None and time.time() > timeout_at:
            self.leave(("timeout",))

    def leave(self, reason):
        """Leave the flow now, running none of its finally/except/with handlers.
        ``reason``: ("idle",), ("load", seq), ("fail", message), ("stop",), ("lost",),
        ("timeout",) or ("gone",) -- what _left makes of it."""
        keep = _frames.strip_handlers(self.root)
        raise _frames.Unwind(reason, keep)

    # -- ended from outside the flow's thread (the watchdog) --
    def watch(self):
        """Called by the watchdog: end the execution at its timeout, carry out a request
        from outside."""
        if self.done:
            return
        timeout_at = self.record.get("timeout_at")
        if timeout_at is not None and time.time() >= timeout_at:
            self.end_elsewhere(lambda: self._ended(Status.ENDED_ERROR, error=TIMEOUT_ERROR))
            return
        request = _pending_request(self.store, self.execution_id)
        if request is not None:
            self.take_request(request)

    def take_request(self, request):
        """Carry out cancel/pause/restore/delete for this running execution."""
        def apply():
            self.store.delete_setting(_signal_key(self.execution_id))
            if request[0] == "delete":
                self.store.delete_execution(self.execution_id)
                return
            try:
                apply_request(self.record, request)
            except InvalidTransition as e:     # it changed state since the request
                log.info("request %s dropped: %s", request[0], e)
                return False
            self.store.put_execution(self.record)
        if self.end_elsewhere(apply) and request[0] == "cancel":
            self.engine._cancel_children(self.execution_id)

    def end_elsewhere(self, change):
        """Under the lock: apply ``change`` (unless it returns False), mark the execution
        done and stop its flow -- waking a sleep, interrupting a computation."""
        with self.lock:
            if self.done or change() is False:
                return False
            self.done = True
            self.wake.set()
            if self.in_flow and self.thread is not None:
                _set_async_exc(self.thread, _Interrupted)     # stops a computation
        return True

    def _stop_interrupts(self):
        """The flow's code is over: no interrupt may land in the engine's own code."""
        with self.lock:
            if self.in_flow and self.thread is not None:
                _set_async_exc(self.thread, None)   # NULL: clear a pending one
            self.in_flow = False

    # -- Flow-API work --
    def connect(self, name, kwargs):
        try:
            func = self.engine._connectors[name]
        except KeyError:
            raise KeyError(f"no connector named {name!r}; register it with "
                           f"eng.add_connector({name!r}, func)") from None
        return func(**kwargs)

    def load_dump(self, name_or_id, by):
        seq = self.engine._find_seq(self.execution_id, name_or_id, by)
        counts = dict(self.record.get("restores") or {})
        counts[str(seq)] = counts.get(str(seq), 0) + 1
        if counts[str(seq)] > RESTORE_LOOP_LIMIT:
            return ("fail", f"RestoreLoopError: savepoint {name_or_id!r} was loaded more "
                            f"than {RESTORE_LOOP_LIMIT} times; stopping a restore loop")
        self.record["restores"] = counts
        return ("load", seq)

    def wake_time(self, seconds=None, until=None):
        if until is not None:
            if isinstance(until, datetime.datetime):
                return until.timestamp()
            return float(until)
        if seconds < 0:
            raise ValueError("sleep seconds must not be negative")
        return time.time() + seconds

    def begin_sleep(self, wake_at):
        """The savepoint taken next records the wait: its due time puts the execution
        back on the queue at ``wake_at`` should this process die meanwhile."""
        unload = wake_at - time.time() > self.engine.sleep_max_seconds
        if unload:
            self.record["status"] = Status.WAITING.value
            wake_at = _until_timeout(self.record, wake_at)
        self.record["due"] = wake_at
        return unload

    def finish_sleep(self, wake_at, inside_flow=True):
        """Wait until wake_at; a worker shutting down, or the execution ended elsewhere,
        stops the wait (the savepoint already holds the wake time)."""
        delay = wake_at - time.time()
        if delay > 0:
            self.wake.wait(delay)
        if self.done or self.engine._stopping.is_set():
            reason = "gone" if self.done else "stop"
            if inside_flow:
                self.leave((reason,))
            raise _frames.Unwind((reason,), [])
        self.record["due"] = None

    def start_child(self, flow, inputs, more):
        inputs = dict(inputs or {}, **more) if (inputs is None or isinstance(inputs, dict)) \
            else inputs
        child = self.engine.start(flow, inputs, parent=self.execution_id)
        return child

    def child_id(self, child):
        return child.id if isinstance(child, Execution) else str(child)

    def awaiting(self, ids, single):
        return {"await": ids, "single": single}

    def run_children(self, ids):
        """Run the children here while they can run; None if one of them is waiting."""
        in_flow, self.in_flow = self.in_flow, False      # interrupts are the child's now
        try:
            for child_id in ids:
                record = self.store.get_execution(child_id)
                if record is None:
                    raise KeyError(f"no child execution {child_id}")
                if Status(record["status"]) not in ENDED:
                    try:
                        self.engine._run_one(child_id)
                    except FlowNotFound:          # the child waits for its code; so do we
                        return None
                    record = self.store.get_execution(child_id)
                if Status(record["status"]) not in ENDED:
                    return None
            return True
        finally:
            self.in_flow = in_flow

    def wait_for_children(self, ids):
        self.record["status"] = Status.WAITING.value
        self.record["due"] = _until_timeout(self.record, None)
        self.record["waiting_for"] = ids

    def children_result(self, ids, single):
        outputs = []
        for child_id in ids:
            record = self.store.get_execution(child_id)
            if record["status"] == Status.ENDED_ERROR.value:
                raise FlowError(f"child execution {child_id} failed: {record.get('error')}")
            if record["status"] == Status.ENDED_CANCELLED.value:
                raise FlowError(f"child execution {child_id} was cancelled")
            outputs.append(record.get("output"))
        self.record["waiting_for"] = None
        return outputs[0] if single else outputs

    def log(self, args):
        entry = [time.time(), " ".join(str(a) for a in args)]
        self.record.setdefault("log", []).append(entry)
        self._guarded_put()

    def set_output(self, key, value):
        self.record.setdefault("outputs", {})[key] = value
        self._guarded_put()

    def set_timeout(self, seconds):
        if seconds is not None and (isinstance(seconds, bool) or
                                    not isinstance(seconds, (int, float)) or seconds < 0):
            raise ValueError(f"set_timeout takes a number of seconds >= 0, not {seconds!r}")
        self.record["timeout_at"] = None if seconds is None else time.time() + seconds
        self._guarded_put()
        if seconds is not None:
            self.engine._watchdog.poke.set()          # watch it from now on

    def success(self, value):
        return _Success(value)

    def fail(self, message):
        raise FlowError(message)

    def get_setting(self, name):
        return self.store.get_setting(f"setting:{name}")

    def set_setting(self, name, value):
        self.store.set_setting(f"setting:{name}", value)

    # -- the driver --
    def drive(self, retry_delay=FLOW_IMPORT_RETRY_SECONDS):
        """Run the execution until it ends, waits or is unloaded.  FlowNotFound (and a
        KeyboardInterrupt) leave it QUEUED, as it was, and are raised again; so does a
        full disk (StoreFull), from the write that failed: see _store_full."""
        resume_from, last_seq = self.record.get("resume_from"), self.record.get("last_seq")
        try:
            self._drive(retry_delay)
        except StoreFull as e:
            self._store_full(e, retry_delay, resume_from, last_seq)
            raise

    def _store_full(self, error, retry_delay, resume_from, last_seq):
        """A write failed for lack of space.  Unless the execution ended (or was ended
        elsewhere), put it back on the queue, QUEUED to go on from its last savepoint
        (or the one it was restored to); if even that cannot be written, keep its lease:
        lease recovery puts it back once this process lets the lease lapse."""
        with self.lock:
            stored = None if self.done else self.store.get_execution(self.execution_id)
            if stored is None or Status(stored["status"]) in ENDED:
                return
            if resume_from is not None and self.record.get("last_seq") == last_seq:
                self.record["resume_from"] = resume_from     # no savepoint since
            self.record.update(status=Status.QUEUED.value, due=time.time() + retry_delay,
                               error=f"StoreFull: {error}", output=None)
            try:
                self.store.put_execution(self.record)
            except StoreFull:
                self.keep_lease = True

    def _drive(self, retry_delay):
        record = self.record
        record.update(status=Status.RUNNING.value, due=None, updated_at=time.time(),
                      error=None)
        start_from = record.pop("resume_from", None)
        self.store.put_execution(record)
        self.thread = threading.get_ident()
        try:
            try:
                self.in_flow = True
                value = self._run(start_from)
            finally:
                self._stop_interrupts()
            self._finish(value)
        except _Interrupted:
            self._stop_interrupts()                 # ended elsewhere; nothing to write
        except _frames.Unwind as unwind:
            self._left(unwind.args[0])
        except FlowNotFound as e:
            self._requeue(time.time() + retry_delay, error=f"FlowNotFound: {e}")
            raise
        except StoreFull:
            raise                                    # drive puts it back on the queue
        except Exception as e:
            self._end(Status.ENDED_ERROR, error=f"{type(e).__name__}: {e}")
        except BaseException:                        # Ctrl-C, SystemExit: back to the queue
            self._requeue(time.time())
            raise

    def _run(self, seq):
        """Start the flow, or resume it from savepoint ``seq`` (None: the newest), and
        again from wherever the flow loads a dump; return what the flow returns."""
        fresh = seq is None and not self.record.get("last_seq")
        while True:
            try:
                if fresh:
                    handler = _load_flow(self.record["flow"])
                    return _frames.run(self.root, handler, self.system, self.this,
                                       self.record.get("inputs"))
                return self._resume(seq)
            except _frames.Unwind as unwind:
                reason = unwind.args[0]
                if reason[0] != "load":
                    raise
                del unwind
                fresh, seq = False, reason[1]
                self.record.update(restore_count=self.restore_count + 1, timeout_at=None,
                                   status=Status.RUNNING.value)

    def _resume(self, seq):
        store = self.store
        if seq is None:
            seq = self.record.get("last_seq")
        found = store.savepoint(self.execution_id, seq)
        if found is None:
            raise SavepointError(f"execution {self.execution_id} has no savepoint {seq}")
        meta, record = found
        # a module that cannot be imported here is not damage: say so, before decoding.
        # Only the flow's own module, as recorded at start: never one a record names.
        _import_flow_module(self.record["flow"].partition(":")[0])
        frames, result = _codec.decode_savepoint(
            record, store.codes_for(record), externals=self.externals, trust=self.trust,
            chunks=store.chunk)
        throw = False
        if meta["action"] in ("flow", "wait_for") and isinstance(result, dict) \
                and "await" in result:
            if self.run_children(result["await"]) is None:
                self.wait_for_children(result["await"])
                raise _frames.Unwind(("idle",), [])
            try:
                result = self.children_result(result["await"], result["single"])
            except FlowError as e:
                result, throw = e, True
        if self.record.get("due") is not None and meta["action"] in ("sleep", "sleep_until"):
            self.finish_sleep(self.record["due"], inside_flow=False)
        return _frames.resume(self.root, frames, result, throw=throw)

    def _finish(self, value):
        if isinstance(value, _Success):
            value = value.value
        self._end(Status.ENDED_SUCCESS, output=value)

    def _left(self, reason):
        kind = reason[0]
        if kind == "idle":
            self._write_unless_done()                # WAITING, with its due time
        elif kind == "timeout":
            self._end(Status.ENDED_ERROR, error=TIMEOUT_ERROR)
        elif kind == "fail":
            self._end(Status.ENDED_ERROR, error=reason[1])
        elif kind == "stop":                         # back to the queue, for any worker
            self._requeue(self.record.get("due") or time.time())
        # "lost" (another worker has it now), "gone" (ended elsewhere): nothing to write

    def _write_unless_done(self):
        with self.lock:
            if not self.done:
                self.store.put_execution(self.record)

    def _requeue(self, due, error=None):
        self.record.update(status=Status.QUEUED.value, due=due, error=error)
        self._write_unless_done()

    def _end(self, status, output=None, error=None):
        with self.lock:
            if self.done:
                return
            self._ended(status, output, error)
            self.done = True

    def _ended(self, status, output=None, error=None):
        """Write the execution's end (the caller holds the lock)."""
        record = self.record
        record.update(status=status.value, output=output, error=error, due=None,
                      updated_at=time.time(), timeout_at=None)
        try:
            self.store.put_execution(record)
        except SavepointError as e:
            record.update(status=Status.ENDED_ERROR.value, output=None,
                          error=f"the output cannot be saved: {e}")
            self.store.put_execution(record)
        self.store.delete_setting(_signal_key(self.execution_id))
        parent = record.get("parent")
        if parent:
            self.engine._wake_parent(parent)


TIMEOUT_ERROR = "TimeoutError: the execution's timeout expired"


def _until_timeout(record, due):
    """An unloaded execution must be back by its timeout, to end then."""
    timeout_at = record.get("timeout_at")
    if timeout_at is not None and (due is None or timeout_at < due):
        return timeout_at
    return due


def _signal_key(exec_id):
    return f"signal:{exec_id}"


def _pending_request(store, exec_id):
    """The request from outside waiting for this execution, or None.  A damaged one
    (CorruptSavepoint) cannot be carried out: it is dropped and logged, so that it
    stops nothing -- neither this run nor anyone else's."""
    try:
        return store.get_setting(_signal_key(exec_id))
    except SavepointError as e:
        log.warning("execution %s: dropped a damaged request: %s", exec_id, e)
        store.delete_setting(_signal_key(exec_id))
        return None


class _Watchdog:
    """One thread per engine: renews the leases of the executions it runs (every third
    of lease_seconds, so a flow computing longer than a lease keeps it; a stopped process
    stops the thread too, and its leases run out), ends them at their timeouts and
    carries out requests from outside (cancel, pause, restore, delete) while their flows
    compute, sleep or wait in a connector."""

    def __init__(self, engine):
        self.engine = engine
        self.stopped = threading.Event()
        self.poke = threading.Event()        # a new execution to watch
        # _thread: unlike Thread.start(), does not wait for the thread to be scheduled --
        # this runs before an execution resumes, where every 100 us shows
        _thread.start_new_thread(self._loop, ())

    def stop(self) -> None:
        self.stopped.set()
        self.poke.set()

    def _loop(self):
        engine = self.engine
        renew_every = engine.lease_seconds / 3
        next_renewal = time.monotonic() + renew_every
        while True:
            self.poke.wait(WATCH_SECONDS if engine._contexts else
                           min(renew_every, IDLE_WATCH_SECONDS))
            self.poke.clear()
            if self.stopped.is_set():
                return
            try:
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + renew_every
                    for exec_id in list(engine._running):
                        engine._renew(exec_id)
                for context in list(engine._contexts.values()):
                    context.watch()
            except Exception:                   # closed meanwhile: the next round stops
                if self.stopped.is_set():
                    return
                log.exception("watchdog")


class Engine:
    """Durable executions of plain Python functions, kept in one LMDB store.

    Every keyword also comes from the environment (ENGINE_PATH, ENGINE_DURABILITY,
    ENGINE_SAVEPOINT_RETENTION, ENGINE_SLEEP_MAX_SECONDS, ENGINE_LEASE_SECONDS); an
    explicit argument wins.  Invalid values raise ValueError naming the setting."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 durability: str | None = None, savepoint_retention: str | None = None,
                 sleep_max_seconds: float | None = None,
                 lease_seconds: float | None = None) -> None:
        self.path = config.value("path", path)
        self.durability = config.value("durability", durability)
        self.savepoint_retention = config.value("savepoint_retention", savepoint_retention)
        self.sleep_max_seconds = config.value("sleep_max_seconds", sleep_max_seconds)
        self.lease_seconds = config.value("lease_seconds", lease_seconds)
        self._store = Store(self.path, durability=self.durability)
        self._connectors: dict[str, Callable[..., Any]] = {}
        # the engine's own objects a savepoint may hold: not the runtime module (a
        # record must never make the engine build an Engine, or anything else of ours)
        self._trust = _codec.Trust([_Success, Execution, Savepoint, _flowapi.Setting])
        self._owner = Owner.current("engine")
        self._running: set[str] = set()  # ids this engine is running now (leases held)
        self._contexts: dict[str, _Context] = {}   # id -> _Context of the flows running now
        self._lease_checked: dict[str, float] = {}  # id -> monotonic time until which the lease is ours
        self._watchdog: _Watchdog | None = None
        self._stopping = threading.Event()
        self._calls = 0                  # Flow-API calls served (for stats)
        self._executions_run = 0
        self._busy = 0.0                 # seconds spent running executions

    # -- lifecycle --
    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        self._store.close()

    def _renew(self, exec_id):
        """Renew our lease on a running execution; False if someone else holds it now.
        Flow-API calls check again when no renewal happened for half a lease."""
        ok = self._store.renew(exec_id, self._owner, lease_seconds=self.lease_seconds)
        if ok:
            self._lease_checked[exec_id] = time.monotonic() + self.lease_seconds / 2
        return ok

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registration --
    def add_connector(self, name: str, func: _F) -> _F:
        if not callable(func):
            raise TypeError(f"connector {name!r} must be callable")
        self._connectors[name] = func
        return func

    def connector(self, name: str) -> Callable[[_F], _F]:
        def register(func: _F) -> _F:
            return self.add_connector(name, func)
        return register

    def trust(self, cls_or_module: Any) -> Any:
        """Allow instances of these user classes inside savepoints."""
        return self._trust.add(cls_or_module)

    def _trust_for(self, execution):
        """What a savepoint of this execution may rebuild: eng.trust() and the flow's
        module as recorded at start -- never what a record itself names."""
        trust = self._trust.copy()
        trust.add(execution["flow"].partition(":")[0])
        return trust

    # -- executions --
    def start(self, flow: Callable[..., Any] | str, inputs: Any = None, *,
              name: str | None = None, savepoint_retention: str | None = None,
              parent: str | None = None) -> Execution:
        """A new QUEUED execution of ``flow``: a module-level function, or
        "package.module:function".  A function of the script being run (__main__) is
        recorded by the module name other processes import it by, or refused."""
        if savepoint_retention is not None and savepoint_retention not in config.RETENTIONS:
            raise retention_error(savepoint_retention)
        now = time.time()
        record = {"id": uuid.uuid4().hex, "flow": _flow_name(flow),
                  "status": Status.QUEUED.value, "inputs": inputs, "output": None,
                  "outputs": {}, "error": None, "created_at": now, "updated_at": now,
                  "name": name, "restore_count": 0, "retention": savepoint_retention,
                  "parent": parent, "log": [], "last_seq": 0, "due": now}
        self._store.put_execution(record)
        return Execution._from(record)

    def run(self, until: str = "idle", *, execution_id: str | None = None) -> None:
        """Run every runnable execution in this process until none is runnable.  An
        execution whose flow module this process cannot import is logged and left
        QUEUED (tried again later).  ``execution_id``: run only that one (and the
        children it runs); then FlowNotFound is raised."""
        if until != "idle":
            raise ValueError("run(until=...) supports 'idle'")
        if execution_id is not None:
            self._run_one(self._resolve(execution_id), retry_delay=0.0)
            return
        while not self._stopping.is_set():
            exec_id = self._store.claim(self._owner, lease_seconds=self.lease_seconds)
            if exec_id is None:
                return
            try:
                self._drive_claimed(exec_id)
            except FlowNotFound as e:
                log.warning("execution %s stays QUEUED: %s", exec_id, e)

    def execute(self, flow: Callable[..., Any] | str, inputs: Any = None,
                **options: Any) -> Execution:
        """Start ``flow`` and run that execution here until it ends or goes idle."""
        execution = self.start(flow, inputs, **options)
        self._run_one(execution.id, retry_delay=0.0)
        return self.get(execution.id)

    def _run_one(self, exec_id, retry_delay=FLOW_IMPORT_RETRY_SECONDS):
        if self._store.claim_one(exec_id, self._owner, lease_seconds=self.lease_seconds):
            self._drive_claimed(exec_id, retry_delay)

    def _drive_claimed(self, exec_id, retry_delay=FLOW_IMPORT_RETRY_SECONDS):
        if self._watchdog is None:
            self._watchdog = _Watchdog(self)
        self._running.add(exec_id)
        started = time.monotonic()
        self._lease_checked[exec_id] = started + self.lease_seconds / 2
        record = self._store.get_execution(exec_id)
        context = None
        try:
            if record is None or Status(record["status"]) in ENDED or \
                    record["status"] == Status.PAUSED.value:
                return
            context = _Context(self, record)
            request = _pending_request(self._store, exec_id)
            if request is not None:              # asked while nobody ran it
                context.take_request(request)
                return
            timeout_at = record.get("timeout_at")
            if timeout_at is not None and time.time() >= timeout_at:
                context._end(Status.ENDED_ERROR, error=TIMEOUT_ERROR)
                log.info("execution %s (%s) ended: %s", exec_id, record["flow"],
                         TIMEOUT_ERROR)
                return
            log.info("execution %s (%s) %s", exec_id, record["flow"],
                     "resumed" if record.get("last_seq") else "started")
            self._contexts[exec_id] = context
            if record.get("timeout_at") is not None:
                self._watchdog.poke.set()      # else it looks within IDLE_WATCH_SECONDS
            try:
                context.drive(retry_delay)
            finally:
                del self._contexts[exec_id]
            self._executions_run += 1
            _log_outcome(context.record)
        finally:
            self._busy += time.monotonic() - started
            self._running.discard(exec_id)
            self._lease_checked.pop(exec_id, None)
            if context is None or not context.keep_lease:
                self._store.release(exec_id, self._owner)

    def work(self, processes: int = 2, *, connectors: Any = None) -> None:
        """Run a pool of worker processes until interrupted: SIGTERM or Ctrl-C stops it
        cleanly (running executions go back to the queue).  ``connectors``: a module
        (or its name) whose register(eng) adds connectors in each worker, besides the
        ones this engine has."""
        from engine import workers
        return workers.Pool(self, processes, connectors=connectors).run()

    def stop(self) -> None:
        """Ask this engine's runs to stop: running flows leave at their next Flow-API
        call (a sleeping one at once), back to the queue."""
        self._stopping.set()
        for context in list(self._contexts.values()):
            context.wake.set()

    def stats(self) -> dict[str, Any]:
        """What a scaler watches: per worker its busy fraction and executions and
        Flow-API calls per second (over its last report), and the queue depth."""
        from engine import workers
        return workers.stats(self._store)

    def check(self, repair: bool = False) -> dict[str, Any]:
        """Verify every record of the store (`engine doctor`): {"checked": {database:
        entries}, "problems": [{"db", "key", "execution", "problem", "repair",
        "repaired"}, ...]}.  ``repair``: also fix what can be fixed without losing
        anything (run-queue entries out of step, dangling names, unused code and chunks,
        ...; engine.storecheck lists them); damaged executions, savepoints and settings
        are only reported -- delete them, or restore to an intact savepoint."""
        return self._store.check(repair=repair)

    def _resolve(self, execution_id):
        """The full id of the execution ``execution_id`` names: its id, or a prefix of
        exactly one id."""
        if not isinstance(execution_id, str) or not execution_id:
            raise ExecutionNotFound(f"no execution {execution_id!r}")
        ids = self._store.ids_with_prefix(execution_id, limit=5)
        if execution_id in ids:
            return execution_id
        if not ids:
            raise ExecutionNotFound(f"no execution {execution_id!r}")
        if len(ids) > 1:
            raise ExecutionNotFound(
                f"execution id {execution_id!r} is ambiguous: it starts "
                f"{', '.join(i[:12] for i in ids[:4])}{', ...' if len(ids) > 4 else ''}")
        return ids[0]

    def get(self, execution_id: str) -> Execution:
        """The execution, fresh from the store (a unique id prefix is accepted)."""
        return Execution._from(self._record(self._resolve(execution_id)))

    def _record(self, execution_id):
        """The execution's stored record; ExecutionNotFound if there is none."""
        record = self._store.get_execution(execution_id)
        if record is None:
            raise ExecutionNotFound(f"no execution {execution_id!r}")
        return record

    def executions(self, status: Status | str | None = None) -> list[Execution]:
        wanted = None if status is None else _status(status)
        return [Execution._from(r) for r in self._store.executions()
                if wanted is None or r["status"] == wanted.value]

    def savepoints(self, execution_id: str) -> list[Savepoint]:
        execution_id = self._resolve(execution_id)
        return [_savepoint(execution_id, m) for m in self._store.savepoints(execution_id)]

    def _find_seq(self, execution_id, savepoint, by="id"):
        """The seq of the savepoint ``savepoint`` names: by="id" an id ("<execution>.<seq>")
        or a seq (an int, or a string of digits); by="name" its name."""
        if by == "name":
            seq = self._store.seq_of(execution_id, str(savepoint))
            if seq is None:
                raise SavepointNotFound(f"execution {execution_id} has no savepoint named "
                                        f"{savepoint!r}")
            return seq
        if by != "id":
            raise ValueError(f"by must be 'id' or 'name', not {by!r}")
        seq = None
        if isinstance(savepoint, int) and not isinstance(savepoint, bool):
            seq = savepoint
        elif isinstance(savepoint, str):
            owner, dot, digits = savepoint.rpartition(".")
            if not dot and savepoint.isdigit():
                seq = int(savepoint)
            elif owner == execution_id and digits.isdigit():
                seq = int(digits)
        if seq is None or seq < 0 or self._store.savepoint(execution_id, seq) is None:
            hint = " (a name? pass by='name')" if isinstance(savepoint, str) and \
                by == "id" and self._store.seq_of(execution_id, savepoint) is not None else ""
            raise SavepointNotFound(f"execution {execution_id} has no savepoint "
                                    f"{savepoint!r}{hint}")
        return seq

    def savepoint(self, execution_id: str, savepoint: int | str,
                  by: str = "id") -> Savepoint:
        """One savepoint, named by id or seq (or by name with by="name")."""
        execution_id = self._resolve(execution_id)
        seq = self._find_seq(execution_id, savepoint, by)
        meta, _ = self._store.savepoint(execution_id, seq)
        return _savepoint(execution_id, meta)

    def inspect(self, execution_id: str, savepoint: int | str,
                by: str = "id") -> list[FrameView]:
        """Every frame of a savepoint, outermost first, with its locals -- decoded
        without running any flow code, building any instance or importing any module."""
        execution_id = self._resolve(execution_id)
        seq = self._find_seq(execution_id, savepoint, by)
        _, record = self._store.savepoint(execution_id, seq)
        stand_ins = {name: _codec.Unbuilt("global", name) for name in ("this", "system")}
        frames, _ = _codec.decode_savepoint(
            record, self._store.codes_for(record), externals=stand_ins,
            trust=self._trust_for(self._record(execution_id)), chunks=self._store.chunk,
            inspect=True)
        views = []
        for frame in frames:
            code = frame.code
            shown, unbound = {}, []
            for i, value in enumerate(frame.locals):
                name = code._varname_from_oparg(i)  # type: ignore[attr-defined]
                if type(value) is types.CellType:
                    try:
                        value = value.cell_contents
                    except ValueError:
                        value = _frames.EMPTY
                if value is _frames.EMPTY:
                    unbound.append(name)
                else:
                    shown[name] = value
            views.append(FrameView(function=code.co_qualname, module=frame.func.__module__,
                                   file=code.co_filename, line=frame.line, locals=shown,
                                   unbound=unbound))
        return views

    def restore(self, execution_id: str, savepoint: int | str,
                by: str = "id") -> Execution:
        """Revert the execution to that savepoint; it is QUEUED to go on from there."""
        execution_id = self._resolve(execution_id)
        seq = self._find_seq(execution_id, savepoint, by)
        return self._request(execution_id, ["restore", seq])

    def fork(self, execution_id: str, savepoint: int | str, by: str = "id") -> Execution:
        """A new QUEUED execution that goes on from that savepoint."""
        execution_id = self._resolve(execution_id)
        seq = self._find_seq(execution_id, savepoint, by)
        meta, record = self._store.savepoint(execution_id, seq)
        source = self._store.get_execution(execution_id)
        if source.get("damaged") and not source.get("flow"):    # its record is lost
            raise InvalidTransition(f"cannot fork execution {execution_id}: "
                                    f"{source['damaged']}")
        child = self.start(source["flow"], source.get("inputs"), name=source.get("name"),
                           savepoint_retention=source.get("retention"))
        new = self._store.get_execution(child.id)
        codes = list(self._store.codes_for(record).values())
        chunks = {d: self._store.chunk(d) for d in meta.get("chunks") or ()}
        self._store.commit_savepoint(new, {k: meta[k] for k in
                                           ("kind", "name", "created_at", "line", "action",
                                            "command")}, record, codes, chunks)
        new.update(status=Status.QUEUED.value, due=time.time(), resume_from=new["last_seq"])
        self._store.put_execution(new)
        return self.get(child.id)

    def delete(self, execution_id: str, *, wait: float | None = None) -> None:
        """Delete the execution and all its savepoints.  A running one is stopped first
        by the process running it; nothing brings it back.  ``wait``: how long to wait
        for that process (default: two leases, so a hung one's lease runs out)."""
        execution_id = self._resolve(execution_id)
        deadline = time.monotonic() + (2 * self.lease_seconds + 5 if wait is None else wait)
        asked = False
        while True:
            outcome = self._store.delete_unless_leased(execution_id)
            if outcome != "leased":
                return
            if not asked:
                self._store.set_setting(_signal_key(execution_id), ["delete"])
                asked = True
            if time.monotonic() > deadline:
                raise EngineError(f"execution {execution_id} is running in a worker that "
                                  f"did not stop it in time; it was asked to delete it")
            time.sleep(0.02)

    def _request(self, execution_id, request, wait=True):
        """Carry out cancel/pause/resume/restore: at once if no live process runs the
        execution, else through that process (which checks again), waiting a moment
        for it.  InvalidTransition, and nothing changed, if it does not apply."""
        outcome, record = self._store.update_unless_leased(
            execution_id, lambda record: apply_request(record, request))
        if outcome == "missing":
            raise ExecutionNotFound(f"no execution {execution_id!r}")
        if outcome == "leased":
            check_transition(request[0], record)
            key = _signal_key(execution_id)
            self._store.set_setting(key, request)
            deadline = time.monotonic() + min(5.0, self.lease_seconds)
            while wait and _pending_request(self._store, execution_id) is not None and \
                    time.monotonic() < deadline:
                time.sleep(0.01)
        elif request[0] == "cancel":
            self._cancel_children(execution_id)
        return Execution._from(self._record(execution_id)) if wait else None

    def _cancel_children(self, parent_id):
        """Cancelling a parent cancels its unfinished children (and theirs)."""
        for record in self._store.executions():
            if record.get("parent") == parent_id and Status(record["status"]) not in ENDED:
                try:
                    self._request(record["id"], ["cancel"], wait=False)
                except (InvalidTransition, ExecutionNotFound):
                    pass                         # ended or gone meanwhile

    def cancel(self, execution_id: str) -> Execution:
        """End the execution ENDED_CANCELLED, and its unfinished children."""
        return self._request(self._resolve(execution_id), ["cancel"])

    def pause(self, execution_id: str) -> Execution:
        """PAUSED until resume(); a sleeper keeps its wake time."""
        return self._request(self._resolve(execution_id), ["pause"])

    def resume(self, execution_id: str) -> Execution:
        """A PAUSED execution goes on (a sleeper at its wake time)."""
        return self._request(self._resolve(execution_id), ["resume"])

    def _wake_parent(self, parent_id):
        record = self._store.get_execution(parent_id)
        if record is not None and record["status"] == Status.WAITING.value and \
                record.get("waiting_for"):
            record.update(due=time.time())
            self._store.put_execution(record)


def _status(value):
    """A Status from a Status or its name, any case; ValueError naming the choices."""
    try:
        return Status(str(value).upper())
    except ValueError:
        raise ValueError(f"status must be one of {', '.join(s.value for s in Status)}, "
                         f"not {value!r}") from None


def _savepoint(execution_id, meta):
    return Savepoint(id=_savepoint_id(execution_id, meta["seq"]), execution_id=execution_id,
                     seq=meta["seq"], kind=meta["kind"], name=meta["name"],
                     created_at=_utc(meta["created_at"]), line=meta["line"],
                     action=meta["action"], command=meta["command"], size=meta["size"],
                     damaged=meta.get("damaged"))


def _log_outcome(record):
    status = record["status"]
    if status == Status.ENDED_ERROR.value:
        log.info("execution %s (%s) failed: %s", record["id"], record["flow"],
                 record.get("error"))
    elif status in (Status.ENDED_SUCCESS.value, Status.ENDED_CANCELLED.value):
        log.info("execution %s (%s) ended %s", record["id"], record["flow"], status)
    else:
        log.info("execution %s (%s) left: %s", record["id"], record["flow"], status)
