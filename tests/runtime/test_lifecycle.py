"""The life of an execution, through the API: which operations apply in which state,
timeouts that end an execution at its deadline, delete of a running execution, one rule
for naming savepoints and executions, the log with times, settings from the environment,
and flows defined in the script that starts them.  Each test runs on LMDB and on
PostgreSQL (the store_path fixture)."""
import datetime
import os
import subprocess
import sys
import threading
import time

import pytest

import engine
import lifecycle_flows as flows
from engine import Engine, Status
from engine.store import missing_store
from waiting import wait_for


@pytest.fixture
def eng(store_path):
    with Engine(store_path, durability="async", sleep_max_seconds=0.2) as eng:
        flows.register(eng)
        yield eng


def in_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# -- the state machine ------------------------------------------------------------------

def test_operations_that_do_not_apply_are_refused_and_change_nothing(eng):
    ended = eng.execute(flows.logs)
    assert ended.status == Status.ENDED_SUCCESS
    for operation in (eng.cancel, eng.pause, eng.resume):
        with pytest.raises(ValueError, match="cannot .* it has ended"):
            operation(ended.id)
        with pytest.raises(engine.InvalidTransition):
            operation(ended.id)
    after = eng.get(ended.id)
    assert after.status == Status.ENDED_SUCCESS and after.updated_at == ended.updated_at
    queued = eng.start(flows.logs)
    with pytest.raises(ValueError, match="only a PAUSED execution can be resumed"):
        eng.resume(queued.id)
    assert eng.pause(queued.id).status == Status.PAUSED
    with pytest.raises(ValueError, match="PAUSED already"):
        eng.pause(queued.id)
    assert eng.resume(queued.id).status == Status.QUEUED
    assert eng.cancel(queued.id).status == Status.ENDED_CANCELLED
    eng.run()
    assert eng.get(queued.id).status == Status.ENDED_CANCELLED
    assert eng.savepoints(queued.id) == []          # it never ran


def test_pause_and_resume_of_a_sleeper_keep_its_wake_time(eng):
    ex = eng.execute(flows.sleeps, {"seconds": 1.5})
    assert ex.status == Status.WAITING                # unloaded: past sleep_max_seconds
    woke_at = time.time() + 1.5
    assert eng.pause(ex.id).status == Status.PAUSED
    eng.run()
    assert eng.get(ex.id).status == Status.PAUSED
    assert eng.resume(ex.id).status == Status.WAITING
    eng.run()                                        # not due yet: nothing runs
    assert eng.get(ex.id).status == Status.WAITING
    assert wait_for(lambda: time.time() > woke_at)
    eng.run()
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS and done.output == "woke"
    assert done.log[-1][0].timestamp() >= woke_at - 0.1


def test_cancelling_a_parent_cancels_its_unfinished_children(eng):
    parent = eng.execute(flows.parent, {"seconds": 30})
    assert parent.status == Status.WAITING
    children = [ex for ex in eng.executions() if ex.parent == parent.id]
    assert len(children) == 2 and all(c.status in (Status.WAITING, Status.QUEUED)
                                      for c in children)
    eng.cancel(parent.id)
    assert eng.get(parent.id).status == Status.ENDED_CANCELLED
    assert [eng.get(c.id).status for c in children] == [Status.ENDED_CANCELLED] * 2


def test_delete_stops_a_running_execution_and_nothing_brings_it_back(eng):
    flows.entered.clear()
    flows.release.clear()
    ex = eng.start(flows.blocks, {"timeout": 60})
    runner = in_thread(eng.run)
    assert flows.entered.wait(20)                    # inside its connector, RUNNING
    assert eng.get(ex.id).status == Status.RUNNING
    eng.delete(ex.id)
    with pytest.raises(KeyError):
        eng.get(ex.id)
    flows.release.set()                              # the connector returns...
    runner.join(20)
    assert not runner.is_alive()
    with pytest.raises(engine.ExecutionNotFound):    # ... and writes nothing back
        eng.get(ex.id)
    assert eng.executions() == []


# -- timeouts ----------------------------------------------------------------------------

def test_a_timeout_ends_a_computing_flow_at_its_deadline(eng):
    ex = eng.start(flows.computes, {"timeout": 0.5, "seconds": 30})
    started = time.monotonic()
    runner = in_thread(eng.run)
    assert wait_for(lambda: eng.get(ex.id).status == Status.ENDED_ERROR, 10)
    assert time.monotonic() - started < 5
    assert "TimeoutError" in eng.get(ex.id).error
    runner.join(10)                     # the computation was stopped, not run for 30 s
    assert not runner.is_alive()
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_ERROR and done.log == []


def test_a_timeout_ends_a_flow_waiting_in_a_connector_at_its_deadline(eng):
    flows.entered.clear()
    flows.release.clear()
    ex = eng.start(flows.blocks, {"timeout": 0.3})
    runner = in_thread(eng.run)
    assert flows.entered.wait(20)
    # still inside the connector, and ended all the same
    assert wait_for(lambda: eng.get(ex.id).status == Status.ENDED_ERROR, 10)
    assert not flows.release.is_set() and "TimeoutError" in eng.get(ex.id).error
    flows.release.set()
    runner.join(20)
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_ERROR and done.log == []     # nothing after it


def test_a_timeout_ends_an_unloaded_sleeper_at_its_deadline(eng):
    ex = eng.execute(flows.sleeps, {"seconds": 3600, "timeout": 0.4})
    assert ex.status == Status.WAITING
    assert wait_for(lambda: (eng.run(), eng.get(ex.id).status)[1] == Status.ENDED_ERROR, 10)
    assert "TimeoutError" in eng.get(ex.id).error


# -- names -------------------------------------------------------------------------------

def test_savepoints_are_named_by_id_seq_or_name_everywhere(eng):
    ex = eng.execute(flows.logs)
    sps = eng.savepoints(ex.id)
    assert [sp.seq for sp in sps] == [1, 2, 3]
    for name in (1, "1", sps[0].id):
        fork = eng.fork(ex.id, name)
        assert fork.status == Status.QUEUED
    assert eng.savepoint(ex.id, "here", by="name").seq == 3
    assert eng.restore(ex.id, "here", by="name").status == Status.QUEUED
    with pytest.raises(KeyError, match="by='name'"):
        eng.fork(ex.id, "here")                      # a name, without by="name"
    for missing in (9, "9", f"{ex.id}.9", "other.1", True, 1.0):
        with pytest.raises(KeyError):
            eng.fork(ex.id, missing)
    with pytest.raises(ValueError):
        eng.fork(ex.id, 1, by="seq")
    # a flow loads by seq or by id, with by="id"
    looped = eng.execute(flows.loads_by_seq)
    assert looped.status == Status.ENDED_SUCCESS and looped.output == 2


def test_an_execution_is_found_by_a_unique_id_prefix(eng):
    a, b = eng.start(flows.logs), eng.start(flows.logs)
    common = os.path.commonprefix([a.id, b.id])
    unique = a.id[:len(common) + 1]
    for call in (eng.get, eng.savepoints, eng.pause, eng.resume, eng.cancel):
        call(unique)
    assert eng.get(unique).id == a.id and eng.get(unique).status == Status.ENDED_CANCELLED
    if common:
        with pytest.raises(KeyError, match="ambiguous"):
            eng.get(common)
    with pytest.raises(KeyError, match="no execution"):
        eng.get("zz")
    eng.delete(unique)
    assert [ex.id for ex in eng.executions()] == [b.id]


def test_the_log_has_utc_times(eng):
    before = datetime.datetime.now(datetime.timezone.utc)
    ex = eng.execute(flows.logs)
    assert [text for _, text in ex.log] == ["first 1", "second"]
    for at, _ in ex.log:
        assert at.tzinfo == datetime.timezone.utc
        assert before <= at <= datetime.datetime.now(datetime.timezone.utc)


# -- settings from the environment -------------------------------------------------------

def test_every_engine_keyword_comes_from_the_environment(new_store, monkeypatch):
    monkeypatch.setenv("ENGINE_PATH", new_store("env-store"))
    monkeypatch.setenv("ENGINE_DURABILITY", "async")
    monkeypatch.setenv("ENGINE_SAVEPOINT_RETENTION", "last")
    monkeypatch.setenv("ENGINE_SLEEP_MAX_SECONDS", "7")
    monkeypatch.setenv("ENGINE_LEASE_SECONDS", "9")
    monkeypatch.setenv("ENGINE_CONCURRENCY", "5")
    with Engine() as eng:
        assert (eng.durability, eng.savepoint_retention, eng.sleep_max_seconds,
                eng.lease_seconds, eng.concurrency) == ("async", "last", 7.0, 9.0, 5)
        assert missing_store(os.environ["ENGINE_PATH"]) is None       # made there
    with Engine(new_store("explicit"), durability="async", lease_seconds=3,
                concurrency=2) as eng:
        assert eng.lease_seconds == 3.0               # an explicit argument wins
        assert eng.concurrency == 2
    for variable, value, named in (("ENGINE_DURABILITY", "fast", "durability"),
                                   ("ENGINE_LEASE_SECONDS", "-1", "lease_seconds"),
                                   ("ENGINE_LEASE_SECONDS", "nan", "lease_seconds"),
                                   ("ENGINE_SLEEP_MAX_SECONDS", "soon", "sleep_max_seconds"),
                                   ("ENGINE_SAVEPOINT_RETENTION", "some", "savepoint_retention"),
                                   ("ENGINE_CONCURRENCY", "0", "concurrency"),
                                   ("ENGINE_CONCURRENCY", "1.5", "concurrency"),
                                   ("ENGINE_CONCURRENCY", "many", "concurrency")):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValueError, match=f"{named} .*{value}.*\\${variable}"):
            Engine()
        monkeypatch.delenv(variable)


# -- flows of the script being run --------------------------------------------------------

GUARDED = '''
import engine

def handler(system, this, inputs):
    this.sleep(0.3)                    # past sleep_max_seconds: unloaded
    return "resumed by another process"

if __name__ == "__main__":
    with engine.Engine(durability="async", sleep_max_seconds=0.05) as eng:
        ex = eng.execute(handler)
        print(ex.id, ex.flow, ex.status)
'''

UNGUARDED = '''
import engine

def handler(system, this, inputs):
    return 1

with engine.Engine(durability="async") as eng:
    eng.execute(handler)
'''

RESUME = '''
import time, engine
time.sleep(0.4)
with engine.Engine(durability="async") as eng:
    eng.run()
    ex = eng.get(__import__("sys").argv[1])
    print(ex.status, ex.output)
'''


def test_a_flow_of_the_script_being_run_resumes_in_another_process(tmp_path, store_path):
    (tmp_path / "myscript.py").write_text(GUARDED)
    (tmp_path / "bad.py").write_text(UNGUARDED)
    env = dict(os.environ, ENGINE_PATH=store_path)
    env.pop("PYTHONPATH", None)
    first = subprocess.run([sys.executable, "myscript.py"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    exec_id, flow, status = first.stdout.split()
    assert flow == "myscript:handler" and status == "WAITING"
    second = subprocess.run([sys.executable, "-c", RESUME, exec_id], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.stdout.split(None, 1) == ["ENDED_SUCCESS", "resumed by another process\n"], \
        second.stderr
    refused = subprocess.run([sys.executable, "bad.py"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "ValueError: flow handler cannot be resumed by another process" in refused.stderr
    assert "top-level code" in refused.stderr


def test_a_flow_must_be_a_module_level_python_function(eng):
    for bad in (print, eng.start, lambda s, t, i: None):
        with pytest.raises((TypeError, ValueError)):
            eng.start(bad)
    with pytest.raises(ValueError):
        eng.start("no-colon")
