"""The PostgreSQL store, on the session's real PostgreSQL cluster (tests/conftest.py); each
test gets a database and a schema of its own."""
import subprocess
import threading
import uuid

import psycopg
import pytest

from engine import SavepointError, _codec
from engine.store import Owner, leases
from engine.store.leases import start_time, this_host
from engine.store import postgres
from engine.store.postgres import PostgresStore
from store_records import commit
from waiting import wait_for

SECRET = "test secret for the postgres store"


@pytest.fixture
def schema():
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
def store(pg_url, schema, monkeypatch):
    monkeypatch.setenv("ENGINE_SECRET_KEY", SECRET)
    with PostgresStore(pg_url, durability="async", schema=schema) as s:
        yield s


def rows(url, schema, table):
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0]


def dead_owner():
    """An Owner on this machine whose process has ended."""
    proc = subprocess.Popen(["sleep", "60"])
    owner = Owner(proc.pid, start_time(proc.pid), this_host(), "dead")
    proc.kill()
    proc.wait()
    return owner


# --- executions and savepoints ------------------------------------------------------------

def test_an_execution_reads_back_as_written(store):
    store.put_execution({"id": "e1", "flow": "m:f", "status": "QUEUED", "due": None})
    store.put_execution({"id": "e12", "flow": "m:g", "status": "QUEUED", "due": None})
    head = store.get_execution("e1")
    assert head["flow"] == "m:f" and head["version"] > 0
    assert store.get_execution("nope") is None
    assert [e["id"] for e in store.executions()] == ["e1", "e12"]
    assert store.ids_with_prefix("e1") == ["e1", "e12"]
    assert store.ids_with_prefix("e12") == ["e12"]


def test_savepoints_commit_with_the_executions_state(store):
    execution = {"id": "e1", "status": "RUNNING", "due": None}
    store.put_execution(execution)
    seqs = [commit(store, execution, counter=i) for i in range(3)]
    named = commit(store, execution, kind="explicit", name="here", counter=9)
    assert seqs == [1, 2, 3] and named == 4 and execution["last_seq"] == 4
    assert store.get_execution("e1")["last_seq"] == 4
    assert [m["seq"] for m in store.savepoints("e1")] == [1, 2, 3, 4]
    assert store.seq_of("e1", "here") == 4 and store.seq_of("e1", "other") is None
    meta, record = store.savepoint("e1", 2)
    frames = _codec.decode_snapshot(record, store.codes_for(record), chunks=store.chunk)
    assert frames[0].locals == ("state", 1)
    assert meta["kind"] == "implicit" and meta["size"] == len(record)
    assert store.savepoint("e1", 99) is None


def test_a_second_store_reads_the_code_and_chunks_the_first_pinned(store, pg_url, schema):
    execution = {"id": "e1", "status": "RUNNING", "due": None}
    store.put_execution(execution)
    big = list(range(5000))
    commit(store, execution, value=big)
    with PostgresStore(pg_url, schema=schema) as other:
        _, record = other.savepoint("e1", 1)
        frames = _codec.decode_snapshot(record, other.codes_for(record), chunks=other.chunk)
        assert frames[0].locals[0] == big


def test_retention_last_drops_the_previous_implicit_savepoint_and_its_chunks(
        store, pg_url, schema):
    execution = {"id": "e1", "status": "RUNNING", "due": None}
    store.put_execution(execution)
    for i in range(3):
        commit(store, execution, value=list(range(5000 + i)), retention="last")
    assert [m["seq"] for m in store.savepoints("e1")] == [3]
    assert rows(pg_url, schema, "chunks") == 1


def test_a_commit_writes_its_name_pins_chunks_and_due_time_all_at_once_or_not_at_all(
        store, pg_url, schema):
    big = list(range(5000))
    execution = {"id": "e1", "status": "WAITING", "due": 100.0}
    store.put_execution(execution)
    execution["due"] = 50.0
    assert commit(store, execution, kind="explicit", name="here", value=big) == 1
    assert store.seq_of("e1", "here") == 1 and store.next_due() == 50.0
    for table in ("code", "code_users", "chunks", "savepoints"):
        assert rows(pg_url, schema, table) == 1, table
    # a commit that fails (the server refuses its name: a trigger of the test's) leaves
    # nothing of it behind
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION {schema}.refuse() RETURNS trigger AS $$ BEGIN "
                     "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql")
        conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON {schema}.names FOR EACH ROW "
                     f"WHEN (NEW.name = 'there') EXECUTE FUNCTION {schema}.refuse()")
    execution.update(due=20.0)
    with pytest.raises(psycopg.errors.RaiseException):
        commit(store, execution, kind="explicit", name="there", value=big + [1])
    assert store.seq_of("e1", "there") is None and store.next_due() == 50.0
    assert [m["seq"] for m in store.savepoints("e1")] == [1]
    assert rows(pg_url, schema, "chunks") == 1
    # retention "last" keeping the chunk the dropped savepoint had: still counted once
    execution = {"id": "e2", "status": "RUNNING", "due": None}
    store.put_execution(execution)
    for _ in range(3):
        commit(store, execution, value=big, retention="last")
    assert [m["seq"] for m in store.savepoints("e2")] == [3]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT refs FROM {schema}.chunks").fetchall() == [(2,)]
    assert store.delete_execution("e2") and store.delete_execution("e1")
    assert rows(pg_url, schema, "chunks") == 0


def test_delete_takes_everything_of_the_execution_and_only_that(store, pg_url, schema):
    big = list(range(5000))
    for exec_id in ("e1", "e2"):
        execution = {"id": exec_id, "status": "RUNNING", "due": 1.0}
        store.put_execution(execution)
        commit(store, execution, kind="explicit", name="n", value=big)
    store.set_setting("signal:e1", "cancel")
    store.claim_one("e1", Owner.current())
    assert store.delete_execution("e1") is True
    assert store.delete_execution("e1") is False
    assert store.get_execution("e1") is None and store.lease("e1") is None
    assert store.get_setting("signal:e1") is None
    for table, left in (("executions", 1), ("savepoints", 1), ("names", 1), ("chunks", 1),
                        ("queue", 1), ("leases", 0)):
        assert rows(pg_url, schema, table) == left, table
    assert store.delete_execution("e2") is True
    for table in ("executions", "savepoints", "names", "code", "code_users", "chunks",
                  "queue"):
        assert rows(pg_url, schema, table) == 0, table


# --- claims and leases ----------------------------------------------------------------------

def test_two_threads_claiming_never_get_the_same_execution(store):
    ids = [f"e{i:03}" for i in range(200)]
    for exec_id in ids:
        store.put_execution({"id": exec_id, "status": "QUEUED", "due": 1.0})
    owners = [Owner(1, 1, "host-a"), Owner(2, 2, "host-b")]
    taken = [[], []]
    start = threading.Barrier(2)

    def claimer(i):
        start.wait()
        while True:
            got = store.claim_many(owners[i], 7, lease_seconds=600)
            if not got and store.queue_depth() == 0:
                return
            taken[i] += got

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == ids
    assert taken[0] and taken[1]
    assert all(store.lease(i).owner in owners for i in ids)


def test_claim_takes_the_earliest_due_and_not_what_is_not_due(store):
    store.put_execution({"id": "late", "status": "QUEUED", "due": 50.0})
    store.put_execution({"id": "early", "status": "QUEUED", "due": 10.0})
    store.put_execution({"id": "later", "status": "QUEUED", "due": 500.0})
    me = Owner.current()
    assert store.next_due(now=100.0) == 10.0
    assert store.queue_depth(now=100.0) == 2
    assert store.claim_many(me, 5, now=100.0) == ["early", "late"]
    assert store.claim(me, now=100.0) is None
    assert store.next_due(now=100.0, owner=me) == 130.0      # its leases run out then


def test_renew_many_extends_only_the_owners_own_leases(store):
    a, b = Owner(1, 1, "host-a"), Owner(2, 2, "host-b")
    for exec_id in ("e1", "e2", "e3"):
        store.put_execution({"id": exec_id, "status": "QUEUED", "due": 1.0})
    assert store.claim_many(a, 2, now=10.0, lease_seconds=30) == ["e1", "e2"]
    assert store.claim(b, now=10.0, lease_seconds=30) == "e3"
    assert store.renew_many(["e1", "e2", "e3"], a, now=20.0, lease_seconds=30) == \
        {"e1", "e2"}
    assert store.lease("e1").expires == 50.0 and store.lease("e3").expires == 40.0
    # b's lease runs out: recovered, and claimed by a; b renews it no more
    assert store.claim_many(a, 5, now=45.0) == ["e3"]
    assert store.renew("e3", b, now=46.0) is False


def test_a_lease_on_another_host_holds_until_it_runs_out(store):
    store.put_execution({"id": "e1", "status": "QUEUED", "due": 1.0})
    elsewhere = Owner(1, 1, "another-boot-id")
    assert store.claim(elsewhere, now=10.0, lease_seconds=30) == "e1"
    me = Owner.current()
    assert store.claim(me, now=20.0) is None
    assert store.claim_one("e1", me, now=20.0) is False
    assert store.update_unless_leased("e1", lambda h: None, now=20.0)[0] == "leased"
    assert store.claim(me, now=41.0) == "e1"


def test_the_leases_of_a_dead_owner_on_this_host_are_recovered_at_once(store):
    store.put_execution({"id": "e1", "status": "RUNNING", "due": None})
    dead = dead_owner()
    assert store.claim_one("e1", dead, lease_seconds=600)
    me = Owner.current()
    assert store.next_due(owner=me) is not None
    assert store.claim(me) == "e1"                 # due now: it resumes
    assert store.lease("e1").owner == me


def test_recovery_reads_each_owner_once_not_each_lease(store, monkeypatch):
    """500 leases held by this live process and 3 by a dead one: a claim reads /proc
    once per owner, recovers exactly the dead owner's executions, and hands them out."""
    reads = []
    real = leases.start_time
    monkeypatch.setattr(leases, "start_time", lambda pid: reads.append(pid) or real(pid))
    me, dead = Owner.current("parked"), dead_owner()
    for i in range(500):
        store.put_execution({"id": f"p{i:04d}", "status": "QUEUED", "due": 1.0})
    assert len(store.claim_many(me, 1000, lease_seconds=3600)) == 500
    for i in range(3):
        store.put_execution({"id": f"d{i}", "status": "QUEUED", "due": 2.0})
    assert store.claim_many(dead, 3, lease_seconds=3600) == ["d0", "d1", "d2"]
    reads.clear()
    assert store.claim_many(Owner.current("next"), 10) == ["d0", "d1", "d2"]
    assert sorted(reads) == sorted([me.pid, dead.pid])       # each owner once
    assert store.lease("p0499").owner == me and store.lease("d0").owner.label == "next"


def test_a_sleeper_whose_owner_died_goes_back_at_its_own_due_time(store):
    now = 1000.0
    store.put_execution({"id": "s", "status": "QUEUED", "due": now - 1})
    assert store.claim_one("s", dead_owner(), now=now)
    store.put_execution({"id": "s", "status": "WAITING", "due": now + 40})   # parks
    assert store.queue_depth(now + 100) == 0              # leased: not free
    assert store.claim(Owner.current(), now=now) is None  # recovered, not yet due
    assert store.lease("s") is None and store.queue_depth(now + 100) == 1
    assert store.next_due(now) == now + 40
    assert store.claim(Owner.current(), now=now + 41) == "s"


def test_release_puts_a_due_execution_back_on_the_queue(store):
    me, other = Owner.current(), Owner(1, 1, "host-b")
    store.put_execution({"id": "e1", "status": "QUEUED", "due": 1.0})
    assert store.claim(me, now=10.0) == "e1"
    execution = store.get_execution("e1")
    execution.update(status="WAITING", due=20.0)
    store.release("e1", other, execution)          # not its lease: only the write
    assert store.lease("e1").owner == me
    store.release("e1", me)
    assert store.lease("e1") is None
    assert store.claim(other, now=30.0) == "e1"


def test_an_owner_claims_its_own_parked_execution_made_due(store):
    me, other = Owner.current(), Owner(1, 1, "host-b")
    store.put_execution({"id": "e1", "status": "QUEUED", "due": 1.0})
    assert store.claim(me, now=10.0, lease_seconds=600) == "e1"
    execution = store.get_execution("e1")
    execution.update(status="WAITING", due=15.0)    # parked, woken by a child elsewhere
    store.put_execution(execution)
    assert store.queue_depth(now=20.0) == 0
    assert store.claim(other, now=20.0) is None
    assert store.claim(me, now=20.0) == "e1"


# --- settings and the schema ----------------------------------------------------------------

def test_settings_round_trip_and_update_unless_leased_drops_the_request(store):
    store.set_setting("user:a", {"x": 1})
    store.set_setting("user:b", [1, 2])
    store.set_setting("other", "v")
    assert store.get_setting("user:a") == {"x": 1}
    assert store.settings("user:") == {"user:a": {"x": 1}, "user:b": [1, 2]}
    store.delete_setting("user:a")
    assert store.get_setting("user:a", "gone") == "gone"
    store.put_execution({"id": "e1", "status": "PAUSED", "due": None})
    store.set_setting("signal:e1", "resume")
    status, head = store.update_unless_leased("e1", lambda h: h.update(status="QUEUED",
                                                                         due=1.0))
    assert status == "done" and store.get_execution("e1")["status"] == "QUEUED"
    assert store.get_setting("signal:e1") is None
    assert store.update_unless_leased("nope", lambda h: None) == ("missing", None)


def test_a_newer_schema_and_another_key_are_refused(store, pg_url, schema, monkeypatch):
    monkeypatch.setenv("ENGINE_SECRET_KEY", "another secret")
    with pytest.raises(SavepointError, match="another key"):
        PostgresStore(pg_url, schema=schema)
    monkeypatch.setenv("ENGINE_SECRET_KEY", SECRET)
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"UPDATE {schema}.meta SET value = '99' WHERE name = 'format'")
    with pytest.raises(SavepointError, match="format 99.*newer"):
        PostgresStore(pg_url, schema=schema)


def test_a_forged_record_is_found_damaged(store, pg_url, schema):
    store.put_execution({"id": "e1", "flow": "m:f", "status": "QUEUED", "due": None})
    store.set_setting("s", 1)
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"UPDATE {schema}.executions SET record = "
                     f"overlay(record placing '\\xff'::bytea from 20)")
    head = store.get_execution("e1")
    assert head["status"] == "ENDED_ERROR" and "damaged" in head
    report = store.check()
    assert report["checked"]["executions"] == 1
    assert [p["db"] for p in report["problems"]] == ["executions"]


# --- the engine on it -----------------------------------------------------------------------

def test_an_engine_on_a_postgresql_url_runs_a_flow(pg_url, monkeypatch):
    import engine
    import rt_flows
    monkeypatch.setenv("ENGINE_SECRET_KEY", SECRET)
    calls = []
    with engine.Engine(pg_url, durability="async") as eng:
        assert type(eng.store).__name__ == "PostgresStore"
        eng.add_connector("effect", lambda tag: calls.append(tag) or tag.upper())
        ex = eng.execute(rt_flows.straight_line)
        assert ex.status == engine.Status.ENDED_SUCCESS and ex.output == ["A", "B"]
        assert [sp.action for sp in eng.savepoints(ex.id)] == ["connect", "connect"]
        assert calls == ["a", "b"]


def test_opening_a_store_waits_for_no_writer(store, pg_url, schema):
    # a worker in the middle of a commit holds row locks; a worker starting meanwhile
    # must neither wait for it nor deadlock with it (CREATE INDEX IF NOT EXISTS locks
    # its table even when the index is there)
    with psycopg.connect(pg_url) as writer:
        writer.execute(f"INSERT INTO {schema}.queue VALUES ('e1', 1.0)")   # not committed
        opened = []
        opener = threading.Thread(target=lambda: opened.append(
            PostgresStore(pg_url, schema=schema)), daemon=True)
        opener.start()
        opener.join(20)
        assert opened, "opening the store waited for a writer's transaction"
        opened[0].close()
        writer.rollback()


def test_commits_sharing_chunks_in_other_orders_never_deadlock(store):
    # chunks are shared by content: executions whose values hold the same big lists in
    # other orders lock the same chunk rows -- in one order, or they deadlock
    big = [list(range(5000)), [str(i) for i in range(5000)]]
    errors = []

    def commits(exec_id, value):
        execution = {"id": exec_id, "status": "RUNNING", "due": None}
        store.put_execution(execution)
        try:
            for i in range(100):
                commit(store, execution, value=value, counter=i, retention="last")
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=commits, args=(f"e{n}", big[::1 - 2 * (n % 2)]))
               for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [len(store.savepoints(f"e{n}")) for n in range(4)] == [1] * 4


def test_a_dead_owners_execution_is_recovered_while_other_work_is_claimed(store,
                                                                          monkeypatch):
    """Claims that always find work look for leases to recover every RECOVER_SECONDS
    all the same: an owner that dies after a look does not wait for the queue to empty
    to have its execution recovered."""
    monkeypatch.setattr(postgres, "RECOVER_SECONDS", 0.05)
    for i in range(300):
        store.put_execution({"id": f"w{i:04d}", "status": "QUEUED", "due": 1.0})
    proc = subprocess.Popen(["sleep", "60"])
    doomed = Owner(proc.pid, start_time(proc.pid), this_host(), "doomed")
    store.put_execution({"id": "orphan", "status": "RUNNING", "due": None})
    assert store.claim_one("orphan", doomed, lease_seconds=3600)
    me = Owner.current("me")
    claimed = [store.claim(me)]                 # a look: its owner alive, nothing to do
    proc.kill()
    proc.wait()

    def recovered():
        claimed.append(store.claim(me))
        lease = store.lease("orphan")
        return lease is None or lease.owner != doomed

    assert wait_for(recovered, 60)
    assert len(claimed) < 250 and "orphan" not in claimed      # recovered, queued last
