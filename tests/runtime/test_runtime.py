"""The product as SPEC.md describes it: Engine, the Flow-API, savepoints, restore, crashes.
Real stores (each test runs on LMDB and on PostgreSQL: the store_path fixture), real
subprocesses killed with SIGKILL, a real SQLite database and a real HTTP server on
127.0.0.1."""
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import rt_flows
from engine import Engine, Status, StoreClosed
from locations import SUPPORT
from seed_example import UploadServer, make_database
from waiting import wait_for

RUNNER = os.path.join(SUPPORT, "rt_run.py")


@pytest.fixture
def eng(tmp_path, store_path):
    with Engine(store_path, durability="async", sleep_max_seconds=0.2) as engine:
        engine.add_connector("effect", rt_flows.effect_recorder(tmp_path / "effects"))
        yield engine


def effects(tmp_path):
    path = tmp_path / "effects"
    return path.read_text().split() if path.exists() else []


# --- the seed example, for real ------------------------------------------------------------

def test_the_seed_example_restored_from_outside_reads_once_and_uploads_once(tmp_path,
                                                                              store_path):
    db = tmp_path / "data.sqlite"
    make_database(db)
    server = UploadServer()
    reads = tmp_path / "reads"
    try:
        with Engine(store_path, durability="sync") as eng:
            eng.add_connector("database", rt_flows.db_reader(str(db), str(reads)))
            eng.connector("remote-api")(
                rt_flows.uploader(server.url))
            ex = eng.execute(rt_flows.seed_example)
            assert ex.status == Status.ENDED_ERROR
            assert "upload failed with HTTP 500" in ex.error
            names = [(sp.kind, sp.name, sp.action) for sp in eng.savepoints(ex.id)]
            assert ("explicit", "with-fetched-data", "save_dump") in names
            eng.restore(ex.id, "with-fetched-data", by="name")
            assert eng.get(ex.id).status == Status.QUEUED
            eng.run()
            done = eng.get(ex.id)
            assert done.status == Status.ENDED_SUCCESS, done.error
            assert done.output == {"uploaded": 3, "status": 200}
            assert done.restore_count == 1
    finally:
        server.shutdown()
    assert reads.read_text().split() == ["read"]
    assert server.received == [[[1, "a"], [2, "b"], [3, "c"]]]


# --- savepoints --------------------------------------------------------------------------------

def test_every_flow_api_call_takes_a_savepoint_with_line_action_and_command(eng, tmp_path):
    ex = eng.execute(rt_flows.straight_line)
    assert ex.status == Status.ENDED_SUCCESS and ex.output == ["A", "B"]
    sps = eng.savepoints(ex.id)
    assert [(sp.seq, sp.kind, sp.action) for sp in sps] == [(1, "implicit", "connect"),
                                                            (2, "implicit", "connect")]
    assert sps[0].command == 'this.connect("effect", tag="a")'
    assert sps[0].line == rt_flows.straight_line.__code__.co_firstlineno + 1
    assert sps[0].created_at.tzinfo is not None and sps[0].size > 0
    assert sps[0].id.startswith(ex.id) and sps[0].execution_id == ex.id


def test_load_dump_continues_after_the_matching_save_dump(eng):
    ex = eng.execute(rt_flows.looping_dump, {"loads": 3})
    assert ex.status == Status.ENDED_SUCCESS, ex.error
    sid = ex.output["sid"]
    assert ex.output == {"sid": sid, "restores": 3} and ex.restore_count == 3
    assert sid.startswith(ex.id)


def test_the_restore_loop_guard_fails_the_execution_clearly(eng):
    ex = eng.execute(rt_flows.restore_loop)
    assert ex.status == Status.ENDED_ERROR
    assert "RestoreLoopError" in ex.error and "more than 100 times" in ex.error


def test_retention_last_and_per_execution_override(tmp_path, store_path):
    with Engine(store_path, durability="async", savepoint_retention="last") as eng:
        eng.add_connector("effect", rt_flows.effect_recorder(tmp_path / "e"))
        kept = eng.execute(rt_flows.constructs)
        assert [sp.kind for sp in eng.savepoints(kept.id)] == ["implicit"]
        full = eng.execute(rt_flows.straight_line, savepoint_retention="all")
        assert len(eng.savepoints(full.id)) == 2
        with pytest.raises(ValueError):
            eng.start(rt_flows.straight_line, savepoint_retention="most")


def test_delete_removes_the_execution_and_its_savepoints(eng):
    ex = eng.execute(rt_flows.straight_line)
    eng.delete(ex.id)
    with pytest.raises(KeyError):
        eng.get(ex.id)
    with pytest.raises(KeyError):
        eng.savepoints(ex.id)
    assert eng._store.savepoints(ex.id) == []


def test_children_wait_no_wait_and_failure(eng):
    ex = eng.execute(rt_flows.parent_flow)
    assert ex.status == Status.ENDED_SUCCESS, ex.error
    assert ex.output["doubled"] == 42 and ex.output["results"] == [0, 2, 4]
    assert "child failed on purpose" in ex.output["failure"]
    children = [e for e in eng.executions() if e.parent == ex.id]
    assert len(children) == 5


def test_an_uncaught_exception_ends_the_execution_with_its_type_and_message(eng):
    ex = eng.execute(rt_flows.broken)
    assert ex.status == Status.ENDED_ERROR and ex.error == "LookupError: no such thing"
    assert len(eng.savepoints(ex.id)) == 1


def test_an_unencodable_local_fails_that_call_and_keeps_the_previous_savepoint(eng, tmp_path):
    ex = eng.execute(rt_flows.unencodable)
    assert ex.status == Status.ENDED_SUCCESS, ex.error
    assert ex.output["problem"].startswith("SavepointError: local 'fh' in unencodable")
    assert "open file" in ex.output["problem"]
    assert [sp.action for sp in eng.savepoints(ex.id)] == ["connect"]


def test_a_flow_api_call_inside_a_sorted_key_callback_is_refused(eng):
    ex = eng.execute(rt_flows.in_sorted_key)
    assert ex.output.startswith("SavepointError: cannot take a savepoint in in_sorted_key")
    assert "C code" in ex.output


def test_a_child_that_failed_fails_its_parent_with_the_child_and_its_error(eng):
    parent = eng.execute(rt_flows.fails_through_a_child)
    child = [ex for ex in eng.executions() if ex.parent == parent.id][0]
    assert child.error == "failed on request"
    assert parent.status == Status.ENDED_ERROR
    assert parent.error == f"child execution {child.id} failed: failed on request"


def test_an_engine_used_after_close_says_it_is_closed(store_path):
    eng = Engine(store_path, durability="async")
    ex = eng.start(rt_flows.straight_line)
    eng.close()
    eng.close()                                     # twice: nothing more happens
    for use in (eng.executions, lambda: eng.get(ex.id),
                lambda: eng.start(rt_flows.straight_line)):
        with pytest.raises(StoreClosed, match="is closed: open a new Engine"):
            use()                                   # at once: PostgreSQL does not retry it
    with Engine(store_path, durability="async") as again:
        assert again.get(ex.id).status == Status.QUEUED


@pytest.mark.parametrize("call, arg, words", [
    ("sleep", "1", "sleep takes a number of seconds >= 0, not '1'"),
    ("sleep", None, "sleep takes a number of seconds >= 0, not None"),
    ("sleep", float("nan"), "sleep takes a number of seconds >= 0, not nan"),
    ("sleep", float("inf"), "sleep takes a number of seconds >= 0, not inf"),
    ("sleep", -1, "sleep takes a number of seconds >= 0, not -1"),
    ("sleep_until", "tomorrow",
     "sleep_until takes a datetime or a Unix time in seconds, not 'tomorrow'"),
    ("sleep_until", None, "sleep_until takes a datetime or a Unix time in seconds, not None"),
    ("set_timeout", float("nan"), "set_timeout takes a number of seconds >= 0, not nan"),
    ("save_dump", 123, "save_dump takes a name that is a str or None, not 123"),
    ("create_savepoint", b"x", "create_savepoint takes a name that is a str or None, not b'x'"),
])
def test_a_flow_api_argument_of_the_wrong_kind_is_refused_naming_the_call(tmp_path, call,
                                                                          arg, words):
    with Engine(tmp_path / "store", durability="async") as eng:
        ex = eng.execute(rt_flows.misuses_the_flow_api, {"call": call, "arg": arg})
        assert ex.status == Status.ENDED_ERROR and ex.error == f"ValueError: {words}"
        assert eng.savepoints(ex.id) == []


def test_bad_arguments_are_refused_clearly(tmp_path, store_path):
    with pytest.raises(ValueError, match="path must be a directory or a postgresql:// URL"):
        Engine(5)
    with pytest.raises(ValueError, match="savepoint_retention"):
        Engine(tmp_path / "a", savepoint_retention="some")
    with pytest.raises(ValueError, match="durability"):
        Engine(tmp_path / "b", durability="maybe")
    with Engine(store_path, durability="async") as eng:
        with pytest.raises(ValueError, match="module level"):
            eng.start(lambda system, this, inputs: None)
        with pytest.raises(KeyError):
            eng.get("nope")
        # a generator or coroutine function would only make an object: refused at start,
        # and a run started by name ends with the same words
        for flow, what in ((rt_flows.api_pages, "a generator function"),
                           (rt_flows.async_flow, "a coroutine function")):
            with pytest.raises(ValueError, match=f"api_pages|async_flow.* is {what}"):
                eng.start(flow)
        by_name = eng.execute("rt_flows:api_pages")
        assert by_name.status == Status.ENDED_ERROR
        assert "ValueError: flow api_pages is a generator function" in by_name.error
        ex = eng.execute(rt_flows.straight_line)       # no "effect" connector here
        assert ex.status == Status.ENDED_ERROR and "no connector named 'effect'" in ex.error


# --- idle executions, crashes, other processes ---------------------------------------------------

def runner(*args, check=True, concurrency=1):
    proc = subprocess.run([sys.executable, RUNNER, *map(str, args)], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, ENGINE_CONCURRENCY=str(concurrency)))
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_a_long_sleep_unloads_and_another_process_resumes_it(eng, tmp_path):
    ex = eng.execute(rt_flows.sleeper, {"seconds": 0.6})
    assert eng.get(ex.id).status == Status.WAITING
    eng.run()                                    # not due yet: nothing to do
    assert eng.get(ex.id).status == Status.WAITING
    time.sleep(0.7)
    runner(eng.path, tmp_path / "effects", "run")
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS and done.output == ["BEFORE", "AFTER"]
    assert effects(tmp_path) == ["before", "after"]


def uninterrupted(tmp_path, flow, inputs):
    # the reference run, on LMDB whichever store is under test: both must give its output
    with Engine(tmp_path / "reference", durability="async") as eng:
        eng.add_connector("effect", rt_flows.effect_recorder(tmp_path / "reference-effects"))
        ex = eng.execute(getattr(rt_flows, flow), inputs)
        assert ex.status == Status.ENDED_SUCCESS, ex.error
        calls = (tmp_path / "reference-effects").read_text().split()
        return ex.output, calls


def crash_at(tmp_path, new_store, flow, inputs, k, concurrency=1):
    """Start the flow in a process killed at its k-th effect call, on a new store; resume
    in fresh ones (engines running up to ``concurrency`` executions at once)."""
    store, log = new_store(f"store-{k}"), tmp_path / f"effects-{k}"
    proc = runner(store, log, "start", flow, json.dumps(inputs), k, check=False,
                  concurrency=concurrency)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    exec_id = proc.stdout.split()[0]
    runner(store, log, "run", concurrency=concurrency)
    with Engine(store, durability="async") as eng:
        done = eng.get(exec_id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    return done.output, log.read_text().split()


@pytest.mark.parametrize("concurrency", [1, 16])
@pytest.mark.parametrize("flow, inputs", [("straight_line", {}), ("constructs", {"n": 3}),
                                          ("sleeper", {"seconds": 0.05})])
def test_killed_at_every_flow_api_call_a_new_process_finishes_it_the_same(
        tmp_path, new_store, flow, inputs, concurrency):
    want, calls = uninterrupted(tmp_path, flow, inputs)
    for k in range(1, len(calls) + 1):
        assert crash_at(tmp_path, new_store, flow, inputs, k, concurrency) == \
            (want, calls), k


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_killed_at_a_random_call_of_a_random_flow(tmp_path_factory, new_store, data):
    tmp_path = tmp_path_factory.mktemp("random")
    flow = data.draw(st.sampled_from(["constructs", "straight_line", "sleeper"]))
    inputs = {"n": data.draw(st.integers(1, 4))} if flow == "constructs" else \
        {"seconds": 0.05} if flow == "sleeper" else {}
    want, calls = uninterrupted(tmp_path, flow, inputs)
    k = data.draw(st.integers(1, len(calls)))
    assert crash_at(tmp_path, new_store, flow, inputs, k) == (want, calls)


TRACED_AFTER_A_RUN = '''
import sys
import rt_flows
from engine import Engine
with Engine(sys.argv[1], durability="async") as eng:
    eng.add_connector("effect", rt_flows.effect_recorder(sys.argv[2]))
    assert eng.execute(rt_flows.straight_line).output == ["A", "B"]
def traced():
    return "returned"
sys.settrace(lambda frame, event, arg: None)
print(traced())
'''


def test_a_traced_call_after_a_run_in_this_process_returns(tmp_path):
    # clearing an interrupt that was never sent left the interpreter's eval breaker set,
    # and a traced call then looped in its RESUME forever (a debugger, coverage)
    proc = subprocess.run([sys.executable, "-c", TRACED_AFTER_A_RUN, str(tmp_path / "store"),
                           str(tmp_path / "effects")], capture_output=True, text=True,
                          timeout=60, cwd=SUPPORT)
    assert proc.returncode == 0 and proc.stdout == "returned\n", proc.stderr


GENERATOR_FLOWS = ["gen_paging", "gen_yield_from", "gen_expression", "gen_held", "gen_helpers",
                   "gen_send_throw", "gen_close_after_restore"]


@pytest.mark.parametrize("flow", GENERATOR_FLOWS)
def test_generator_flows_killed_at_every_flow_api_call_finish_the_same(tmp_path, new_store,
                                                                        flow):
    # generators calling this.connect, held across calls, driven by for, next, send,
    # throw, yield from and close: each call is done once, the output is the same
    want, calls = uninterrupted(tmp_path, flow, {})
    assert len(calls) == len(set(calls)) >= 2
    for k in range(1, len(calls) + 1):
        assert crash_at(tmp_path, new_store, flow, {}, k) == (want, calls), k


def test_a_generator_held_while_the_flow_is_unloaded_runs_its_finally_once(eng, tmp_path):
    ex = eng.execute(rt_flows.gen_close_after_restore, {"seconds": 0.6})
    assert eng.get(ex.id).status == Status.WAITING
    assert effects(tmp_path) == ["holding"]          # unloading ran no finally
    time.sleep(0.7)
    runner(eng.path, tmp_path / "effects", "run")
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output == ["one", "HOLDING", "two", "GEN-FINALLY"]
    assert effects(tmp_path) == ["holding", "gen-finally"]


def test_a_generator_that_sleeps_parks_in_memory_and_goes_on_in_the_same_generator(eng, tmp_path):
    ex = eng.execute(rt_flows.gen_sleeping, {"seconds": 0.05})
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output == ["SLEPT0", "SLEPT1"] and effects(tmp_path) == ["slept0", "slept1"]


def test_a_generator_that_sleeps_long_is_unloaded_and_resumed_by_another_process(eng, tmp_path):
    ex = eng.execute(rt_flows.gen_sleeping, {"seconds": 0.3})
    for round in range(2):
        assert eng.get(ex.id).status == Status.WAITING, round
        time.sleep(0.35)
        runner(eng.path, tmp_path / "effects", "run")
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output == ["SLEPT0", "SLEPT1"] and effects(tmp_path) == ["slept0", "slept1"]


def test_a_parked_flow_ended_from_outside_drops_its_generators_without_running_them(
        tmp_path, store_path):
    marker = tmp_path / "marker"
    with Engine(store_path, durability="async", sleep_max_seconds=60) as eng:
        eng.add_connector("effect", rt_flows.effect_recorder(tmp_path / "effects"))
        worker = threading.Thread(target=eng.run, kwargs={"until": "stopped"})
        worker.start()
        try:
            ex = eng.start(rt_flows.gen_parked, {"marker": str(marker), "seconds": 30})
            assert wait_for(lambda: eng.counters().parked == 1)
            eng.cancel(ex.id)
            assert wait_for(lambda: eng.counters().parked == 0)
        finally:
            eng.stop()
            worker.join()
        assert eng.get(ex.id).status == Status.ENDED_CANCELLED
    del eng, worker               # the engine's timers held the parked frames until now
    gc.collect()
    assert effects(tmp_path) == ["parking"] and not marker.exists()


def test_killed_before_any_savepoint_starts_over(tmp_path, new_store):
    want, calls = uninterrupted(tmp_path, "straight_line", {})
    assert crash_at(tmp_path, new_store, "straight_line", {}, 1) == (want, calls)


PINNED_V1 = '''
def handler(system, this, inputs):
    x = 1
    this.sleep(0.3)
    return ("version 1 code", x)
'''
PINNED_V2 = '''
def handler(system, this, inputs):
    this.sleep(0.3)
    return ("version 2 code",)
'''


def test_an_execution_resumes_on_its_pinned_code_after_the_file_changes(tmp_path,
                                                                        store_path):
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "pinned_flow.py").write_text(PINNED_V1)
    script = f"""
import sys, time
sys.path.insert(0, {str(module_dir)!r})
from engine import Engine
with Engine({store_path!r}, durability="async", sleep_max_seconds=0.1) as eng:
    if sys.argv[1] == "start":
        print(eng.execute("pinned_flow:handler").id)
    else:
        time.sleep(0.4)
        eng.run()
"""
    first = subprocess.run([sys.executable, "-c", script, "start"], capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    exec_id = first.stdout.split()[0]
    (module_dir / "pinned_flow.py").write_text(PINNED_V2)      # edited meanwhile
    second = subprocess.run([sys.executable, "-c", script, "run"], capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    with Engine(store_path, durability="async") as eng:
        done = eng.get(exec_id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output == ("version 1 code", 1)


def test_cancel_pause_resume_from_outside(eng):
    ex = eng.start(rt_flows.straight_line)
    eng.pause(ex.id)
    eng.run()
    assert eng.get(ex.id).status == Status.PAUSED
    eng.resume(ex.id)
    eng.run()
    assert eng.get(ex.id).status == Status.ENDED_SUCCESS
    other = eng.start(rt_flows.straight_line)
    eng.cancel(other.id)
    eng.run()
    assert eng.get(other.id).status == Status.ENDED_CANCELLED


def test_restore_and_fork_from_outside_an_ended_execution(eng, tmp_path):
    ex = eng.execute(rt_flows.straight_line)
    first = eng.savepoints(ex.id)[0]
    forked = eng.fork(ex.id, first.id)
    assert forked.status == Status.QUEUED and forked.id != ex.id
    eng.restore(ex.id, first.id)
    eng.run()
    assert eng.get(ex.id).status == Status.ENDED_SUCCESS
    assert eng.get(forked.id).status == Status.ENDED_SUCCESS
    # the restored and the forked execution each redid only the second call
    assert effects(tmp_path) == ["a", "b", "b", "b"]
    with pytest.raises(KeyError):
        eng.restore(ex.id, "no-such-name", by="name")


def test_the_rest_of_the_flow_api(eng):
    ex = eng.execute(rt_flows.api_tour, {"x": 1})
    assert ex.status == Status.ENDED_SUCCESS, ex.error
    assert ex.output == {"id": ex.id, "inputs": {"x": 1}, "count": 1}
    assert ex.outputs == {"stage": "set"}
    again = eng.execute(rt_flows.api_tour, {"x": 2})
    assert again.output["count"] == 2                # settings are shared
    failed = eng.execute(rt_flows.api_tour, {"fail": True})
    # SPEC: this.error(message) ends it ENDED_ERROR with error = message, as given
    assert failed.status == Status.ENDED_ERROR and failed.error == "failed on request"
    actions = [sp.action for sp in eng.savepoints(ex.id)]
    assert actions[:5] == ["setting", "setting.get", "setting.set", "set_output",
                           "sleep_until"]
    assert actions[-1] == "success"


def test_a_timeout_fails_the_execution(eng, tmp_path):
    ex = eng.execute(rt_flows.times_out)
    assert ex.status == Status.ENDED_ERROR and "timeout" in ex.error
    assert effects(tmp_path) == []


def test_restore_from_outside_while_another_process_runs_it(eng, tmp_path):
    ex = eng.start(rt_flows.long_runner, {"rounds": 15})
    proc = subprocess.Popen([sys.executable, RUNNER, str(eng.path),
                             str(tmp_path / "effects"), "run"])
    try:
        deadline = time.time() + 30
        while "round2" not in effects(tmp_path) and time.time() < deadline:
            time.sleep(0.01)
        eng.restore(ex.id, "start", by="name")       # it is running in the other process
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output == 1 and done.restore_count == 1
    calls = effects(tmp_path)
    assert calls.count("round0") == 2 and calls[-1] == "round14"


def test_a_long_computation_keeps_its_lease_and_nobody_else_runs_it(tmp_path, store_path):
    with Engine(store_path, durability="async", lease_seconds=0.6) as eng:
        eng.add_connector("effect", rt_flows.effect_recorder(tmp_path / "effects"))
        ex = eng.start(rt_flows.computes_long, {"seconds": 2.0})
        worker = threading.Thread(target=eng.run)
        worker.start()
        time.sleep(1.2)            # past the first lease: only renewals keep it
        runner(eng.path, tmp_path / "effects", "run")          # another process tries
        worker.join()
        assert eng.get(ex.id).status == Status.ENDED_SUCCESS
    assert effects(tmp_path) == ["begin", "end"]
