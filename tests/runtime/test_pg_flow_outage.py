"""A Flow-API call while the PostgreSQL server is gone for longer than the store waits for
it ($ENGINE_PG_RETRY_SECONDS): the call fails clearly (StoreUnavailable naming the store),
nothing of it is written, and once the server is back the execution goes on from its last
savepoint -- the interrupted step runs again, the ones before it do not."""
import threading

import pytest

from engine import Engine, Status, StoreUnavailable
from pg_flows import gated
from waiting import wait_for


def test_a_call_during_a_long_outage_fails_clearly_and_the_execution_goes_on_later(
        pg_url, pg_cluster, monkeypatch):
    monkeypatch.setenv("ENGINE_PG_RETRY_SECONDS", "1")
    calls, entered, proceed = [], threading.Event(), threading.Event()

    def step(tag):
        calls.append(tag)
        if tag == "gate" and not proceed.is_set():
            entered.set()
            proceed.wait()                    # the server goes down meanwhile
        return tag.upper()

    with Engine(pg_url, lease_seconds=1) as eng:
        eng.add_connector("step", step)
        failed = []
        runner = threading.Thread(target=lambda: failed.append(
            pytest.raises(StoreUnavailable, eng.execute, gated)))
        runner.start()
        assert entered.wait(30)
        exec_id = next(iter(eng._runner.running))
        with pg_cluster.down():
            proceed.set()                     # its savepoint cannot be written now
            runner.join(60)
        assert failed and not runner.is_alive()
        message = str(failed[0].value)
        assert "could not be reached for 1 s" in message and "engine-test" not in message
        # back: nothing of the failed call was written; the lease this process kept
        # runs out (a renewal sent before the outage may still extend it once), and the
        # execution goes on from its savepoint after "a"
        assert [sp.action for sp in eng.savepoints(exec_id)] == ["connect"]

        def run_when_free():
            eng.run()
            return eng.get(exec_id).status == Status.ENDED_SUCCESS
        assert wait_for(run_when_free)
        assert eng.get(exec_id).output == ["A", "GATE", "B"]
        assert calls == ["a", "gate", "gate", "b"]
