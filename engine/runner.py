"""The driver: runs executions in this process.

A Runner claims executions from the store and drives each as a Run, on a thread of its
Scheduler (engine.scheduler): its flow starts fresh under a frame-core Root, or resumes
from a savepoint, or goes on from where it parked, and again from wherever it loads a
dump.  Whatever leaves the flow -- a return, an exception, or an Unwind carrying an
engine.leaving event -- becomes the execution's next state (Park: it waits in memory).
Every Flow-API call comes back through the run's FlowAPI (engine.flowapi); the runner's
Watchdog (engine.watchdog) keeps the leases and may end a run from outside meanwhile.
"""
import contextlib
import ctypes
import logging
import threading
import time
from typing import Any, NamedTuple

from engine import _codec, _flowapi, _frames
from engine.errors import (FlowError, FlowNotFound, InvalidTransition, SavepointError,
                           StoreFull, StoreUnavailable)
from engine.flowapi import FlowAPI, Receiving, Retrying, Success, until_timeout
from engine.flows import import_flow_module, load_flow
from engine.leaving import Fail, Gone, Idle, Load, Lost, Park, Stop, Timeout
from engine.metrics import Latencies
from engine.lifecycle import (TIMEOUT_ERROR, apply_request, cancel_children, drop_request,
                              pending_request, wake_parent)
from engine.scheduler import Scheduler
from engine.store import Owner, StoreProtocol
from engine.types import ENDED, Execution, Savepoint, Status
from engine.watchdog import Watchdog

log = logging.getLogger("engine")

FLOW_IMPORT_RETRY_SECONDS = 5.0  # a flow module that cannot be imported: try again then
_NOT_WRITTEN = (StoreFull, StoreUnavailable)   # a write the store could not make: the
                                              # execution is not at fault, it goes on later


class Counters(NamedTuple):
    """What a runner has done so far, and holds now (for stats)."""
    calls: int                   # Flow-API calls served
    executions: int              # runs that ended or were unloaded
    busy_seconds: float          # time spent running executions, summed over threads
    running: int = 0             # executions on a thread now
    parked: int = 0              # executions parked in memory now
    commit_counts: tuple = ()    # savepoint commits per engine.metrics.COMMIT_BUCKETS
    commit_seconds: float = 0.0  # their total time


class Runner:
    """One engine's runs in this process: which executions it holds (leases), which it
    runs or keeps parked now (engine.scheduler), the connectors and trusted classes
    their flows use, and its counters."""

    def __init__(self, store: StoreProtocol, *, lease_seconds: float, sleep_max_seconds: float,
                 savepoint_retention: str, concurrency: int = 1) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.sleep_max_seconds = sleep_max_seconds
        self.savepoint_retention = savepoint_retention
        self.connectors: dict[str, Any] = {}
        # name -> (retries, backoff seconds) of the connectors tried again after a failure
        self.connector_retries: dict[str, tuple[int, float]] = {}
        # the engine's own objects a savepoint may hold: not the runtime modules (a
        # record must never make the engine build an Engine, or anything else of ours)
        self.trust = _codec.Trust([Success, Receiving, Retrying, Execution, Savepoint,
                                   _flowapi.Setting])
        self.trust_by_module: dict[str, Any] = {}   # trust_for's, shared by the runs
        self.owner = Owner.current("engine")
        self.holding = threading.Lock()
        self.running: set[str] = set()   # ids held (leases): starting, running or parked
        self.runs: dict[str, Run] = {}   # id -> Run, running or parked
        self.deadlines: dict[str, Run] = {}   # the runs with a timeout (the watchdog's)
        # ids our own claim took off the queue while they ran here (made due meanwhile,
        # e.g. restored from outside): back on the queue when let go
        self.due_again: set[str] = set()
        # id -> monotonic time until which its lease is surely ours (see FlowAPI.check)
        self.lease_checked: dict[str, float] = {}
        self.watchdog: Watchdog | None = None
        self.stopping = threading.Event()
        self.scheduler = Scheduler(self, concurrency)
        self.calls = 0                   # Flow-API calls of the runs no longer held
        self.commit_latencies = Latencies()
        self.executions_run = 0
        self.busy = 0.0

    def trust_for(self, record):
        """What a savepoint of this execution may rebuild: eng.trust() and the flow's
        module as recorded at start -- never what a record itself names.  One per flow
        module, shared by its runs (10,000 parked executions need not hold 10,000)."""
        module = record["flow"].partition(":")[0]
        trust = self.trust_by_module.get(module)
        if trust is None:
            trust = self.trust.copy()
            trust.add(module)
            self.trust_by_module[module] = trust
        return trust

    def add_trust(self, cls_or_module):
        self.trust_by_module.clear()
        return self.trust.add(cls_or_module)

    def replace_trust(self, trust):
        self.trust_by_module.clear()
        self.trust = trust

    def counters(self):
        calls = self.calls + sum(run.calls for run in list(self.runs.values()))
        latencies = self.commit_latencies
        return Counters(calls, self.executions_run, self.busy, *self.scheduler.counts(),
                        tuple(latencies.counts), latencies.total)

    # -- leases --
    def take(self, exec_id):
        """Hold the execution here (before or after the store's claim); False if this
        process holds it already -- it never runs on two threads at once."""
        with self.holding:
            if exec_id in self.running:
                return False
            self.running.add(exec_id)
            self.lease_checked[exec_id] = time.monotonic() + self.lease_seconds / 2
            return True

    def renew(self, exec_id):
        """Renew our lease on a running execution; False if someone else holds it now.
        Flow-API calls check again when no renewal happened for half a lease."""
        return exec_id in self.renew_many([exec_id])

    def renew_many(self, exec_ids):
        """Renew our leases on these executions (one store transaction); the ids still
        ours.  A parked one that is not ours any more is forgotten here."""
        held = self.store.renew_many(exec_ids, self.owner, lease_seconds=self.lease_seconds)
        until = time.monotonic() + self.lease_seconds / 2
        for exec_id in exec_ids:
            if exec_id in held:
                self.lease_checked[exec_id] = until
                continue
            run = self.runs.get(exec_id)
            if run is not None and self.scheduler.discard(run):
                run.done = True
                self.finish(run, release=False)
        return held

    def renew_all(self):
        """Renew every lease this process holds (the watchdog, every third of a lease)."""
        if self.running:
            self.renew_many(list(self.running))

    def claim(self, limit):
        """Claim up to ``limit`` due executions to start here.  One of ours that is
        parked comes back through the queue when something woke it elsewhere (a child
        ended in another process): it is woken, not started again."""
        claimed, not_held = [], []
        for exec_id in self.store.claim_many(self.owner, limit,
                                             lease_seconds=self.lease_seconds):
            if self.take(exec_id):
                claimed.append(exec_id)
            elif not self.scheduler.wake(exec_id):
                with self.holding:
                    if exec_id in self.running:     # running (or finishing) here
                        self.due_again.add(exec_id)
                    else:                           # let go meanwhile
                        not_held.append(exec_id)
        for exec_id in not_held:
            self._put_due_back(exec_id)
        return claimed

    # -- sessions (engine.scheduler) --
    def stop(self):
        """Running flows leave at their next Flow-API call; parked ones are unloaded."""
        self.stopping.set()
        self.scheduler.wake_all()

    def close(self):
        self.scheduler.close()
        if self.watchdog is not None:
            self.watchdog.stop()

    def run_until_idle(self):
        """Claim and run every runnable execution until none is left (or stop())."""
        self.scheduler.run()

    def serve(self):
        """Claim and run executions until stop()."""
        self.scheduler.run(until_stopped=True)

    def _claim_here(self, exec_id):
        """Hold and lease that execution here, unless this process or another live one
        holds it already; whether it did."""
        if not self.take(exec_id):
            return False
        if not self.store.claim_one(exec_id, self.owner, lease_seconds=self.lease_seconds):
            self.let_go(exec_id)
            return False
        return True

    @contextlib.contextmanager
    def hold(self, exec_id, operation):
        """Hold and lease the execution here without running it, for a change from
        outside that no run may meet (Engine.restore with set_locals: a savepoint and a
        state of its own).  Yields its head; what the block leaves in it is written with
        the release, in one transaction -- also when the block fails part way.
        InvalidTransition if this process or another live one holds it (running it, or
        keeping it parked)."""
        if not self._claim_here(exec_id):
            raise InvalidTransition(f"cannot {operation} execution {exec_id}: a process "
                                    f"is running it; pause it first, then try again")
        record = None
        try:
            record = self.store.get_execution(exec_id)
            yield record
        finally:
            self.lease_checked.pop(exec_id, None)
            try:
                self.store.release(exec_id, self.owner, execution=record)
            finally:
                self.let_go(exec_id)

    def run_one(self, exec_id):
        """Run that execution here (and the children it runs), if no one else holds it,
        until it ends or is unloaded.  FlowNotFound is raised."""
        if self._claim_here(exec_id):
            self.scheduler.run(claims=False, first=exec_id)

    def drive_here(self, exec_id):
        """Run that execution on this thread now, if no one holds it (a flow's child):
        until it ends, parks or is unloaded."""
        if self._claim_here(exec_id):
            self._drive_claimed(exec_id, FLOW_IMPORT_RETRY_SECONDS, raise_missing=True)

    def execute(self, task):
        """A scheduler task, on this thread: continue a parked run, or start (resume) a
        claimed execution.  FlowNotFound is only logged for one the queue gave (it stays
        QUEUED, tried again later); raised for one asked for by id (QUEUED, due now)."""
        if task.run is not None:
            self._wake(task.run)
        elif task.asked:
            self._drive_claimed(task.exec_id, 0.0, raise_missing=True)
        else:
            self._drive_claimed(task.exec_id, FLOW_IMPORT_RETRY_SECONDS)

    def notify(self):
        """New work in the store, from this process: an idle engine looks at once."""
        self.scheduler.notify()

    def next_due(self):
        """When the store may next hand this process something (Store.next_due)."""
        return self.store.next_due(owner=self.owner)

    # -- one execution --
    def _drive_claimed(self, exec_id, retry_delay, raise_missing=False):
        if self.watchdog is None:
            self.watchdog = Watchdog(self)
        record = self.store.get_execution(exec_id)
        run = None
        try:
            if record is None or Status(record["status"]) in ENDED or \
                    record["status"] == Status.PAUSED.value:
                return
            if self.stopping.is_set():        # claimed as the engine stops: put back
                self.store.release(exec_id, self.owner, execution=record)
                return
            run = Run(self, record)
            request = pending_request(self.store, exec_id)
            if request is not None:              # asked while nobody ran it
                run.take_request(request)
                return
            timeout_at = record.get("timeout_at")
            if timeout_at is not None and time.time() >= timeout_at:
                run.end(Status.ENDED_ERROR, error=TIMEOUT_ERROR)
                log.info("execution %s (%s) ended: %s", exec_id, record["flow"],
                         TIMEOUT_ERROR)
                return
            log.info("execution %s (%s) %s", exec_id, record["flow"],
                     "resumed" if record.get("last_seq") else "started")
            idle = not self.runs
            self.runs[exec_id] = run
            if idle:                 # the watchdog idles up to IDLE_WATCH_SECONDS: look now
                self.watchdog.poke.set()
            self.watch_deadline(run)
            try:
                run.drive(retry_delay)
            except FlowNotFound as e:
                if raise_missing:
                    raise
                log.warning("execution %s stays QUEUED: %s", exec_id, e)
        finally:
            if run is None or run.parked is None:
                self.finish(run, exec_id=exec_id)

    def _wake(self, run):
        """Continue a parked run on this thread (unless it was ended meanwhile)."""
        try:
            if not run.done:
                run.drive(FLOW_IMPORT_RETRY_SECONDS)
        finally:
            if run.parked is None:
                self.finish(run)

    def watch_deadline(self, run):
        """The watchdog ends the run at its timeout (set, or cleared: forgotten)."""
        if run.record.get("timeout_at") is None:
            self.deadlines.pop(run.execution_id, None)
        else:
            self.deadlines[run.execution_id] = run
            if self.watchdog is not None:
                self.watchdog.poke.set()       # else it looks within IDLE_WATCH_SECONDS

    def wake_if_children_ended(self, run):
        """Just parked for its children: one may have ended before it was parked here,
        when nothing could wake it yet."""
        if self.children_ended(run.record):
            self.scheduler.wake(run.execution_id)

    def children_ended(self, record):
        """Whether every child the execution waits for has ended."""
        for child_id in record.get("waiting_for") or ():
            child = self.store.get_execution(child_id)
            if child is not None and Status(child["status"]) not in ENDED:
                return False
        return True

    def holds(self, exec_id):
        """Whether this process holds the execution (running, parked, about to run)."""
        with self.holding:
            return exec_id in self.running

    def message_came(self, record):
        """Whether the message a receiver waits for is in the store."""
        topic = record.get("receiving")
        if topic is None:
            return False
        after = (record.get("received") or {}).get(topic, 0)
        return self.store.message(record["id"], topic, after) is not None

    def finish(self, run, exec_id=None, release=True):
        """The execution is no longer held here: forget it, release its lease."""
        if run is not None:
            run.drop_park()              # ended elsewhere while parked: it goes no further
            exec_id = run.execution_id
            if self.runs.get(exec_id) is run:
                with self.holding:             # counted once, whichever thread finishes
                    self.calls += run.calls
                    run.calls = 0
                    self.executions_run += 1
                del self.runs[exec_id]
                _log_outcome(run.record)
            self.deadlines.pop(exec_id, None)
            release = release and not run.keep_lease
        self.lease_checked.pop(exec_id, None)
        try:
            if release:
                self.store.release(exec_id, self.owner)
        finally:
            self.let_go(exec_id)

    def let_go(self, exec_id):
        """It is no longer held here; if our own claim took it off the queue meanwhile
        (made due while it ran: restored from outside, say), it goes back on the queue."""
        with self.holding:
            self.running.discard(exec_id)
            again = exec_id in self.due_again
            self.due_again.discard(exec_id)
        if again:
            self._put_due_back(exec_id)

    def _put_due_back(self, exec_id):
        """Our claim leased an execution this process does not run: release it, back on
        the queue at its due time."""
        record = self.store.get_execution(exec_id)
        if record is not None and (record.get("due") is None or
                                   Status(record["status"]) in ENDED):
            record = None
        self.store.release(exec_id, self.owner, execution=record)

    def unload(self, run):
        """A parked run goes back to the store (the engine stops): WAITING until its wake
        time, for any process."""
        with run.lock:
            waits = not run.done and run.parked.wake_at is None    # for its children
            if not run.done:
                run.record.update(status=Status.WAITING.value,
                                  due=until_timeout(run.record, run.parked.wake_at))
                run.store.put_execution(run.record)
        run.due_if_message_came()
        run.drop_park()
        self.finish(run)
        # a child that ended while it was held here woke it here only (write_end)
        if waits and self.children_ended(run.record):
            wake_parent(self.store, run.execution_id)

    def put_back(self, task):
        """A task no thread took before the engine stopped: a claimed execution goes back
        on the queue as it was; a woken run is unloaded."""
        if task.run is not None:
            self.unload(task.run)
            return
        self._put_due_back(task.exec_id)
        self.let_go(task.exec_id)


class Interrupted(BaseException):
    """Raised in a flow's thread (PyThreadState_SetAsyncExc) when its execution ended
    elsewhere -- a timeout, a cancel, a delete -- while the flow computed: it stops the
    computation.  Never seen by users: the driver catches it."""


def _set_async_exc(thread_id, exc_type):
    """CPython's PyThreadState_SetAsyncExc (public C API): ``exc_type`` is raised in that
    thread at its next bytecode boundary -- never inside C code, such as a connector
    blocked in a read; None (NULL) clears a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc_type is None else ctypes.py_object(exc_type))


class Run:
    """One execution being run by a Runner in this process.

    Its flow runs on one thread at a time (it may park, and go on on another); the
    watchdog thread may end it meanwhile (timeout, or a cancel/pause/restore/delete from
    outside).  Every store write for the execution happens under ``lock`` after checking
    ``done``, so once it was ended elsewhere, nothing the flow does afterwards is
    written: no savepoint, no state."""

    def __init__(self, runner, record):
        self.runner = runner
        self.store = runner.store
        self.record = record
        self.execution_id = record["id"]
        self.root = _frames.Root()
        self.api = FlowAPI(self)
        self.this = _flowapi.This(self.api, self.root)
        self.system = _flowapi.System(self.this)
        self.externals = {"this": self.this, "system": self.system}
        self.trust = runner.trust_for(record)
        self.lock = threading.Lock()
        self.done = False                # ended (or deleted) by someone else: write nothing
        self.keep_lease = False          # a full disk: see _store_full
        self.parked = None               # the Park it waits in (engine.scheduler)
        self.calls = 0                   # Flow-API calls served (Runner.counters)
        self.thread = None               # the flow's thread, while it runs flow code
        self.in_flow = False
        self.interrupted = False         # an Interrupted was sent to that thread

    def drop_park(self):
        """Forget the Park this run waits in without going on from it (the execution goes
        on from its savepoint, elsewhere or later, or not at all): the generators its
        frames hold must not run their finally blocks when they are dropped."""
        park, self.parked = self.parked, None
        if park is not None:
            _frames.abandon(park.frames)

    # -- ended from outside the flow's thread (the watchdog) --
    def take_request(self, request):
        """Carry out cancel/pause/restore/delete for this running (or parked) execution;
        whether it ended it."""
        def apply():
            drop_request(self.store, self.execution_id)
            if request[0] == "delete":
                self.store.delete_execution(self.execution_id)
                return
            try:
                apply_request(self.record, request)
            except InvalidTransition as e:     # it changed state since the request
                log.info("request %s dropped: %s", request[0], e)
                return False
            self.store.put_execution(self.record)
        ended = self.end_elsewhere(apply)
        if ended and request[0] == "cancel":
            cancel_children(self.store, self.execution_id, self.runner.lease_seconds)
        return ended

    def end_elsewhere(self, change):
        """Under the lock: apply ``change`` (unless it returns False), mark the execution
        done and stop its flow, interrupting a computation; whether it did."""
        with self.lock:
            if self.done or change() is False:
                return False
            self.done = True
            if self.in_flow and self.thread is not None:
                _set_async_exc(self.thread, Interrupted)      # stops a computation
                self.interrupted = True
        return True

    def _stop_interrupts(self):
        """The flow's code is over: no interrupt may land in the engine's own code.
        Only one that was sent is cleared: PyThreadState_SetAsyncExc signals the
        interpreter even when it clears (Python/pystate.c, 3.11), which leaves every
        thread's eval breaker set until an exception is delivered -- slower code, and a
        traced function call (sys.settrace: debuggers, coverage) that never returns."""
        with self.lock:
            if self.interrupted and self.in_flow and self.thread is not None:
                _set_async_exc(self.thread, None)   # NULL: clear a pending one
            self.interrupted = False
            self.in_flow = False

    # -- the driver --
    def drive(self, retry_delay=FLOW_IMPORT_RETRY_SECONDS):
        """Run the execution -- or go on from where it parked -- until it ends, parks or
        is unloaded.  FlowNotFound (and a KeyboardInterrupt) leave it QUEUED, as it was,
        and are raised again; so does a write the store could not make -- a full disk
        (StoreFull), a database server gone for longer than the store waits for it
        (StoreUnavailable) -- from the write that failed: see _store_full."""
        resume_from, last_seq = self.record.get("resume_from"), self.record.get("last_seq")
        park, self.parked = self.parked, None
        try:
            self._drive(retry_delay, park)
        except _NOT_WRITTEN as e:
            self._store_full(e, retry_delay, resume_from, last_seq)
            raise

    def _store_full(self, error, retry_delay, resume_from, last_seq):
        """A write failed: no space, or no server.  Unless the execution ended (or was
        ended elsewhere), put it back on the queue, QUEUED to go on from its last
        savepoint (or the one it was restored to); if even that cannot be written, keep
        its lease: lease recovery puts it back once this process lets the lease lapse."""
        with self.lock:
            try:
                stored = None if self.done else self.store.get_execution(self.execution_id)
            except StoreUnavailable:             # still no server: the lease lapses
                self.keep_lease = True
                return
            if stored is None or Status(stored["status"]) in ENDED:
                return
            if resume_from is not None and self.record.get("last_seq") == last_seq:
                self.record["resume_from"] = resume_from     # no savepoint since
            self.record.update(status=Status.QUEUED.value, due=time.time() + retry_delay,
                               error=f"{type(error).__name__}: {error}", output=None)
            try:
                self.store.put_execution(self.record)
            except _NOT_WRITTEN:
                self.keep_lease = True

    def _drive(self, retry_delay, park):
        record = self.record
        if park is None:
            record.update(status=Status.RUNNING.value, due=None, updated_at=time.time(),
                          error=None)
            start_from = record.pop("resume_from", None)
            self.store.put_execution(record)
        else:
            start_from = park
            if record["status"] != Status.RUNNING.value:     # it waited for children
                record.update(status=Status.RUNNING.value, updated_at=time.time())
                self._write_unless_done()
        self.thread = threading.get_ident()
        try:
            try:
                self.in_flow = True
                value = self._run(start_from)
            finally:
                self._stop_interrupts()
            self._finish(value)
        except Interrupted:
            self._stop_interrupts()                 # ended elsewhere; nothing to write
        except _frames.Unwind as unwind:
            self._left(unwind.args[0])
        except FlowNotFound as e:
            self._requeue(time.time() + retry_delay, error=f"FlowNotFound: {e}")
            raise
        except _NOT_WRITTEN:
            raise                                    # drive puts it back on the queue
        except FlowError as e:                      # this.error(message): the message
            self.end(Status.ENDED_ERROR, error=str(e))
        except Exception as e:
            self.end(Status.ENDED_ERROR, error=f"{type(e).__name__}: {e}")
        except BaseException:                        # Ctrl-C, SystemExit: back to the queue
            self._requeue(time.time())
            raise

    def _run(self, start):
        """Start the flow, or resume it from savepoint ``start`` (None: the newest), or go
        on from where it parked (``start`` a Park), and again from wherever the flow
        loads a dump; return what the flow returns."""
        fresh = start is None and not self.record.get("last_seq")
        seq = start
        while True:
            try:
                if fresh:
                    handler = load_flow(self.record["flow"])
                    return _frames.run(self.root, handler, self.system, self.this,
                                       self.record.get("inputs"))
                if type(seq) is Park:
                    return self._continue(seq.frames, seq.action, seq.result)
                return self._resume(seq)
            except _frames.Unwind as unwind:
                event = unwind.args[0]
                if type(event) is not Load:
                    raise
                del unwind
                fresh, seq = False, event.seq
                self.record.update(restore_count=self.api.restore_count + 1,
                                   timeout_at=None, status=Status.RUNNING.value)

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
        import_flow_module(self.record["flow"].partition(":")[0])
        frames, result = _codec.decode_savepoint(
            record, store.codes_for(record), externals=self.externals, trust=self.trust,
            chunks=store.chunk)
        return self._continue(frames, meta["action"], result)

    def _continue(self, frames, action, result):
        """Rebuild the frames and go on after ``action``'s call -- finishing its wait
        first, or parking again if it still waits."""
        result, throw = self.api.finish_call(frames, action, result)
        return _frames.resume(self.root, frames, result, throw=throw)

    def _finish(self, value):
        if isinstance(value, Success):
            value = value.value
        self.end(Status.ENDED_SUCCESS, output=value)

    def _left(self, event):
        match event:
            case Park(wake_at=wake_at):
                receiving = self.record.get("receiving") is not None
                if wake_at is None or receiving:     # WAITING for children or a message,
                    self._write_unless_done()        # found there by who wakes it
                self.runner.scheduler.park(self, event)
                if receiving:                        # a message sent meanwhile
                    if self.runner.message_came(self.record):
                        self.runner.scheduler.wake(self.execution_id)
                elif wake_at is None:                # a child that ended meanwhile
                    self.runner.wake_if_children_ended(self)
            case Idle():
                self._write_unless_done()            # WAITING, with its due time
                self.due_if_message_came()
            case Timeout():
                self.end(Status.ENDED_ERROR, error=TIMEOUT_ERROR)
            case Fail(message):
                self.end(Status.ENDED_ERROR, error=message)
            case Stop():                             # back to the queue, for any worker
                self._requeue(self.record.get("due") or time.time())
            case Lost() | Gone():     # another worker has it now / ended elsewhere
                pass                                 # nothing to write

    def due_if_message_came(self):
        """Just unloaded WAITING for a message: one sent before the store said so found
        no receiver to wake -- due now, then."""
        if self.runner.message_came(self.record):
            self.record["due"] = time.time()
            self._write_unless_done()

    def _write_unless_done(self):
        with self.lock:
            if not self.done:
                self.store.put_execution(self.record)

    def _requeue(self, due, error=None):
        self.record.update(status=Status.QUEUED.value, due=due, error=error)
        self._write_unless_done()

    def end(self, status, output=None, error=None):
        with self.lock:
            if self.done:
                return
            self.write_end(status, output, error)
            self.done = True

    def write_end(self, status, output=None, error=None):
        """Write the execution's end (the caller holds the lock)."""
        self.api.put_back_unsaved()             # a refused savepoint's changes (caught)
        record = self.record
        record.update(status=status.value, output=output, error=error, due=None,
                      updated_at=time.time(), timeout_at=None)
        try:
            self.store.put_execution(record)
        except SavepointError as e:
            record.update(status=Status.ENDED_ERROR.value, output=None,
                          error=f"the output cannot be saved: {e}")
            self.store.put_execution(record)
        drop_request(self.store, self.execution_id)
        parent = record.get("parent")
        if parent:
            # a parent held here is woken here, or looks at its children itself when it
            # parks or is unloaded: rewriting its record from the store would race its own
            # writes (its end was lost under a stale WAITING record)
            if not self.runner.holds(parent):
                wake_parent(self.store, parent)
            self.runner.scheduler.wake(parent)        # if it waits here


def _log_outcome(record):
    status = record["status"]
    if status == Status.ENDED_ERROR.value:
        log.info("execution %s (%s) failed: %s", record["id"], record["flow"],
                 record.get("error"))
    elif status in (Status.ENDED_SUCCESS.value, Status.ENDED_CANCELLED.value):
        log.info("execution %s (%s) ended %s", record["id"], record["flow"], status)
    else:
        log.info("execution %s (%s) left: %s", record["id"], record["flow"], status)
