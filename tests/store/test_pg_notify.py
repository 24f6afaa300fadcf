"""Wake-ups from the PostgreSQL store (Store.on_work): the database tells listeners when an
execution may have become claimable, with the time it is due from; notifications arrive
in commit order, so "not told" is checked by what was told after it."""
import threading

import psycopg

from engine.store import LmdbStore, Owner
from engine.store.postgres import PostgresStore
from waiting import wait_for


def test_an_lmdb_store_cannot_tell(tmp_path):
    with LmdbStore(str(tmp_path / "store")) as store:
        assert store.on_work(lambda due: None) is False
        assert store.poll_seconds == 0.02


def test_work_queued_elsewhere_is_told_with_its_due_time(pg_url):
    with PostgresStore(pg_url) as listening, PostgresStore(pg_url) as other:
        told = []
        assert listening.on_work(told.append) is True
        assert listening.poll_seconds >= 1.0           # a safety net, not a busy poll
        other.put_execution({"id": "e1", "status": "QUEUED", "due": 100.0})
        assert wait_for(lambda: told == [100.0])
        other.put_execution({"id": "e1", "status": "QUEUED", "due": 200.0})   # moved
        assert wait_for(lambda: told == [100.0, 200.0])


def test_only_work_someone_may_claim_is_told(pg_url):
    owner = Owner.current("test")
    with PostgresStore(pg_url) as listening, PostgresStore(pg_url) as other:
        told = []
        listening.on_work(told.append)
        other.put_execution({"id": "parked", "status": "RUNNING", "due": None})
        assert other.claim_one("parked", owner)
        # leased, due later: parked in its owner's memory -- no one else's business
        other.put_execution({"id": "parked", "status": "WAITING", "due": 4e9})
        # leased, due now: a child woke it -- its owner must claim it
        other.put_execution({"id": "parked", "status": "WAITING", "due": 300.0})
        assert wait_for(lambda: told == [300.0])
        other.put_execution({"id": "parked", "status": "WAITING", "due": 4e9})
        # its lease let go while it is queued: anyone may claim it from its due time
        other.release("parked", owner)
        assert wait_for(lambda: told == [300.0, 4e9])
        # ended: off the queue, nothing to tell
        other.put_execution({"id": "parked", "status": "ENDED_SUCCESS", "due": None})
        other.put_execution({"id": "last", "status": "QUEUED", "due": 400.0})
        assert wait_for(lambda: told == [300.0, 4e9, 400.0])


def test_the_listener_connects_again_and_says_so(pg_url):
    with PostgresStore(pg_url) as listening, PostgresStore(pg_url) as other:
        told = []
        listening.on_work(told.append)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND query LIKE "
                                  "'LISTEN %'").fetchall()
        assert killed == [(True,)]
        assert wait_for(lambda: told == [None])       # look now: some may have been lost
        other.put_execution({"id": "e1", "status": "QUEUED", "due": 100.0})
        assert wait_for(lambda: told == [None, 100.0])


def test_closing_the_store_ends_its_listener(pg_url):
    store = PostgresStore(pg_url)
    store.on_work(lambda due: None)
    assert "engine-listen" in [t.name for t in threading.enumerate()]
    store.close()
    assert "engine-listen" not in [t.name for t in threading.enumerate()]
