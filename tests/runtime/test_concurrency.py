"""Many executions at once (../shared/SPEC.md "Running many executions at once"): flows
on threads, waiting ones parked in memory with their leases kept, requests and timeouts
that reach parked executions, SIGTERM and SIGKILL of processes holding them.  Real stores
(each test runs on LMDB and on PostgreSQL: the store_path fixture); the other processes
are real subprocesses on the same store."""
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import concurrency_flows as flows
from concurrency_flows import read_lines
from engine import Engine, ExecutionNotFound, Status
from locations import SUPPORT
from waiting import wait_for

RUN = os.path.join(SUPPORT, "concurrency_run.py")


class Background(threading.Thread):
    """A call (eng.run, eng.execute) on a thread of its own; what it returned or raised."""
    started = []           # every one, so that a failed test stops it before closing

    def __init__(self, call, *args, **kwargs):
        super().__init__(daemon=True, name="test-caller")
        self.call, self.call_args, self.call_kwargs = call, args, kwargs
        self.result = self.error = None
        self.started.append(self)
        self.start()

    def run(self):
        try:
            self.result = self.call(*self.call_args, **self.call_kwargs)
        except BaseException as e:          # SystemExit too: the test looks at it
            self.error = e

    def finished(self, seconds):
        self.join(seconds)
        return not self.is_alive()


@contextlib.contextmanager
def recording_engine(path, **settings):
    """An engine whose `io` and `effect` connectors record into lists: (engine, io
    calls, effects).  Calls it still runs in the background are stopped before it
    closes (a test that failed midway)."""
    calls, effects = [], []
    with Engine(path, durability="async", **settings) as eng:
        eng.add_connector("io", flows.io_connector(lambda *call: calls.append(call)))
        eng.add_connector("effect", flows.effect_connector(lambda *e: effects.append(e)))
        eng.add_connector("hold", flows.hold)
        try:
            yield eng, calls, effects
        finally:
            if any(call.is_alive() for call in Background.started):
                eng.stop()
                flows.hold_release.set()
                for call in Background.started:
                    call.join(10)
            Background.started.clear()


def spans(calls):
    """{execution: [(start, end, step, (pid, thread))]} of recorded io calls, by start."""
    found = collections.defaultdict(list)
    for execution, step, pid, thread, start, end in calls:
        found[execution].append((int(start), int(end), int(step), (int(pid), int(thread))))
    for one in found.values():
        one.sort()
    return found


def assert_one_thread_at_a_time(calls):
    """No execution ever ran on two threads (or processes) at once: its calls' intervals
    never overlap."""
    for execution, its in spans(calls).items():
        for (_, end, step, where), (start, _, next_step, next_where) in zip(its, its[1:]):
            assert start >= end, (f"{execution}: step {step} on {where} and step "
                                  f"{next_step} on {next_where} at once")


def most_at_once(calls):
    """The most io calls (of any executions) in progress at one moment."""
    events = sorted([(int(c[4]), 1) for c in calls] + [(int(c[5]), -1) for c in calls])
    at_once = most = 0
    for _, change in events:                 # an end sorts before a start at one time
        at_once += change
        most = max(most, at_once)
    return most


def steps_of(calls, execution):
    return [step for _, _, step, _ in spans(calls)[execution]]


def held_anywhere(eng, ids):
    """The executions some process still holds a lease on, or still RUNNING."""
    return [i for i in ids if eng.store.lease(i) is not None or
            eng.get(i).status == Status.RUNNING]


def last_action(eng, exec_id):
    sps = eng.savepoints(exec_id)
    return sps[-1].action if sps else None


def os_threads():
    return len(os.listdir("/proc/self/task"))


def assert_put_back(eng, sleepers, busy, at):
    """Once the process that held them stopped: nothing held or RUNNING, the parked
    sleepers WAITING in the store until their wake time ``at``, the busy ones QUEUED."""
    assert held_anywhere(eng, [*sleepers, *busy]) == []
    for exec_id in sleepers:
        record = eng.store.get_execution(exec_id)
        assert record["status"] == Status.WAITING.value and record["due"] == at
    assert {eng.get(i).status for i in busy} == {Status.QUEUED}


def assert_all_ended(eng, sleepers, busy, at, calls):
    """Every one ended as it would have uninterrupted: the sleepers (sleeps_until ``at``,
    n by their order) not before their wake time, the busy ones ({id: seed}, io_calls of
    ``calls``) with their totals."""
    for n, exec_id in enumerate(sleepers):
        done = eng.get(exec_id)
        assert done.status == Status.ENDED_SUCCESS, done.error
        assert done.output["n"] == n and done.output["woke"] >= at
    for exec_id, seed in busy.items():
        done = eng.get(exec_id)
        assert done.status == Status.ENDED_SUCCESS, done.error
        assert done.output == flows.io_total(seed, calls)


# -- 1. many executions at once, in one process -----------------------------------------

def run_io_batch(path, concurrency, executions=24, calls=5):
    """Run executions of io_calls (each call waits 20 ms) until idle: ({seed: (status,
    output)}, {seed: steps in order}, the io calls, the thread that called run())."""
    with recording_engine(path, concurrency=concurrency) as (eng, io, _):
        seeds = {eng.start(flows.io_calls, {"seed": seed, "calls": calls}).id: seed
                 for seed in range(executions)}
        eng.run()
        outcomes = {seed: (eng.get(i).status, eng.get(i).output)
                    for i, seed in seeds.items()}
    steps = {seed: steps_of(io, i) for i, seed in seeds.items()}
    return outcomes, steps, io, threading.get_ident()


def test_many_executions_run_at_once_never_one_on_two_threads_and_as_sequentially(
        new_store):
    alone, alone_steps, alone_io, caller = run_io_batch(new_store("one"), 1)
    assert alone == {seed: (Status.ENDED_SUCCESS, flows.io_total(seed, 5))
                     for seed in range(24)}
    # concurrency 1: every flow ran on the thread that called run(), one at a time
    assert {thread for _, _, _, thread, _, _ in alone_io} == {caller}
    assert most_at_once(alone_io) == 1

    together, steps, io, _ = run_io_batch(new_store("eight"), 8)
    assert together == alone and steps == alone_steps
    assert all(s == list(range(5)) for s in steps.values())       # every call once
    assert_one_thread_at_a_time(io)
    # the engine really ran them at once -- and never more than 8
    assert 4 <= most_at_once(io) <= 8
    assert 2 <= len({thread for _, _, _, thread, _, _ in io}) <= 8


def test_a_flow_busy_in_a_long_call_does_not_keep_new_work_from_starting(store_path):
    flows.hold_entered.clear()
    flows.hold_release.clear()
    with recording_engine(store_path, concurrency=4) as (eng, _, _):
        held = eng.start(flows.holds)
        runner = Background(eng.run)
        try:
            assert flows.hold_entered.wait(20)       # run()'s thread is inside that call
            quick = eng.start(flows.io_calls, {"seed": 1, "calls": 2})
            # three threads are free: it runs now, not once the long call is over
            assert wait_for(lambda: eng.get(quick.id).status == Status.ENDED_SUCCESS, 5)
            assert eng.get(held.id).status == Status.RUNNING
        finally:
            flows.hold_release.set()
            assert runner.finished(20)
        assert eng.get(held.id).status == Status.ENDED_SUCCESS


# -- 2. a waiting execution holds no thread ---------------------------------------------

def test_sixty_parked_sleepers_hold_no_thread_and_wake_on_time(store_path):
    concurrency = 2
    with recording_engine(store_path, concurrency=concurrency) as (eng, _, _):
        at = time.time() + 2.0
        ids = [eng.start(flows.sleeps_until, {"n": n, "at": at}).id for n in range(60)]
        before = os_threads()
        runner = Background(eng.run)
        assert wait_for(lambda: eng.counters().parked == 60, 20)
        assert eng.counters().running == 0
        # run()'s caller, at most `concurrency` threads for flows, the watchdog -- not 60
        assert os_threads() - before <= 1 + concurrency + 1
        assert sum(t.name == "engine-run" for t in threading.enumerate()) <= concurrency
        assert runner.finished(30) and runner.error is None
        for n, exec_id in enumerate(ids):
            done = eng.get(exec_id)
            assert done.status == Status.ENDED_SUCCESS, done.error
            assert done.output["n"] == n
            assert done.output["woke"] >= at                 # not before its wake time
        assert eng.counters().parked == 0


# -- 3. a parked execution keeps its lease ----------------------------------------------

def test_a_parked_execution_keeps_its_lease_and_another_process_does_not_take_it(
        tmp_path, store_path):
    log = tmp_path / "log"
    with recording_engine(store_path, lease_seconds=0.6, concurrency=4) as \
            (eng, _, effects):
        at = time.time() + 4.0
        ex = eng.start(flows.sleeps_until, {"at": at, "tag": "s"})
        runner = Background(eng.run)
        other = None
        try:
            assert wait_for(lambda: eng.counters().parked == 1, 10)
            first = eng.store.lease(ex.id)
            assert first.owner.pid == os.getpid()
            # another process on the store, taking whatever is due, through the wake time
            other = subprocess.Popen([sys.executable, RUN, str(eng.path), str(log), "0.6",
                                      "serve", ex.id], stdout=subprocess.PIPE, text=True)
            assert other.stdout.readline().strip() == "serving"
            # past the first lease: only renewals keep it ours
            assert wait_for(lambda: time.time() > first.expires + 0.3, 10)
            lease = eng.store.lease(ex.id)
            assert lease.owner.pid == os.getpid() and lease.expires > time.time()
            assert lease.expires >= first.expires + 0.3
            assert eng.counters().parked == 1 and time.time() < at
            assert runner.finished(20) and runner.error is None
            assert other.wait(20) == 0
        finally:
            if other is not None:
                other.kill()
                other.stdout.close()
        done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output["effects"] == ["S-BEFORE", "S-AFTER"] and done.output["woke"] >= at
    # it ended once, here; the other process ran nothing of it
    assert [(tag, pid) for tag, pid, _ in effects] == [("s-before", os.getpid()),
                                                        ("s-after", os.getpid())]
    assert read_lines(f"{log}.effects") == []


def test_killed_while_parked_another_process_resumes_it_from_its_savepoint(tmp_path,
                                                                           store_path):
    store, log = store_path, tmp_path / "log"
    at = time.time() + 3.0
    first = subprocess.Popen([sys.executable, RUN, str(store), str(log), "30", "start",
                              "sleeps_until", json.dumps({"n": 7, "at": at, "tag": "s"})],
                             stdout=subprocess.PIPE, text=True)
    try:
        exec_id = first.stdout.readline().strip()
        with Engine(store, durability="async") as eng:
            def parked_there():
                lease = eng.store.lease(exec_id)
                return last_action(eng, exec_id) == "sleep_until" and \
                    lease is not None and lease.owner.pid == first.pid
            assert wait_for(parked_there, 20)
            assert first.poll() is None and time.time() < at   # parked in that process
            first.kill()
            first.wait(10)
            second = subprocess.Popen([sys.executable, RUN, str(store), str(log), "30",
                                       "serve", exec_id], stdout=subprocess.PIPE, text=True)
            second.communicate(timeout=60)
            assert second.returncode == 0
            done = eng.get(exec_id)
    finally:
        first.kill()
        first.stdout.close()
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output["n"] == 7 and done.output["effects"] == ["S-BEFORE", "S-AFTER"]
    assert done.output["woke"] >= at
    # the effect before the sleep was not repeated; the one after ran in the second
    assert [(tag, int(pid)) for tag, pid, _ in read_lines(f"{log}.effects")] == \
        [("s-before", first.pid), ("s-after", second.pid)]


# -- 4. SIGTERM of a worker pool holding running and parked executions -------------------

def start_pool(path, log, concurrency):
    env = dict(os.environ, CONCURRENCY_LOG=str(log), PYTHONPATH=SUPPORT)
    output = open(f"{log}.pool-output", "w+")     # a file: a full pipe would block it
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", "1", "--path", str(path),
         "--durability", "async", "--concurrency", str(concurrency),
         "--flows", "concurrency_flows"],
        env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    return pool, output


def test_sigterm_of_a_pool_returns_its_running_and_parked_executions(tmp_path, store_path,
                                                                     monkeypatch):
    path, log = store_path, tmp_path / "log"
    pool, output = start_pool(path, log, concurrency=8)
    try:
        with Engine(path, durability="async", concurrency=8) as eng:
            at = time.time() + 4.0
            sleepers = [eng.start(flows.sleeps_until, {"n": n, "at": at}).id
                        for n in range(6)]
            busy = {eng.start(flows.io_calls, {"seed": s, "calls": 200}).id: s
                    for s in range(4)}

            def holding():
                return all(last_action(eng, i) == "sleep_until" and eng.store.lease(i)
                           for i in sleepers) and \
                    all(eng.get(i).status == Status.RUNNING and len(eng.savepoints(i)) >= 3
                        for i in busy)
            assert wait_for(holding, 30)
            pool.send_signal(signal.SIGTERM)
            assert pool.wait(60) == 0
            assert time.time() < at
            assert_put_back(eng, sleepers, busy, at)

            monkeypatch.setenv("CONCURRENCY_LOG", str(log))
            flows.register(eng)
            assert wait_for(lambda: time.time() >= at, 10)
            eng.run()
            assert_all_ended(eng, sleepers, busy, at, calls=200)
    finally:
        pool.kill()
        pool.wait(10)
        output.close()
    calls = read_lines(log)
    assert_one_thread_at_a_time(calls)
    for exec_id in busy:                         # every call once: none redone, none lost
        assert steps_of(calls, exec_id) == list(range(200))
    assert len({int(pid) for _, _, pid, _, _, _ in calls}) == 2     # the pool, then here


# -- 5. failures on pool threads ---------------------------------------------------------

def test_a_connector_that_raises_fails_only_its_own_execution(store_path):
    with recording_engine(store_path, concurrency=8) as (eng, io, _):
        seeds = {eng.start(flows.io_calls, {"seed": s, "calls": 4,
                                            "fail_at": 2 if s == 5 else None}).id: s
                 for s in range(16)}
        eng.run()
        for exec_id, seed in seeds.items():
            done = eng.get(exec_id)
            if seed == 5:
                assert done.status == Status.ENDED_ERROR
                assert done.error == "RuntimeError: io broke at step 2 of 5"
                assert steps_of(io, exec_id) == [0, 1, 2]
            else:
                assert done.status == Status.ENDED_SUCCESS, done.error
                assert done.output == flows.io_total(seed, 4)
        assert most_at_once(io) >= 2


def test_a_flow_raising_system_exit_on_a_pool_thread_ends_run_with_it(store_path):
    # SystemExit is no flow error: like Ctrl-C it stops the engine -- every flow back to
    # the queue -- and eng.run() raises it; the execution that raised it stays QUEUED
    flows.exit_threads.clear()
    with recording_engine(store_path, concurrency=4) as (eng, io, _):
        others = {eng.start(flows.io_calls, {"seed": s, "calls": 5}).id: s
                  for s in range(3)}
        exiting = eng.start(flows.exits).id
        runner = Background(eng.run)
        assert runner.finished(20)                       # no hang
        assert type(runner.error) is SystemExit and runner.error.code == 3
        assert flows.exit_threads == ["engine-run"]      # it ran on a pool thread
        assert eng.get(exiting).status == Status.QUEUED
        assert held_anywhere(eng, [exiting, *others]) == []
        assert eng.counters()[3:5] == (0, 0)              # nothing running or parked
        eng.cancel(exiting)
        eng.run()                                        # the engine goes on afterwards
        for exec_id, seed in others.items():
            done = eng.get(exec_id)
            assert done.status == Status.ENDED_SUCCESS, done.error
            assert done.output == flows.io_total(seed, 5)
            assert steps_of(io, exec_id) == list(range(5))
        assert flows.exit_threads == ["engine-run"]


# -- 6. requests to a parked execution apply at once -------------------------------------

@contextlib.contextmanager
def parked(store_path, flow, inputs):
    """An engine running (eng.run() in the background) one execution of ``flow``, parked:
    (engine, execution id, the run, effects)."""
    with recording_engine(store_path, concurrency=4) as (eng, _, effects):
        exec_id = eng.start(flow, inputs).id
        runner = Background(eng.run)
        assert wait_for(lambda: eng.counters().parked == 1, 10)
        yield eng, exec_id, runner, effects


def test_cancel_of_a_parked_sleeper_ends_it_at_once(store_path):
    with parked(store_path, flows.sleeps, {"seconds": 30}) as (eng, exec_id, runner, _):
        asked = time.monotonic()
        eng.cancel(exec_id)
        assert wait_for(lambda: eng.get(exec_id).status == Status.ENDED_CANCELLED, 1)
        assert wait_for(lambda: eng.store.lease(exec_id) is None, 1)
        assert runner.finished(2) and runner.error is None       # run() is idle: it returns
        assert time.monotonic() - asked < 2
        assert eng.counters().parked == 0


def test_pause_of_a_parked_sleeper_then_resume_wakes_it_at_its_wake_time(store_path):
    at = time.time() + 2.0
    with parked(store_path, flows.sleeps_until, {"at": at}) as (eng, exec_id, runner, _):
        eng.pause(exec_id)
        assert wait_for(lambda: eng.get(exec_id).status == Status.PAUSED, 1)
        assert wait_for(lambda: eng.store.lease(exec_id) is None, 1)
        assert runner.finished(2) and runner.error is None
        assert eng.counters().parked == 0
        assert eng.resume(exec_id).status in (Status.QUEUED, Status.WAITING)
        assert eng.store.get_execution(exec_id)["due"] == at      # it kept its wake time
        worker = Background(eng.run, until="stopped")
        try:
            assert wait_for(lambda: eng.get(exec_id).status == Status.ENDED_SUCCESS, 10)
        finally:
            eng.stop()
            assert worker.finished(10)
        woke = eng.get(exec_id).output["woke"]
        assert at <= woke < at + 2


def test_restore_of_a_parked_sleeper_runs_it_from_that_savepoint(store_path):
    with parked(store_path, flows.restorable, {}) as (eng, exec_id, runner, effects):
        eng.restore(exec_id, "mark", by="name")
        # the same run() goes on from the savepoint: restored, it is runnable now
        assert wait_for(lambda: eng.get(exec_id).status == Status.ENDED_SUCCESS, 5)
        assert runner.finished(5) and runner.error is None
        done = eng.get(exec_id)
        assert done.output == 1 and done.restore_count == 1
        assert [tag for tag, _, _ in effects] == ["a", "b", "b", "c"]


def test_delete_of_a_parked_sleeper_removes_it_at_once(store_path):
    with parked(store_path, flows.sleeps, {"seconds": 30}) as (eng, exec_id, runner, _):
        asked = time.monotonic()
        eng.delete(exec_id)
        assert time.monotonic() - asked < 2
        with pytest.raises(ExecutionNotFound):
            eng.get(exec_id)
        assert eng.executions() == [] and eng.store.lease(exec_id) is None
        assert runner.finished(2) and runner.error is None
        assert eng.counters().parked == 0


def test_a_timeout_ends_a_parked_sleeper_at_its_deadline(store_path):
    with parked(store_path, flows.sleeps, {"seconds": 30, "timeout": 0.3}) as \
            (eng, exec_id, runner, _):
        assert wait_for(lambda: eng.get(exec_id).status == Status.ENDED_ERROR, 5)
        done = eng.get(exec_id)
        assert "TimeoutError" in done.error
        timeout_set = eng.savepoints(exec_id)[0]
        assert timeout_set.action == "set_timeout"
        took = (done.updated_at - timeout_set.created_at).total_seconds()
        assert 0.3 - 0.05 <= took < 1.0
        assert runner.finished(2) and runner.error is None
        assert eng.store.lease(exec_id) is None and eng.counters().parked == 0


# -- 7. children -------------------------------------------------------------------------

def test_a_parent_of_parked_children_ends_with_their_outputs(store_path):
    with recording_engine(store_path, concurrency=4) as (eng, _, _):
        caller = Background(eng.execute, flows.parent_of_sleepers,
                            {"seconds": 0.8, "kids": 3})
        # the parent waits, its three children sleep: all parked, no thread held
        assert wait_for(lambda: eng.counters().parked == 4, 10)
        assert eng.counters().running == 0
        assert caller.finished(10) and caller.error is None
        ex = caller.result
        assert ex.status == Status.ENDED_SUCCESS, ex.error
        assert ex.output == [2, 4, 6, 8]
        children = [e for e in eng.executions() if e.parent == ex.id]
        assert len(children) == 4
        assert {c.status for c in children} == {Status.ENDED_SUCCESS}


def test_a_parent_waiting_for_an_unloaded_child_waits_in_the_store(store_path):
    with recording_engine(store_path, concurrency=4, sleep_max_seconds=0.3) as \
            (eng, _, _):
        ex = eng.execute(flows.parent_of_sleepers, {"seconds": 1.0, "kids": 0})
        # its child sleeps past sleep_max_seconds: nothing here can wake the parent
        assert ex.status == Status.WAITING
        [child] = [e for e in eng.executions() if e.parent == ex.id]
        assert child.status == Status.WAITING
        assert held_anywhere(eng, [ex.id, child.id]) == []
        assert eng.counters()[3:5] == (0, 0)
        due = eng.store.get_execution(child.id)["due"]
        assert wait_for(lambda: time.time() >= due, 10)
        eng.run()                        # the child ends, and the parent goes on
        done = eng.get(ex.id)
        assert done.status == Status.ENDED_SUCCESS, done.error
        assert done.output == [2] and eng.get(child.id).status == Status.ENDED_SUCCESS


# -- 8. stop() during run() --------------------------------------------------------------

def test_stop_during_run_puts_parked_and_running_executions_back(store_path):
    path = store_path
    at = time.time() + 2.0
    with recording_engine(path, concurrency=4) as (eng, io, _):
        sleepers = [eng.start(flows.sleeps_until, {"n": n, "at": at}).id for n in range(5)]
        busy = eng.start(flows.io_calls, {"seed": 3, "calls": 40}).id
        runner = Background(eng.run)
        assert wait_for(lambda: eng.counters().parked == 5 and len(io) >= 3, 10)
        eng.stop()
        assert runner.finished(5) and runner.error is None
        assert eng.counters()[3:5] == (0, 0)
        assert time.time() < at
        assert_put_back(eng, sleepers, {busy: 3}, at)
        first_calls = list(io)
    with recording_engine(path, concurrency=4) as (eng, io, _):
        assert wait_for(lambda: time.time() >= at, 10)
        eng.run()
        assert_all_ended(eng, sleepers, {busy: 3}, at, calls=40)
        assert steps_of(first_calls + io, busy) == list(range(40))
