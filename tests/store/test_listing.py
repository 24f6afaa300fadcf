"""The listing the Savepoints page shows (StoreProtocol.list_executions, status_counts,
children, savepoint_page; Engine.executions_page ...): every store lists exactly what
reading every head says, page by page -- the LMDB store from its indexes, kept in step by
every write that changes a status (a record, a savepoint, a delete), and rebuilt for a
store written before them; the PostgreSQL store from its listing columns, filled in for a
store of format 3."""
import random

import psycopg
import pytest

import store_records
from engine import Engine, Status
from engine.store import Store, listing, records

FLOWS = ("shop.orders:handler", "shop.orders:refund", "billing:handler")


def expected_pages(store, status, flow, limit):
    """Every page of the listing, as reading every head makes it."""
    heads = store.executions()
    pages, offset = [], 0
    while True:
        page, total = listing.scan_page(heads, status, flow, offset, limit)
        pages.append(([h["id"] for h in page], total))
        offset += limit
        if offset >= total:
            return pages


def listed_pages(store, status, flow, limit):
    pages, offset = [], 0
    while True:
        page, total = store.list_executions(status, flow, offset, limit)
        pages.append(([h["id"] for h in page], total))
        offset += limit
        if offset >= total:
            return pages


def assert_lists_as_the_heads_say(store):
    heads = store.executions()
    assert store.status_counts() == listing.scan_counts(heads)
    for status in (None, "QUEUED", "RUNNING", "WAITING", "ENDED_ERROR"):
        for flow in (None, "handler", "shop", "shop.orders:refund", "nothing"):
            assert listed_pages(store, status, flow, 7) == \
                expected_pages(store, status, flow, 7), (status, flow)
    for head in heads:
        assert store.children(head["id"]) == listing.scan_children(heads, head["id"])
    if hasattr(store, "check"):
        problems = [p for p in store.check()["problems"] if p["db"] == "listing"]
        assert problems == []


def new_execution(n, rng, parents):
    return {"id": f"{rng.getrandbits(64):016x}", "flow": rng.choice(FLOWS),
            "status": "QUEUED", "created_at": 1_700_000_000 + n * 0.5 + rng.random() / 4,
            "updated_at": 0.0, "due": None, "restore_count": 0,
            "parent": rng.choice(parents) if parents and rng.random() < 0.3 else None}


def put_executions(store, count, rng):
    """``count`` new executions, some started by others, stored; their dicts."""
    live = []
    for n in range(count):
        execution = new_execution(n, rng, [e["id"] for e in live])
        store.put_execution(execution)
        live.append(execution)
    return live


def test_pages_counts_and_children_follow_every_kind_of_write(store_path):
    rng = random.Random(15)
    with Store(store_path, durability="async") as store:
        live = put_executions(store, 60, rng)
        for step in range(150):
            execution = rng.choice(live)
            action = rng.random()
            execution["status"] = rng.choice(records.STATUSES)
            if action < 0.5:
                # a savepoint carries the new status; the commits before it with an
                # unchanged status take the compiled one-put path on LMDB
                store_records.commit(store, execution)
                store_records.commit(store, execution)
            elif action < 0.8:
                store.put_execution(execution)
            elif len(live) > 20:
                live.remove(execution)
                assert store.delete_execution(execution["id"])
            if step % 50 == 0:
                assert_lists_as_the_heads_say(store)
        assert_lists_as_the_heads_say(store)


def running(store):
    """A RUNNING execution "e1", stored."""
    execution = {"id": "e1", "flow": "f:g", "status": "RUNNING", "created_at": 1.0,
                 "due": None}
    store.put_execution(execution)
    return execution


def test_a_status_a_savepoint_carries_after_one_put_commits_is_listed(store_path):
    with Store(store_path, durability="async") as store:
        execution = running(store)
        for _ in range(3):
            store_records.commit(store, execution)
        execution["status"] = "WAITING"
        store_records.commit(store, execution)
        assert store.status_counts()["WAITING"] == 1
        assert store.status_counts()["RUNNING"] == 0
        assert [h["id"] for h in store.list_executions("WAITING")[0]] == ["e1"]
        assert store.list_executions("RUNNING") == ([], 0)


def test_savepoint_pages_read_newest_or_oldest_first(store_path):
    with Store(store_path, durability="async") as store:
        execution = running(store)
        for n in range(23):
            store_records.commit(store, execution, name=f"n{n}" if n % 5 == 0 else None)
        metas, total = store.savepoint_page("e1", 0, 10)
        assert total == 23 and [m["seq"] for m in metas] == list(range(23, 13, -1))
        metas, total = store.savepoint_page("e1", 20, 10, newest=False)
        assert [m["seq"] for m in metas] == [21, 22, 23]
        assert metas == store.savepoints("e1")[20:]
        assert store.savepoint_page("nobody", 0, 10) == ([], 0)


def test_bad_listing_requests_say_what_is_wrong(store_path):
    with Store(store_path, durability="async") as store:
        with pytest.raises(ValueError, match="status must be one of"):
            store.list_executions("DONE")
        with pytest.raises(ValueError, match="must not be negative"):
            store.list_executions(None, None, -1, 10)


def test_the_engine_pages_executions_and_savepoints(tmp_path):
    with Engine(tmp_path / "store", durability="async") as eng:
        started = [eng.start("store_records:holder", {"n": n}) for n in range(5)]
        eng.cancel(started[1].id)
        page = eng.executions_page(limit=2)
        assert page.total == 5 and [e.id for e in page.executions] == \
            [started[4].id, started[3].id]
        page = eng.executions_page("ended_cancelled")
        assert [e.id for e in page.executions] == [started[1].id]
        assert eng.status_counts()[Status.QUEUED] == 4
        assert eng.executions_page(flow="holder", offset=4).executions[0].id == \
            started[0].id
        assert eng.children(started[0].id[:8]) == []
        assert eng.savepoints_page(started[0].id).total == 0
        with pytest.raises(ValueError, match="status must be one of"):
            eng.executions_page("DONE")


def test_an_lmdb_store_written_before_the_listing_is_indexed_when_opened(tmp_path):
    path = str(tmp_path / "store")
    rng = random.Random(7)
    with Store(path, durability="async") as store:
        for n in range(30):
            execution = new_execution(n, rng, [])
            execution["status"] = rng.choice(records.STATUSES)
            store.put_execution(execution)
        expected = expected_pages(store, None, None, 8)

        def forget(txn):                      # as a store of before the listing
            for name in ("listing", "by_status", "listed", "status_counts", "children"):
                txn.drop(store.db[name], delete=False)
            txn.delete(b"listing-indexed", db=store.db["meta"])
        store._write(forget)
        assert store.list_executions() == ([], 0)
    with Store(path, durability="async") as store:
        assert listed_pages(store, None, None, 8) == expected
        assert_lists_as_the_heads_say(store)


def test_engine_doctor_finds_and_rebuilds_a_listing_out_of_step(tmp_path):
    with Store(str(tmp_path / "store"), durability="async") as store:
        for n, status in enumerate(("QUEUED", "RUNNING", "ENDED_SUCCESS")):
            store.put_execution({"id": f"e{n}", "flow": "f:g", "status": status,
                                 "created_at": float(n), "due": None})

        store._write(lambda txn: txn.delete(b"e2", db=store.db["listed"]))
        report = store.check()
        problems = [p for p in report["problems"] if p["db"] == "listing"]
        assert [p["execution"] for p in problems] == ["e2"]
        assert "out of step" in problems[0]["problem"]
        assert problems[0]["repair"] == "rebuild the listing indexes"
        store.check(repair=True)
        assert store.check()["problems"] == []
        assert_lists_as_the_heads_say(store)


def test_a_postgres_store_of_format_3_gets_its_listing_columns_filled_in_when_opened(pg_url):
    with Store(pg_url, durability="async") as store:
        live = put_executions(store, 30, random.Random(9))
        for execution in live[::3]:           # the status only a savepoint carries
            execution["status"] = "WAITING"
            store_records.commit(store, execution)
        expected = expected_pages(store, None, None, 8)
        assert store.status_counts()["WAITING"] == 10
    with psycopg.connect(pg_url, autocommit=True) as conn:   # as a store of before them
        conn.execute("SET search_path = savepoint_engine")
        conn.execute(store_records.PG_WITHOUT_LISTING)
        conn.execute("UPDATE meta SET value = '3' WHERE name = 'format'")
    with Store(pg_url, durability="async") as store:
        assert listed_pages(store, None, None, 8) == expected
        assert store.status_counts()["WAITING"] == 10
        assert_lists_as_the_heads_say(store)


def test_engine_doctor_finds_and_rewrites_postgres_listing_columns_out_of_step(pg_url):
    with Store(pg_url, durability="async") as store:
        for n, status in enumerate(("QUEUED", "RUNNING", "ENDED_SUCCESS")):
            store.put_execution({"id": f"e{n}", "flow": "f:g", "status": status,
                                 "created_at": float(n), "due": None})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE savepoint_engine.executions SET status = 'QUEUED' "
                     "WHERE id = 'e2'")
    with Store(pg_url, durability="async") as store:
        assert store.status_counts()["QUEUED"] == 2
        problems = [p for p in store.check()["problems"] if p["db"] == "listing"]
        assert [p["execution"] for p in problems] == ["e2"]
        assert "out of step" in problems[0]["problem"]
        store.check(repair=True)
        assert store.check()["problems"] == []
        assert_lists_as_the_heads_say(store)
