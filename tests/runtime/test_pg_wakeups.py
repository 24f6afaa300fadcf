"""An idle engine on PostgreSQL waits to be told of new work (LISTEN/NOTIFY) instead of
looking at the queue every 20 ms: it looks about once per slow poll, a start() in another
process wakes it at once, and an execution due later -- which no one will announce when
its time comes -- starts on time all the same (the engine waits until the queue's next
due time).  With the slow poll made 60 s, only those can explain a prompt start."""
import subprocess
import sys
import threading
import time

import pytest

import pg_flows
from engine import Engine, Status
from engine.store.postgres import PostgresStore
from locations import SUPPORT
from waiting import wait_for


class Serving:
    """An engine working until stopped (a worker's loop) on a thread of this process."""

    def __init__(self, url, **settings):
        self.eng = Engine(url, **settings)
        pg_flows.register(self.eng)
        self.thread = threading.Thread(target=self.eng.run, args=("stopped",))
        self.thread.start()

    def stop(self):
        self.eng.stop()
        self.thread.join()
        self.eng.close()


@pytest.fixture
def slow_poll(monkeypatch):
    monkeypatch.setattr(PostgresStore, "poll_seconds", 60.0)


def counting(store, name, calls):
    method = getattr(store, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return method(*args, **kwargs)
    setattr(store, name, counted)


def test_an_idle_engine_looks_at_the_queue_once_per_slow_poll(pg_url):
    calls = []
    serving = Serving(pg_url)
    try:
        for name in ("next_due", "claim_many"):
            counting(serving.eng.store, name, calls)
        assert wait_for(lambda: calls)
        calls.clear()
        time.sleep(1.5)                  # a window: only more looks than one a second fail
        assert len(calls) <= 3, calls    # polling every 20 ms: ~75
        assert "claim_many" not in calls  # nothing due: no claim
    finally:
        serving.stop()


def test_a_start_in_another_process_wakes_an_idle_engine_at_once(pg_url, slow_poll):
    serving = Serving(pg_url)
    try:
        assert wait_for(lambda: serving.eng._runner.scheduler.told)     # listening
        started = subprocess.run(
            [sys.executable, "-c", "import sys, engine; "
             "print(engine.Engine(sys.argv[1]).start('pg_flows:stamp').id)", pg_url],
            capture_output=True, text=True, check=True, cwd=SUPPORT, timeout=60)
        exec_id = started.stdout.strip()
        assert wait_for(lambda: serving.eng.get(exec_id).status == Status.ENDED_SUCCESS, 20)
    finally:
        serving.stop()


def test_an_execution_due_later_starts_on_time_untold(pg_url, slow_poll):
    # put to sleep and unloaded by another engine before this one listens: no one will
    # tell this one when it is due
    with Engine(pg_url, sleep_max_seconds=0) as eng:
        pg_flows.register(eng)
        ex = eng.execute(pg_flows.napper, {"seconds": 2})
        assert ex.status == Status.WAITING
        due = eng.store.get_execution(ex.id)["due"]
    serving = Serving(pg_url)
    try:
        assert wait_for(lambda: serving.eng.get(ex.id).status == Status.ENDED_SUCCESS, 20)
        woke = serving.eng.get(ex.id).output
        assert due <= woke < due + 10                 # not at the next slow poll (60 s)
    finally:
        serving.stop()
