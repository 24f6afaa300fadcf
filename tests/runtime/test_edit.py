"""Editing a savepoint's locals before an execution goes on (restore and fork with
set_locals), and what changed between two savepoints (diff) -- on both stores."""
import subprocess
import threading

import pytest

import edit_flows
import rt_flows
from engine import Change, Engine, InvalidTransition, Status
from engine.store.leases import Owner, start_time, this_host
from seed_example import UploadServer, make_database


@pytest.fixture
def eng(store_path):
    with Engine(store_path, durability="async", sleep_max_seconds=0.2) as engine:
        yield engine


def finished(eng, exec_id):
    eng.run()
    done = eng.get(exec_id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    return done.output


def listed(eng, exec_id):
    return [(sp.seq, sp.kind, sp.name, sp.action) for sp in eng.savepoints(exec_id)]


# --- the seeds' example with a wrong path ----------------------------------------------------

def test_the_seed_example_with_a_wrong_path_is_mended_and_finishes(store_path, tmp_path):
    db = tmp_path / "data.sqlite"
    make_database(db)
    server = UploadServer(fail_first=False, path="/upload")
    reads = tmp_path / "reads"
    try:
        with Engine(store_path, durability="sync") as eng:
            eng.add_connector("database", rt_flows.db_reader(str(db), str(reads)))
            eng.add_connector("remote-api", rt_flows.uploader(server.url))
            ex = eng.execute(edit_flows.seed_wrong_path)
            assert ex.status == Status.ENDED_ERROR and "HTTP 404" in ex.error
            named = eng.savepoint(ex.id, "with-fetched-data", by="name")
            before = eng.inspect(ex.id, named.seq)
            record = eng.store.savepoint(ex.id, named.seq)[1]
            assert before[0].locals["path"] == "/uplode"

            restored = eng.restore(ex.id, "with-fetched-data", by="name",
                                   set_locals={"path": "/upload"})
            assert restored.status == Status.QUEUED and restored.restore_count == 1
            edit = eng.savepoints(ex.id)[-1]
            assert (edit.kind, edit.name, edit.action, edit.line, edit.command) == (
                "explicit", f"edit of {named.seq}", "save_dump", named.line, named.command)
            assert eng.inspect(ex.id, edit.seq)[0].locals["path"] == "/upload"
            # the original decodes as before, byte for byte the same
            assert eng.store.savepoint(ex.id, named.seq)[1] == record
            assert eng.inspect(ex.id, named.seq) == before

            assert finished(eng, ex.id) == {"uploaded": 3, "status": 200}
    finally:
        server.shutdown()
    assert reads.read_text().split() == ["read"]                    # read once
    assert server.received == [[[1, "a"], [2, "b"], [3, "c"]]]      # uploaded once


# --- what an edit reaches ---------------------------------------------------------------------

def test_a_local_of_an_outer_frame(eng):
    ex = eng.execute(edit_flows.summing)
    noted = eng.savepoint(ex.id, "noted", by="name").seq
    eng.restore(ex.id, noted, set_locals={"helper.rows": [10, 20], "n": 2})
    # helper's rows is rebound; the flow's own rows is another name for the old list
    assert finished(eng, ex.id) == {"total": 30, "rows": [1, 2, 3]}


def test_a_cell_a_closure_shares(eng):
    ex = eng.execute(edit_flows.closure)
    assert ex.output == {"limit": 10, "over_5": False}
    eng.restore(ex.id, "closure", by="name", set_locals={"limit": 3})
    assert finished(eng, ex.id) == {"limit": 3, "over_5": True}


def test_a_free_variable_of_the_inner_frame_is_the_outer_frames_cell(eng):
    ex = eng.execute(edit_flows.counter)
    assert ex.output == {"first": 1, "count": 1}
    eng.restore(ex.id, "bumped", by="name", set_locals={"count": 41})
    assert finished(eng, ex.id) == {"first": 41, "count": 41}


def test_a_value_two_locals_share_is_rebound_for_the_name_given_only(eng):
    ex = eng.execute(edit_flows.sharing)
    assert ex.output == {"a": [1, 2, 3], "b": [1, 2, 3], "same": True}
    eng.restore(ex.id, "shared", by="name", set_locals={"a": [9]})
    assert finished(eng, ex.id) == {"a": [9, 3], "b": [1, 2], "same": False}
    one = [7]
    eng.restore(ex.id, "shared", by="name", set_locals={"a": one, "b": one})
    assert finished(eng, ex.id) == {"a": [7, 3], "b": [7, 3], "same": True}


def test_fork_with_set_locals_leaves_the_source_alone(eng):
    ex = eng.execute(edit_flows.wrong_limit)
    assert ex.status == Status.ENDED_ERROR
    kept = listed(eng, ex.id)
    forked = eng.fork(ex.id, "checked", by="name", set_locals={"limit": 5, "label": "ok"})
    assert forked.id != ex.id and forked.status == Status.QUEUED
    assert listed(eng, forked.id) == [(1, "explicit", "edit of 1", "save_dump")]
    assert finished(eng, forked.id) == {"limit": 5, "label": "ok"}
    assert listed(eng, ex.id) == kept and eng.get(ex.id).status == Status.ENDED_ERROR


def test_a_worker_looking_while_fork_stores_the_savepoint_finds_nothing_to_start(eng):
    ex = eng.execute(edit_flows.wrong_limit)
    other = subprocess.Popen(["sleep", "60"])      # a worker's process, claiming
    owner = Owner(other.pid, start_time(other.pid), this_host(), "worker")
    claimed = []
    commit = eng.store.commit_savepoint

    def claiming_first(execution, *args, **kwargs):
        claimed.extend(eng.store.claim_many(owner, 10))    # the moment a worker looks
        return commit(execution, *args, **kwargs)
    eng.store.commit_savepoint = claiming_first
    try:
        forked = eng.fork(ex.id, "checked", by="name", set_locals={"limit": 2})
    finally:
        del eng.store.commit_savepoint
        other.kill()
        other.wait()
    # not the fork: a worker starting it before its savepoint would run the flow anew
    assert claimed == []
    assert finished(eng, forked.id) == {"limit": 2, "label": "limit"}


# --- refusals: a ValueError naming the problem, nothing saved -----------------------------------

@pytest.mark.parametrize("set_locals, words", [
    ({"zz": 1}, "'zz' is not a local of Right.step in savepoint 1 (its locals: self, this)"),
    ({"nosuch.x": 1}, "savepoint 1 has no frame of a function 'nosuch' (its frames, "
                      "outermost first: stepping, Left.step, Right.step)"),
    ({"step.this": 1}, "function 'step' is ambiguous in savepoint 1: it names "
                       "edit_flows.Left.step, edit_flows.Right.step"),
    ({"this": threading.Lock()}, "set_locals['this']: cannot save a lock"),
    ({"self": 1, "Right.step.self": 2}, "names one local twice"),
    ({"": 1}, "is not a name"),
    ({}, "set_locals must be a dict of {name: value} naming at least one local, not {}"),
    ([("a", 1)], "set_locals must be a dict"),
])
def test_refusals_name_the_problem_and_save_nothing(eng, set_locals, words):
    ex = eng.execute(edit_flows.stepping)
    kept, status = listed(eng, ex.id), eng.get(ex.id).status
    for operation in (eng.restore, eng.fork):
        with pytest.raises(ValueError) as refused:
            operation(ex.id, 1, set_locals=set_locals)
        assert words in str(refused.value)
    assert listed(eng, ex.id) == kept and eng.get(ex.id).status == status
    assert len(eng.executions()) == 1                      # no fork was made


def test_a_name_of_one_function_among_same_named_ones_is_accepted(eng):
    ex = eng.execute(edit_flows.stepping)
    for name in ("Left.step.this", "edit_flows.Left.step.this"):
        eng.restore(ex.id, 1, set_locals={name: None, "this": None})
    assert [sp.name for sp in eng.savepoints(ex.id)] == ["stepped", "edit of 1",
                                                          "edit of 1"]


def test_an_execution_a_live_process_holds_is_refused_until_it_lets_go(eng):
    ex = eng.execute(edit_flows.wrong_limit)
    kept = listed(eng, ex.id)
    other = subprocess.Popen(["sleep", "60"])      # a live process that holds its lease
    try:
        owner = Owner(other.pid, start_time(other.pid), this_host(), "other")
        assert eng.store.claim_one(ex.id, owner)
        with pytest.raises(InvalidTransition, match="a process is running it; pause it"):
            eng.restore(ex.id, "checked", by="name", set_locals={"limit": 5})
        assert listed(eng, ex.id) == kept
        eng.store.release(ex.id, owner)
    finally:
        other.kill()
        other.wait()
    eng.restore(ex.id, "checked", by="name", set_locals={"limit": 5})
    assert finished(eng, ex.id) == {"limit": 5, "label": "limit"}


# --- diff -------------------------------------------------------------------------------------

def test_consecutive_savepoints_of_a_loop_differ_in_the_loop_variable_and_the_total(eng):
    ex = eng.execute(edit_flows.looping)
    assert [sp.action for sp in eng.savepoints(ex.id)] == ["log"] * 4
    # in the order of the frame's variables
    assert eng.diff(ex.id, 1, 2) == [Change("looping", "total", 0, 10, "changed", 0),
                                     Change("looping", "i", 0, 1, "changed", 0)]
    assert eng.diff(ex.id, 2, 4) == [Change("looping", "total", 10, 60, "changed", 0),
                                     Change("looping", "i", 1, 3, "changed", 0)]
    assert eng.diff(ex.id, 3, 3) == []


def test_diff_shows_locals_added_and_frames_entered_and_left(eng):
    ex = eng.execute(edit_flows.summing)
    noted, summed = (eng.savepoint(ex.id, n, by="name").seq for n in ("noted", "summed"))
    assert eng.previous_savepoint(ex.id, summed).seq == noted
    assert eng.previous_savepoint(ex.id, noted) is None
    out = eng.diff(ex.id, noted, summed)
    assert [(c.frame, c.name, c.kind, c.depth) for c in out] == [
        ("summing", "total", "added", 0), ("helper", None, "left", 1),
        ("note", None, "left", 2)]
    assert out[0].after == 6 and out[1].before == {"this": out[1].before["this"],
                                                   "rows": [1, 2, 3]}
    back = eng.diff(ex.id, summed, noted)
    assert [(c.frame, c.name, c.kind) for c in back] == [
        ("summing", "total", "removed"), ("helper", None, "entered"),
        ("note", None, "entered")]
    first = eng.diff(ex.id, None, noted)                  # from before the first savepoint
    assert [(c.frame, c.kind) for c in first] == [("summing", "entered"),
                                                  ("helper", "entered"), ("note", "entered")]
