"""The runtime: Engine, executions, savepoints and restore (../shared/SPEC.md).

An execution runs its flow under a frame-core Root.  Every Flow-API call (engine._flowapi)
comes back here through an _Context: the call's work, then a savepoint of the flow's
frames with the call's result, committed with the execution's new state.  The driver
(_Context.drive) starts a flow fresh or resumes it from a savepoint, and turns whatever
leaves the flow -- a return, an exception, an Unwind for load_dump or an idle wait --
into the execution's next state.
"""
import dataclasses
import datetime
import enum
import importlib
import linecache
import _thread
import os
import sys
import threading
import time
import uuid

from engine import _codec, _flowapi, _frames
from engine.errors import SavepointError
from engine.store import RETENTIONS, Owner, Store, default_path, retention_error

RESTORE_LOOP_LIMIT = 100
SIGNAL_CHECK_SECONDS = 0.05


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
    inputs: object = None
    output: object = None
    outputs: dict = dataclasses.field(default_factory=dict)
    error: str = None
    created_at: datetime.datetime = None
    updated_at: datetime.datetime = None
    name: str = None
    restore_count: int = 0
    parent: str = None
    log: list = dataclasses.field(default_factory=list)

    @classmethod
    def _from(cls, record):
        return cls(id=record["id"], flow=record["flow"], status=Status(record["status"]),
                   inputs=record.get("inputs"), output=record.get("output"),
                   outputs=dict(record.get("outputs") or {}), error=record.get("error"),
                   created_at=_utc(record.get("created_at")),
                   updated_at=_utc(record.get("updated_at")), name=record.get("name"),
                   restore_count=record.get("restore_count") or 0,
                   parent=record.get("parent"), log=list(record.get("log") or []))


@dataclasses.dataclass
class Savepoint:
    id: str
    execution_id: str
    seq: int
    kind: str
    name: str
    created_at: datetime.datetime
    line: int
    action: str
    command: str
    size: int


def _savepoint_id(exec_id, seq):
    return f"{exec_id}.{seq}"


def _flow_name(flow):
    if isinstance(flow, str):
        if ":" not in flow:
            raise ValueError(f"flow {flow!r} must be a function or 'package.module:function'")
        return flow
    if not callable(flow) or not hasattr(flow, "__qualname__"):
        raise TypeError(f"flow must be a module-level function, not {type(flow).__name__}")
    if "<locals>" in flow.__qualname__ or flow.__module__ is None:
        raise ValueError(f"flow {flow.__qualname__} must be defined at module level")
    return f"{flow.__module__}:{flow.__qualname__}"


def _load_flow(name):
    module_name, _, qualname = name.partition(":")
    if module_name == "__main__" or module_name not in sys.modules:
        module = importlib.import_module(module_name)
    else:
        module = sys.modules[module_name]
    target = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


_commands = {}      # (id(code), offset) -> (code, source text); the code keeps the id


def _command(frame):
    """The source text of the call the innermost frame waits on (co_positions)."""
    code = frame.code
    found = _commands.get((id(code), frame.offset))
    if found is not None and found[0] is code:
        return found[1]
    text = _command_text(code, frame.offset)
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


class FlowError(Exception):
    """this.error(message): the execution ends ENDED_ERROR with that message."""


class _Context:
    """One execution being run by one engine in this process."""

    def __init__(self, engine, record):
        self.engine = engine
        self.store = engine._store
        self.record = record
        self.execution_id = record["id"]
        self.root = _frames.Root()
        self.this = _flowapi.This(self, self.root)
        self.system = _flowapi.System(self.this)
        self.externals = {"this": self.this, "system": self.system}
        self.last_signal_check = 0.0
        self.trust = engine._trust.copy()
        self.trusted_modules = set()

    # -- facts --
    @property
    def inputs(self):
        return self.record.get("inputs")

    @property
    def restore_count(self):
        return self.record.get("restore_count") or 0

    # -- savepoints --
    def next_savepoint_id(self):
        return _savepoint_id(self.execution_id, (self.record.get("last_seq") or 0) + 1)

    def savepoint(self, frames, action, result, kind="implicit", name=None):
        engine = self.engine
        for frame in frames:
            module = frame.func.__module__
            if module not in self.trusted_modules:        # flows' modules are trusted
                self.trusted_modules.add(module)
                self.trust.add(module)
        chunks = {}
        record, codes = _codec.encode_snapshot(frames, externals=self.externals,
                                               trust=self.trust, chunks=chunks,
                                               result=result)
        inner = frames[-1]
        meta = {"kind": kind, "name": name, "created_at": time.time(), "line": inner.line,
                "action": action, "command": _command(inner)}
        self.record["updated_at"] = meta["created_at"]
        engine._calls += 1
        self.store.commit_savepoint(
            self.record, meta, record, codes, chunks,
            retention=self.record.get("retention") or engine.savepoint_retention)

    # -- checks at every call --
    def check(self):
        engine = self.engine
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
        if now - self.last_signal_check > SIGNAL_CHECK_SECONDS:
            self.last_signal_check = now
            signal = self.store.get_setting(f"signal:{self.execution_id}")
            if signal is not None:
                self.leave(("signal", signal))

    def leave(self, reason):
        """Leave the flow now, running none of its finally/except/with handlers."""
        keep = _frames.strip_handlers(self.root)
        raise _frames.Unwind(reason, keep)

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
        self.record["due"] = wake_at
        return unload

    def finish_sleep(self, wake_at, inside_flow=True):
        """Wait until wake_at; a worker shutting down stops waiting (the savepoint
        already holds the wake time, so the execution goes on then, elsewhere)."""
        delay = wake_at - time.time()
        if delay > 0 and self.engine._stopping.wait(delay):
            if inside_flow:
                self.leave(("stop",))
            raise _frames.Unwind(("stop",), [])
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
        for child_id in ids:
            record = self.store.get_execution(child_id)
            if record is None:
                raise KeyError(f"no child execution {child_id}")
            if Status(record["status"]) not in ENDED:
                self.engine._run_one(child_id)
                record = self.store.get_execution(child_id)
            if Status(record["status"]) not in ENDED:
                return None
        return True

    def wait_for_children(self, ids):
        self.record["status"] = Status.WAITING.value
        self.record["due"] = None
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
        return outputs[0] if single else outputs

    def log(self, args):
        entry = " ".join(str(a) for a in args)
        self.record.setdefault("log", []).append(entry)
        self.store.put_execution(self.record)

    def set_output(self, key, value):
        self.record.setdefault("outputs", {})[key] = value
        self.store.put_execution(self.record)

    def set_timeout(self, seconds):
        self.record["timeout_at"] = None if seconds is None else time.time() + seconds
        self.store.put_execution(self.record)

    def success(self, value):
        return _Success(value)

    def fail(self, message):
        raise FlowError(message)

    def get_setting(self, name):
        return self.store.get_setting(f"setting:{name}")

    def set_setting(self, name, value):
        self.store.set_setting(f"setting:{name}", value)

    # -- the driver --
    def drive(self):
        """Run the execution until it ends, waits or is unloaded."""
        record = self.record
        record.update(status=Status.RUNNING.value, due=None, updated_at=time.time())
        start_from = record.pop("resume_from", None)
        self.store.put_execution(record)
        try:
            self._finish(self._run(start_from))
        except _frames.Unwind as unwind:
            self._left(unwind)
        except Exception as e:
            self._end(Status.ENDED_ERROR, error=f"{type(e).__name__}: {e}")

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
        frames, result = _codec.decode_savepoint(
            record, store.codes_for(record), externals=self.externals,
            trust=self.engine._trust_for_record(record), chunks=store.chunk)
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

    def _left(self, unwind):
        reason = unwind.args[0]
        kind = reason[0]
        if kind == "idle":
            self.store.put_execution(self.record)       # WAITING, with its due time
        elif kind == "timeout":
            self._end(Status.ENDED_ERROR, error="TimeoutError: the execution's timeout "
                                                "expired")
        elif kind == "fail":
            self._end(Status.ENDED_ERROR, error=reason[1])
        elif kind == "signal":
            self.engine._apply_signal(self.execution_id, reason[1], self.record)
        elif kind == "lost":                         # another worker has it now
            pass
        elif kind == "stop":                         # back to the queue, for any worker
            self.record.update(status=Status.QUEUED.value,
                               due=self.record.get("due") or time.time())
            self.store.put_execution(self.record)

    def _end(self, status, output=None, error=None):
        record = self.record
        record.update(status=status.value, output=output, error=error, due=None,
                      updated_at=time.time(), timeout_at=None)
        try:
            self.store.put_execution(record)
        except SavepointError as e:
            record.update(status=Status.ENDED_ERROR.value, output=None,
                          error=f"the output cannot be saved: {e}")
            self.store.put_execution(record)
        parent = record.get("parent")
        if parent:
            self.engine._wake_parent(parent)


class Engine:
    """Durable executions of plain Python functions, kept in one LMDB store."""

    def __init__(self, path=None, *, durability="sync", savepoint_retention="all",
                 sleep_max_seconds=None, lease_seconds=30.0):
        if savepoint_retention not in RETENTIONS:
            raise retention_error(savepoint_retention)
        if sleep_max_seconds is None:
            sleep_max_seconds = float(os.environ.get("ENGINE_SLEEP_MAX_SECONDS", 60.0))
        if sleep_max_seconds < 0 or lease_seconds <= 0:
            raise ValueError("sleep_max_seconds must be >= 0 and lease_seconds > 0")
        self.path = path or default_path()
        self.durability = durability
        self.savepoint_retention = savepoint_retention
        self.sleep_max_seconds = float(sleep_max_seconds)
        self.lease_seconds = float(lease_seconds)
        self._store = Store(self.path, durability=durability)
        self._connectors = {}
        self._trust = _codec.Trust([sys.modules[__name__], _flowapi.Setting])
        self._owner = Owner.current("engine")
        self._running = set()            # ids this engine is running now (leases held)
        self._lease_checked = {}         # id -> monotonic time until which the lease is ours
        self._heartbeat = None
        self._stopping = threading.Event()
        self._calls = 0                  # Flow-API calls served (for stats)
        self._executions_run = 0
        self._busy = 0.0                 # seconds spent running executions

    # -- lifecycle --
    def close(self):
        if self._heartbeat is not None:
            self._heartbeat.set()
        self._store.close()

    def _keep_leases(self):
        """A thread that renews the leases of the executions this engine runs, every
        third of lease_seconds, so a flow computing for longer than a lease between two
        Flow-API calls keeps it; a process that stops (SIGSTOP, a debugger) stops the
        thread too, and its leases run out."""
        stop = threading.Event()

        def beat():
            while not stop.wait(self.lease_seconds / 3):
                for exec_id in list(self._running):
                    try:
                        self._renew(exec_id)
                    except Exception:          # closed meanwhile: the next beat stops
                        pass
        # _thread: unlike Thread.start(), does not wait for the thread to be scheduled --
        # this runs before an execution resumes, where every 100 us shows
        _thread.start_new_thread(beat, ())
        return stop

    def _renew(self, exec_id):
        """Renew our lease on a running execution; False if someone else holds it now.
        Flow-API calls check again when no renewal happened for half a lease."""
        ok = self._store.renew(exec_id, self._owner, lease_seconds=self.lease_seconds)
        if ok:
            self._lease_checked[exec_id] = time.monotonic() + self.lease_seconds / 2
        return ok

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- registration --
    def add_connector(self, name, func):
        if not callable(func):
            raise TypeError(f"connector {name!r} must be callable")
        self._connectors[name] = func
        return func

    def connector(self, name):
        def register(func):
            return self.add_connector(name, func)
        return register

    def trust(self, cls_or_module):
        """Allow instances of these user classes inside savepoints."""
        return self._trust.add(cls_or_module)

    def _trust_for_record(self, record):
        trust = self._trust.copy()
        for module, _, _ in _codec.read_header(record):
            trust.add(module)
        return trust

    # -- executions --
    def start(self, flow, inputs=None, *, name=None, savepoint_retention=None, parent=None):
        """A new QUEUED execution of ``flow``."""
        if savepoint_retention is not None and savepoint_retention not in RETENTIONS:
            raise retention_error(savepoint_retention)
        now = time.time()
        record = {"id": uuid.uuid4().hex, "flow": _flow_name(flow),
                  "status": Status.QUEUED.value, "inputs": inputs, "output": None,
                  "outputs": {}, "error": None, "created_at": now, "updated_at": now,
                  "name": name, "restore_count": 0, "retention": savepoint_retention,
                  "parent": parent, "log": [], "last_seq": 0, "due": now}
        self._store.put_execution(record)
        return Execution._from(record)

    def run(self, until="idle"):
        """Run every runnable execution in this process until none is runnable."""
        if until != "idle":
            raise ValueError("run(until=...) supports 'idle'")
        while not self._stopping.is_set():
            exec_id = self._store.claim(self._owner, lease_seconds=self.lease_seconds)
            if exec_id is None:
                return
            self._drive_claimed(exec_id)

    def execute(self, flow, inputs=None, **options):
        """Start ``flow`` and run that execution here until it ends or goes idle."""
        execution = self.start(flow, inputs, **options)
        self._run_one(execution.id)
        return self.get(execution.id)

    def _run_one(self, exec_id):
        if self._store.claim_one(exec_id, self._owner, lease_seconds=self.lease_seconds):
            self._drive_claimed(exec_id)

    def _drive_claimed(self, exec_id):
        if self._heartbeat is None:
            self._heartbeat = self._keep_leases()
        self._running.add(exec_id)
        started = time.monotonic()
        self._lease_checked[exec_id] = started + self.lease_seconds / 2
        record = self._store.get_execution(exec_id)
        try:
            if record is None or Status(record["status"]) in ENDED or \
                    record["status"] == Status.PAUSED.value:
                return
            _Context(self, record).drive()
            self._executions_run += 1
        finally:
            self._busy += time.monotonic() - started
            self._running.discard(exec_id)
            self._lease_checked.pop(exec_id, None)
            self._store.release(exec_id, self._owner)

    def work(self, processes=2, *, connectors=None):
        """Run a pool of worker processes until interrupted: SIGTERM or Ctrl-C stops it
        cleanly (running executions go back to the queue).  ``connectors``: a module
        (or its name) whose register(eng) adds connectors in each worker, besides the
        ones this engine has."""
        from engine import workers
        return workers.Pool(self, processes, connectors=connectors).run()

    def stop(self):
        """Ask this engine's runs to stop: running flows leave at their next Flow-API
        call, back to the queue."""
        self._stopping.set()

    def stats(self):
        """What a scaler watches: per worker its busy fraction and executions and
        Flow-API calls per second (over its last report), and the queue depth."""
        from engine import workers
        return workers.stats(self._store)

    def get(self, execution_id):
        return Execution._from(self._record(execution_id))

    def _record(self, execution_id):
        """The execution's stored record; KeyError if there is none."""
        record = self._store.get_execution(execution_id)
        if record is None:
            raise KeyError(f"no execution {execution_id!r}")
        return record

    def executions(self, status=None):
        wanted = None if status is None else Status(status)
        return [Execution._from(r) for r in self._store.executions()
                if wanted is None or r["status"] == wanted.value]

    def savepoints(self, execution_id):
        self._record(execution_id)                   # KeyError if there is none
        return [Savepoint(id=_savepoint_id(execution_id, m["seq"]),
                          execution_id=execution_id, seq=m["seq"], kind=m["kind"],
                          name=m["name"], created_at=_utc(m["created_at"]), line=m["line"],
                          action=m["action"], command=m["command"], size=m["size"])
                for m in self._store.savepoints(execution_id)]

    def _find_seq(self, execution_id, name_or_id, by):
        if by == "name":
            seq = self._store.seq_of(execution_id, str(name_or_id))
            if seq is None:
                raise KeyError(f"execution {execution_id} has no savepoint named "
                               f"{name_or_id!r}")
            return seq
        if by != "id":
            raise ValueError("by must be 'id' or 'name'")
        owner, _, seq = str(name_or_id).rpartition(".")
        if owner != execution_id or not seq.isdigit() or \
                self._store.savepoint(execution_id, int(seq)) is None:
            raise KeyError(f"execution {execution_id} has no savepoint {name_or_id!r}")
        return int(seq)

    def restore(self, execution_id, savepoint_id_or_name, by="id"):
        """Revert the execution to that savepoint; it is QUEUED to go on from there."""
        seq = self._find_seq(execution_id, savepoint_id_or_name, by)
        lease = self._store.lease(execution_id)
        if lease is not None and lease.held(time.time()) and lease.owner != self._owner:
            self._store.set_setting(f"signal:{execution_id}", ["restore", seq])
            return self.get(execution_id)
        record = self._store.get_execution(execution_id)
        self._apply_signal(execution_id, ["restore", seq], record)
        return self.get(execution_id)

    def _apply_signal(self, execution_id, signal, record):
        """Carry out a request from outside (restore, cancel, pause) on a record."""
        self._store.set_setting(f"signal:{execution_id}", None)
        kind = signal[0]
        if kind == "restore":
            record.update(status=Status.QUEUED.value, due=time.time(), resume_from=signal[1],
                          restore_count=(record.get("restore_count") or 0) + 1,
                          timeout_at=None, error=None, output=None)
        elif kind == "cancel":
            record.update(status=Status.ENDED_CANCELLED.value, due=None)
        elif kind == "pause":
            record.update(status=Status.PAUSED.value, due=None)
        self._store.put_execution(record)

    def fork(self, execution_id, savepoint_id_or_name, by="id"):
        """A new QUEUED execution that goes on from that savepoint."""
        seq = self._find_seq(execution_id, savepoint_id_or_name, by)
        meta, record = self._store.savepoint(execution_id, seq)
        source = self._store.get_execution(execution_id)
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

    def delete(self, execution_id):
        if not self._store.delete_execution(execution_id):
            raise KeyError(f"no execution {execution_id!r}")

    def _request(self, execution_id, kind):
        record = self._record(execution_id)
        lease = self._store.lease(execution_id)
        if lease is not None and lease.held(time.time()):
            self._store.set_setting(f"signal:{execution_id}", [kind])
        else:
            self._apply_signal(execution_id, [kind], record)
        return self.get(execution_id)

    def cancel(self, execution_id):
        return self._request(execution_id, "cancel")

    def pause(self, execution_id):
        return self._request(execution_id, "pause")

    def resume(self, execution_id):
        record = self._record(execution_id)
        if record["status"] == Status.PAUSED.value:
            record.update(status=Status.QUEUED.value, due=time.time())
            self._store.put_execution(record)
        return self.get(execution_id)

    def _wake_parent(self, parent_id):
        record = self._store.get_execution(parent_id)
        if record is not None and record["status"] == Status.WAITING.value and \
                record.get("waiting_for"):
            record.update(due=time.time())
            self._store.put_execution(record)
