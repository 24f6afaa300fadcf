"""The work behind each Flow-API call: what the C-level ``this``/``system`` methods
(ext/_flowapi.pyx) call, through the FlowAPI object they hold as ``_ctx``.

A call checks first (check: ended elsewhere, engine stopping, lease lost, timeout), does
its work here, then the savepoint (savepoint: the flow's frames with the call's result,
committed with the execution's new state).  A call that leaves the flow raises a typed
event (engine.leaving) through leave(); the driver (engine.runner) turns it into the
execution's next state.
"""
import datetime
import math
import time
from time import perf_counter

from engine import _codec, _frames
from engine.command import command
from engine.errors import FlowError, FlowNotFound
from engine.leaving import Fail, Gone, Idle, Load, Lost, Park, Stop, Timeout
from engine.lifecycle import new_execution
from engine.lookup import find_seq
from engine.types import ENDED, Execution, Status, savepoint_id

RESTORE_LOOP_LIMIT = 100
# one savepoint commit in 8 of a run is timed for the latency histogram (engine.metrics),
# weighing 8: timing every one would add ~0.25 us to each Flow-API call
COMMIT_SAMPLE_MASK = 7
_SLEEP = object()           # wake_time's "no until": this.sleep, not this.sleep_until(None)


def _finite_number(value):
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


class Success:
    """What this.success(value) returns: the flow returns it, its value is the output."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (Success, (self.value,))


class Receiving:
    """What the savepoint of a this.receive that waits records as its result: the topic
    and the time it returns None at (or None: no timeout)."""

    def __init__(self, topic, deadline):
        self.topic, self.deadline = topic, deadline

    def __reduce__(self):
        return (Receiving, (self.topic, self.deadline))


class Retrying:
    """What the savepoint of a failed connector call that will be tried again records as
    its result: the call, which attempt is next, and when (UNIX time)."""

    def __init__(self, name, kwargs, attempt, wake_at):
        self.name, self.kwargs, self.attempt, self.wake_at = name, kwargs, attempt, wake_at

    def __reduce__(self):
        return (Retrying, (self.name, self.kwargs, self.attempt, self.wake_at))


def until_timeout(record, due):
    """An unloaded execution must be back by its timeout, to end then."""
    timeout_at = record.get("timeout_at")
    if timeout_at is not None and (due is None or timeout_at < due):
        return timeout_at
    return due


class FlowAPI:
    """The Flow-API's side of one run (engine.runner.Run): its own object, so that its
    methods are exactly what ext/_flowapi.pyx calls.  Everything it writes goes through
    the run's lock after checking the run's ``done``: once the execution was ended
    elsewhere, nothing the flow does is written."""

    def __init__(self, run):
        self.run = run
        self.runner = run.runner
        self.store = run.store
        self.record = run.record             # the execution's state, changed in place
        self.execution_id = run.execution_id
        self.unsaved = None                  # the record before a call's changes: see
                                             # before_change

    # -- facts --
    @property
    def inputs(self):
        return self.record.get("inputs")

    @property
    def restore_count(self):
        return self.record.get("restore_count") or 0

    # -- leaving --
    def leave(self, event, inside_flow=True):
        """Leave the flow now, running none of its finally/except/with handlers;
        ``event`` (engine.leaving) says why.  Outside the flow (resuming one that still
        waits) there are no frames to leave yet."""
        keep = _frames.strip_handlers(self.run.root) if inside_flow else []
        raise _frames.Unwind(event, keep)

    # -- a call's changes to the state ahead of its savepoint --
    def before_change(self):
        """A call is about to change the record for the savepoint it takes next (a
        message received, a sleep begun): keep the record as it was, to put back should
        that savepoint be refused -- the flow may catch the SavepointError and go on,
        and the message must stay unreceived, the execution not WAITING."""
        if self.unsaved is None:
            self.unsaved = dict(self.record)     # the changes replace values, not edit them

    def put_back_unsaved(self):
        """The last call's savepoint failed: its changes to the record are undone."""
        if self.unsaved is not None:
            self.record.clear()
            self.record.update(self.unsaved)
            self.unsaved = None

    # -- checks at every call --
    def check(self):
        runner = self.runner
        if self.unsaved is not None:
            self.put_back_unsaved()
        if self.run.done:
            self.leave(Gone())
        if runner.stopping.is_set():                 # the worker is shutting down
            self.leave(Stop())
        now = time.monotonic()
        if now > runner.lease_checked.get(self.execution_id, now):
            # no renewal for a while (this process was stopped?): make sure the lease is
            # still ours before doing anything more for this execution
            if not runner.renew(self.execution_id):
                self.leave(Lost())
        timeout_at = self.record.get("timeout_at")
        if timeout_at is not None and time.time() > timeout_at:
            self.leave(Timeout())

    # -- savepoints --
    def next_savepoint_id(self):
        return savepoint_id(self.execution_id, (self.record.get("last_seq") or 0) + 1)

    def savepoint(self, frames, action, result, kind="implicit", name=None):
        run = self.run
        chunks = {}
        record, codes = _codec.encode_snapshot(frames, externals=run.externals,
                                               trust=run.trust, chunks=chunks,
                                               result=result)
        inner = frames[-1]
        meta = {"kind": kind, "name": name, "created_at": time.time(), "line": inner.line,
                "action": action, "command": command(inner)}
        state = self.record
        with run.lock:
            if run.done:
                self.leave(Gone())
            state["updated_at"] = meta["created_at"]
            timed = not run.calls & COMMIT_SAMPLE_MASK
            if timed:
                started = perf_counter()
            self.store.commit_savepoint(
                state, meta, record, codes, chunks,
                retention=state.get("retention") or self.runner.savepoint_retention)
            if timed:
                self.runner.commit_latencies.observe(perf_counter() - started,
                                                     COMMIT_SAMPLE_MASK + 1)
        self.unsaved = None
        run.calls += 1          # the run's own count: one thread at a time drives a run

    def _guarded_put(self):
        """Write the record, unless the execution was ended elsewhere: then leave."""
        run = self.run
        with run.lock:
            if run.done:
                self.leave(Gone())
            self.store.put_execution(self.record)

    # -- the calls' work --
    def connect(self, name, kwargs):
        try:
            func = self.runner.connectors[name]
        except KeyError:
            raise KeyError(f"no connector named {name!r}; register it with "
                           f"eng.add_connector({name!r}, func)") from None
        return func(**kwargs)

    def retry_after(self, name, kwargs, error, attempt):
        """Connector ``name`` failed at ``attempt`` (1: the first call): logged on the
        execution, and Retrying for the next attempt, due backoff * 2**(attempt - 1)
        seconds from now -- or None when it has no retries left."""
        retries, backoff = self.runner.connector_retries.get(name, (0, 0.0))
        if not retries:
            return None
        last = attempt > retries
        delay = backoff * 2 ** (attempt - 1)
        text = f"connector {name!r} attempt {attempt} of {retries + 1} failed: " \
               f"{type(error).__name__}: {error}"
        self.record.setdefault("log", []).append(
            [time.time(), text if last else f"{text}; trying again in {delay:g} s"])
        if last:
            self._guarded_put()
            return None
        wake_at = time.time() + delay
        self.begin_sleep(wake_at)           # due then, for any worker should this one die
        self._guarded_put()
        return Retrying(name, kwargs, attempt + 1, wake_at)

    def finish_retry(self, frames, retry, inside_flow=True):
        """Wait for the retry's time (parked, or unloaded past sleep_max_seconds), then
        call the connector again: (its result, saved, False), or (the error, True) once
        no attempt is left."""
        while True:
            if retry.wake_at - time.time() > self.runner.sleep_max_seconds:
                self.leave(Idle(), inside_flow)
            if retry.wake_at > time.time():
                self.leave(Park(frames, "connect", retry, retry.wake_at), inside_flow)
            self.record["due"] = None
            try:
                result = self.connect(retry.name, retry.kwargs)
            except Exception as error:
                retry_next = self.retry_after(retry.name, retry.kwargs, error, retry.attempt)
                if retry_next is None:
                    return error, True
                retry = retry_next
                self.savepoint(frames, "connect", retry)
                continue
            self.savepoint(frames, "connect", result)
            return result, False

    def load_dump(self, name_or_id, by):
        """Where this.load_dump goes: Load(seq), or Fail past RESTORE_LOOP_LIMIT loads."""
        seq = find_seq(self.store, self.execution_id, name_or_id, by)
        counts = dict(self.record.get("restores") or {})
        counts[str(seq)] = counts.get(str(seq), 0) + 1
        if counts[str(seq)] > RESTORE_LOOP_LIMIT:
            return Fail(f"RestoreLoopError: savepoint {name_or_id!r} was loaded more "
                        f"than {RESTORE_LOOP_LIMIT} times; stopping a restore loop")
        self.record["restores"] = counts
        return Load(seq)

    def wake_time(self, seconds=None, until=_SLEEP):
        """When a sleep ends: ``seconds`` from now (this.sleep), or at ``until``
        (this.sleep_until: a datetime -- a naive one is local time -- or a Unix time).
        ValueError naming the call for anything else: a NaN or a string would otherwise
        fail later with a message about neither."""
        if until is not _SLEEP:
            if isinstance(until, datetime.datetime):
                return until.timestamp()
            if not _finite_number(until):
                raise ValueError(f"sleep_until takes a datetime or a Unix time in "
                                 f"seconds, not {until!r}")
            return float(until)
        if not _finite_number(seconds) or seconds < 0:
            raise ValueError(f"sleep takes a number of seconds >= 0, not {seconds!r}")
        return time.time() + seconds

    def begin_sleep(self, wake_at):
        """The savepoint taken next records the wait: its due time puts the execution
        back on the queue at ``wake_at`` should this process die meanwhile."""
        unload = wake_at - time.time() > self.runner.sleep_max_seconds
        self.before_change()
        if unload:
            self.record["status"] = Status.WAITING.value
            wake_at = until_timeout(self.record, wake_at)
        self.record["due"] = wake_at
        return unload

    def finish_sleep(self, wake_at, frames, action, inside_flow=True):
        """After the sleep's savepoint: park the flow until wake_at -- its frames as
        captured, holding no thread (engine.scheduler wakes it)."""
        if wake_at > time.time():
            self.leave(Park(frames, action, None, wake_at), inside_flow)
        self.record["due"] = None

    # -- messages (eng.send puts them in the store) --
    def take_message(self, topic, timeout=None):
        """(value,) of the oldest message on ``topic`` not received yet -- recorded as
        received in the execution's state, which the call's savepoint commits -- or
        None."""
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"receive takes a topic that is a non-empty str, not {topic!r}")
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"receive takes a timeout of seconds >= 0 or None, "
                             f"not {timeout!r}")
        received = self.record.get("received") or {}
        found = self.store.message(self.execution_id, topic, received.get(topic, 0))
        if found is None:
            return None
        self.before_change()
        self.record.update(received={**received, topic: found[0]}, receiving=None)
        return (found[1],)

    def begin_receive(self, topic, timeout):
        """The savepoint taken next records the wait: WAITING, due at its timeout."""
        deadline = None if timeout is None else time.time() + timeout
        self.before_change()
        self.record.update(status=Status.WAITING.value, receiving=topic,
                           due=until_timeout(self.record, deadline))
        return Receiving(topic, deadline)

    def wait_for_message(self, frames, waiting, inside_flow=True):
        """Wait for a message (a sender wakes it): parked in memory, unloaded after
        sleep_max_seconds -- at once if its timeout is further away than that."""
        self.record.update(status=Status.WAITING.value, receiving=waiting.topic,
                           due=until_timeout(self.record, waiting.deadline))
        deadline = waiting.deadline
        if deadline is not None and deadline - time.time() > self.runner.sleep_max_seconds:
            self.leave(Idle(), inside_flow)
        self.leave(Park(frames, "receive", waiting, deadline), inside_flow)

    def finish_receive(self, frames, waiting):
        """Going on from a this.receive that waited: the message, its receipt committed
        in a savepoint of its own before the flow sees it; None past the timeout; or
        wait again."""
        found = self.take_message(waiting.topic)
        if found is None:
            if waiting.deadline is None or time.time() < waiting.deadline:
                self.wait_for_message(frames, waiting, inside_flow=False)
            self.record.update(receiving=None, due=None)
            return None
        self.record["due"] = None
        self.savepoint(frames, "receive", found[0])
        return found[0]

    def start_child(self, flow, inputs, more):
        inputs = dict(inputs or {}, **more) if (inputs is None or isinstance(inputs, dict)) \
            else inputs
        return Execution.from_record(new_execution(self.store, flow, inputs,
                                                   parent=self.execution_id)[0])

    def child_id(self, child):
        return child.id if isinstance(child, Execution) else str(child)

    def awaiting(self, ids, single):
        return {"await": ids, "single": single}

    def run_children(self, ids):
        """Run the children here while they can run (each until it ends or parks); None
        if one of them is still going."""
        run = self.run
        in_flow, run.in_flow = run.in_flow, False        # interrupts are the child's now
        try:
            pending = False           # every child gets its start (one parked goes on)
            for child_id in ids:
                record = self.store.get_execution(child_id)
                if record is None:
                    raise KeyError(f"no child execution {child_id}")
                if Status(record["status"]) not in ENDED:
                    try:
                        self.runner.drive_here(child_id)
                    except FlowNotFound:          # the child waits for its code; so do we
                        pending = True
                        continue
                    record = self.store.get_execution(child_id)
                if Status(record["status"]) not in ENDED:
                    pending = True
            return None if pending else True
        finally:
            run.in_flow = in_flow

    def wait_for_children(self, ids, frames, action, awaiting, inside_flow=True):
        """Park the flow until its children end (engine.scheduler: a child that ends
        wakes it); WAITING in the store, where a child in another process finds it."""
        self.record["status"] = Status.WAITING.value
        self.record["due"] = until_timeout(self.record, None)
        self.record["waiting_for"] = ids
        self.leave(Park(frames, action, awaiting, None), inside_flow)

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

    def finish_call(self, frames, action, result):
        """Going on from the savepoint of a call that waited (for children, or asleep),
        or from where it parked: finish that wait, as the call would have -- or park
        again if it still waits; (its result, whether to raise it)."""
        throw = False
        if action in ("flow", "wait_for") and isinstance(result, dict) and "await" in result:
            if self.run_children(result["await"]) is None:
                self.wait_for_children(result["await"], frames, action, result,
                                       inside_flow=False)
            try:
                result = self.children_result(result["await"], result["single"])
            except FlowError as e:
                result, throw = e, True
        if action == "connect" and isinstance(result, Retrying):
            result, throw = self.finish_retry(frames, result, inside_flow=False)
        if action == "receive" and isinstance(result, Receiving):
            result = self.finish_receive(frames, result)
        if self.record.get("due") is not None and action in ("sleep", "sleep_until"):
            self.finish_sleep(self.record["due"], frames, action, inside_flow=False)
        return result, throw

    def log(self, args):
        entry = [time.time(), " ".join(str(a) for a in args)]
        self.record.setdefault("log", []).append(entry)
        self._guarded_put()

    def set_output(self, key, value):
        self.record.setdefault("outputs", {})[key] = value
        self._guarded_put()

    def set_timeout(self, seconds):
        if seconds is not None and (not _finite_number(seconds) or seconds < 0):
            raise ValueError(f"set_timeout takes a number of seconds >= 0, not {seconds!r}")
        self.record["timeout_at"] = None if seconds is None else time.time() + seconds
        self._guarded_put()
        self.runner.watch_deadline(self.run)

    def success(self, value):
        return Success(value)

    def fail(self, message):
        raise FlowError(message)

    def get_setting(self, name):
        return self.store.get_setting(f"setting:{name}")

    def set_setting(self, name, value):
        self.store.set_setting(f"setting:{name}", value)
