"""start(id=...): the caller's id names one execution, created once -- also when two
processes race to start it.  On LMDB and on PostgreSQL (store_path)."""
import json
import os
import subprocess
import sys

import pytest

import message_flows as flows
from engine import Engine, Status


@pytest.fixture
def eng(store_path):
    with Engine(store_path, durability="async") as eng:
        yield eng


def test_a_second_start_with_the_id_returns_the_first_and_starts_nothing(eng):
    first = eng.start(flows.noop, {"n": 1}, id="order-42")
    assert first.id == "order-42" and first.status == Status.QUEUED
    eng.run()
    ended = eng.get("order-42")
    assert ended.status == Status.ENDED_SUCCESS and ended.output == {"n": 1}
    again = eng.start(flows.noop, {"n": 2}, id="order-42")
    assert again.id == "order-42" and again.status == Status.ENDED_SUCCESS
    assert again.inputs == {"n": 1} and again.created_at == first.created_at
    eng.run()
    assert [e.id for e in eng.executions()] == ["order-42"]
    assert len(eng.savepoints("order-42")) == len(eng.savepoints(ended.id))


def test_a_deleted_id_can_be_started_again(eng):
    eng.start(flows.noop, 1, id="job.1")
    eng.delete("job.1")
    assert eng.start(flows.noop, 2, id="job.1").inputs == 2


@pytest.mark.parametrize("bad", ["", "has space", "-leading", "a/b", "x" * 129, "é", 42])
def test_bad_ids_are_refused(eng, bad):
    with pytest.raises(ValueError, match="execution id"):
        eng.start(flows.noop, id=bad)
    assert eng.executions() == []


def test_two_processes_racing_to_start_50_ids_make_one_execution_each(store_path, tmp_path):
    ids = [f"order-{n}" for n in range(50)]
    go = str(tmp_path / "go")
    with Engine(store_path) as eng:           # the store exists before they open it
        racers = [subprocess.Popen([sys.executable, flows.__file__, store_path, go,
                                    ",".join(ids)], stdout=subprocess.PIPE, text=True)
                  for _ in range(2)]
        open(go, "w").close()
        seen = [json.loads(r.communicate(timeout=120)[0]) for r in racers]
        assert all(r.returncode == 0 for r in racers)
        assert sorted(e.id for e in eng.executions()) == sorted(ids)
        # both were handed the same execution for every id
        assert seen[0] == seen[1]
        assert all(eng.get(i).inputs == {"id": i} for i in ids)
