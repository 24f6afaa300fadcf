"""add_connector(retries=, backoff=): a failing connector call is tried again after a
durable backoff, each failed attempt logged; a worker killed during the backoff leaves
the retry to another.  On LMDB and on PostgreSQL (store_path)."""
import os
import signal
import subprocess
import sys

import pytest

import message_flows as flows
from engine import Engine, Status
from waiting import wait_for


@pytest.fixture
def eng(store_path):
    with Engine(store_path, durability="async", sleep_max_seconds=0.2) as eng:
        flows.register(eng)
        yield eng


def failed_attempts(execution):
    return [text for _, text in execution.log if "failed" in text]


def run_until_ended(eng, exec_id):
    return wait_for(lambda: (eng.run(), eng.get(exec_id).status)[1] not in
                    (Status.QUEUED, Status.WAITING, Status.RUNNING), 60)


def test_failing_twice_then_succeeding_the_flow_sees_success(eng, tmp_path):
    ex = eng.execute(flows.calls_flaky, {"counter": str(tmp_path / "n"), "failures": 2})
    assert run_until_ended(eng, ex.id)
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS and done.output == "answered at call 3"
    assert failed_attempts(done) == [
        "connector 'flaky' attempt 1 of 4 failed: ConnectionError: call 1 failed; "
        "trying again in 0.05 s",
        "connector 'flaky' attempt 2 of 4 failed: ConnectionError: call 2 failed; "
        "trying again in 0.1 s"]
    # the backoffs were savepoints: the wait is durable
    assert [s.action for s in eng.savepoints(ex.id)] == ["connect"] * 3


def test_after_the_last_retry_the_exception_reaches_the_flow(eng, tmp_path):
    ex = eng.execute(flows.calls_flaky, {"counter": str(tmp_path / "n"), "failures": 9})
    assert run_until_ended(eng, ex.id)
    done = eng.get(ex.id)
    assert done.output == "gave up: call 4 failed" and len(failed_attempts(done)) == 4


def test_a_backoff_past_sleep_max_seconds_is_unloaded_and_resumed(store_path, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("FLAKY_BACKOFF", "0.3")      # past sleep_max_seconds 0.2
    with Engine(store_path, durability="async", sleep_max_seconds=0.2) as eng:
        flows.register(eng)
        ex = eng.execute(flows.calls_flaky, {"counter": str(tmp_path / "n"),
                                             "failures": 1})
        assert ex.status == Status.WAITING and eng.counters().parked == 0
        assert run_until_ended(eng, ex.id)
        assert eng.get(ex.id).output == "answered at call 2"


@pytest.mark.parametrize("retries, backoff", [(-1, 1), (1.5, 1), (True, 1), (1, -1),
                                             (1, float("nan")), (1, "1")])
def test_bad_retries_and_backoffs_are_refused(eng, retries, backoff):
    with pytest.raises(ValueError, match="retries" if backoff == 1 else "backoff"):
        eng.add_connector("x", flows.flaky, retries=retries, backoff=backoff)
    assert "x" not in eng.connectors


def test_a_worker_killed_during_the_backoff_leaves_the_retry_to_another(eng, store_path,
                                                                        tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("FLAKY_BACKOFF", "1")        # the worker parks it in memory
    ex = eng.start(flows.calls_flaky, {"counter": str(tmp_path / "n"), "failures": 1})
    killed = subprocess.Popen([sys.executable, flows.__file__, "work", store_path,
                               "stopped"])
    assert wait_for(lambda: failed_attempts(eng.get(ex.id)), 60)    # in its backoff
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert run_until_ended(eng, ex.id)              # this process takes it over
    done = eng.get(ex.id)
    assert done.output == "answered at call 2" and len(failed_attempts(done)) == 1
    assert os.path.getsize(tmp_path / "n") == 2     # called twice in all
