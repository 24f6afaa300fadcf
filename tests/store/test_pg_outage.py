"""The PostgreSQL store when the connection goes: the server restarted in the middle of
operations, the server gone for longer than the store waits, and a COMMIT whose answer
never came (tests/support/commitcut.py cuts the connection there, before or after the
server got it)."""
import threading
import time

import psycopg
import pytest

from commitcut import CommitCutter
from engine import StoreUnavailable
from engine.store.postgres import PostgresStore
from store_records import commit
from waiting import wait_for


def chunk_refs(url):
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT refs FROM savepoint_engine.chunks")]


def test_operations_across_a_server_restart_all_complete(pg_url, pg_cluster):
    with PostgresStore(pg_url, durability="async") as store:
        told = []
        store.on_work(told.append)
        failures, done = [], []
        stop = threading.Event()

        def writer(n):
            i = 0
            try:
                while not stop.is_set():
                    execution = {"id": f"w{n}-{i}", "status": "RUNNING", "due": None}
                    store.put_execution(execution)
                    for counter in range(3):
                        commit(store, execution, counter=counter)
                    done.append(execution["id"])
                    i += 1
            except Exception as e:            # pragma: no cover - the test fails on it
                failures.append(e)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        assert wait_for(lambda: len(done) >= 20)
        pg_cluster.restart()
        before = len(done)
        assert wait_for(lambda: len(done) >= before + 20 or failures)
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == []
        for exec_id in done:              # each written whole, once
            assert store.get_execution(exec_id)["last_seq"] == 3
            assert [m["seq"] for m in store.savepoints(exec_id)] == [1, 2, 3]
        # the listener connected again, said so (None: look now), and hears new work
        assert wait_for(lambda: None in told)
        store.put_execution({"id": "after", "status": "QUEUED", "due": 12345.0})
        assert wait_for(lambda: 12345.0 in told)


def test_an_outage_longer_than_the_bound_fails_clearly_then_the_store_goes_on(
        pg_url, pg_cluster):
    with PostgresStore(pg_url, retry_seconds=1.0) as store:
        store.put_execution({"id": "before", "status": "QUEUED", "due": None})
        with pg_cluster.down():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                store.put_execution({"id": "during", "status": "QUEUED", "due": None})
            assert time.monotonic() - started < 10
        message = str(caught.value)
        assert "could not be reached for 1 s" in message and pg_url.split("@")[1] in message
        assert "engine-test" not in message and "\n" not in message     # no password
        # the server is back: the same store goes on, and nothing of the failed call is there
        store.put_execution({"id": "after", "status": "QUEUED", "due": None})
        assert [e["id"] for e in store.executions()] == ["after", "before"]


@pytest.fixture
def cutter(pg_cluster):
    proxy = CommitCutter(("127.0.0.1", pg_cluster.port))
    yield proxy
    proxy.close()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_savepoint_whose_commit_went_unanswered_is_stored_once(pg_url, pg_cluster,
                                                                 cutter, when):
    url = cutter.url(pg_url, pg_cluster.port)
    with PostgresStore(url) as store:
        execution = {"id": "e1", "status": "RUNNING", "due": None}
        store.put_execution(execution)
        commit(store, execution, value=list(range(5000)), retention="last")
        cut = cutter.cut_next_commit(when)
        # this one drops the first savepoint and its chunk: made twice, it would count
        # its own chunk twice (and drop the first one's twice)
        assert commit(store, execution, value=list(range(5001)), retention="last") == 2
        assert cut.is_set()
        assert execution["last_seq"] == 2 and store.get_execution("e1")["last_seq"] == 2
        assert [m["seq"] for m in store.savepoints("e1")] == [2]
        assert chunk_refs(pg_url) == [1]
        assert commit(store, execution, value="small", retention="last") == 3
        assert chunk_refs(pg_url) == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_update_whose_commit_went_unanswered_is_applied_once(pg_url, pg_cluster,
                                                                cutter, when):
    url = cutter.url(pg_url, pg_cluster.port)
    with PostgresStore(url) as store:
        store.put_execution({"id": "e1", "status": "PAUSED", "due": None, "n": 0})
        cut = cutter.cut_next_commit(when)
        outcome, head = store.update_unless_leased("e1", lambda h: h.update(n=h["n"] + 1))
        assert cut.is_set()
        assert outcome == "done" and head["n"] == 1
        assert store.get_execution("e1")["n"] == 1


# the markers of the two ways a savepoint is committed in one statement (no COMMIT
# message: the statement is its transaction): with other writes, as psycopg sends its
# query text the first time; and the row alone, as its prepared statement is run
ONE_STATEMENT = {"with other writes": b"INSERT INTO names",
                 "the row alone": b"savepoint_engine_savepoint_row\x00"}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("statement", sorted(ONE_STATEMENT))
def test_a_savepoint_in_one_statement_whose_answer_never_came_is_stored_once(
        pg_url, pg_cluster, cutter, statement, when):
    url = cutter.url(pg_url, pg_cluster.port)
    with PostgresStore(url) as store:
        execution = {"id": "e1", "status": "RUNNING", "due": None}
        store.put_execution(execution)
        commit(store, execution, counter=1)      # pins its code
        commit(store, execution, counter=2)      # the row alone: prepared on its connection
        cut = cutter.cut_next(ONE_STATEMENT[statement], when)
        name = "here" if statement == "with other writes" else None
        assert commit(store, execution, kind="named" if name else "implicit", name=name,
                      counter=3) == 3
        assert cut.is_set()
        assert execution["last_seq"] == 3 and store.get_execution("e1")["last_seq"] == 3
        assert [m["seq"] for m in store.savepoints("e1")] == [1, 2, 3]
        assert store.savepoint("e1", 3)[0]["name"] == name
        assert commit(store, execution, counter=4) == 4      # and the store goes on
        assert [m["seq"] for m in store.savepoints("e1")] == [1, 2, 3, 4]
