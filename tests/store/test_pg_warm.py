"""The PostgreSQL store's connections handed out last-given-back first
(engine/store/pgwarm.py), on a real pool: the order, and what never stays kept -- a
connection a thread waits for, one in a transaction, one taken long ago."""
import threading

import pytest
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolTimeout

from engine.store import pgwarm
from engine.store.pgwarm import WarmConnections
from waiting import wait_for


@pytest.fixture
def pool(pg_url):
    with ConnectionPool(pg_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        yield pool


def test_the_connection_given_back_last_is_taken_first(pool):
    warm = WarmConnections(pool)
    first, second = warm.take(5), warm.take(5)
    warm.give(first)
    warm.give(second)
    assert warm.take(5) is second and warm.take(5) is first


def test_a_thread_waiting_for_the_pool_gets_the_connection_given_back(pool):
    warm = WarmConnections(pool)
    held = [warm.take(5), warm.take(5)]           # the pool's two: none left
    got = []

    def waiter():
        try:
            got.append(warm.take(10))
        except PoolTimeout as e:                   # kept instead of handed over
            got.append(e)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert wait_for(lambda: pool.get_stats()["requests_waiting"] == 1)
    warm.give(held[0])
    assert wait_for(lambda: got, 5)                # not after its 10 s timeout
    assert got == [held[0]]
    thread.join()


def test_a_connection_in_a_transaction_goes_back_to_the_pool_rolled_back(pool):
    warm = WarmConnections(pool)
    conn = warm.take(5)
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE left_open (n int)")
    warm.give(conn)
    again = warm.take(5)
    assert again.info.transaction_status == pq.TransactionStatus.IDLE
    assert again.execute("SELECT to_regclass('left_open')").fetchone()[0] is None


def test_a_connection_taken_long_ago_goes_back_to_the_pool(pool, monkeypatch):
    monkeypatch.setattr(pgwarm, "RECYCLE_SECONDS", 0.0)
    warm = WarmConnections(pool)
    conn = warm.take(5)
    before = pool.get_stats()["requests_num"]
    warm.give(conn)
    warm.take(5)
    assert pool.get_stats()["requests_num"] == before + 1      # from the pool, not kept


def test_a_connection_given_back_after_the_pool_closed_is_closed(pg_url):
    pool = ConnectionPool(pg_url, min_size=1, max_size=2, open=True,
                          kwargs={"autocommit": True})
    warm = WarmConnections(pool)
    conn = warm.take(5)
    warm.flush()
    pool.close()
    warm.give(conn)
    assert conn.closed
