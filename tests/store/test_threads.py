"""Many threads of one process on one store: every method at once, the map growing under
them, and group commit (writes made at the same time share one transaction; each caller
gets its own outcome)."""
import threading
import time

import pytest

from engine.store import Owner, Store
from store_records import commit, snapshot
from store_threads import HeldWrite, run_threads
from waiting import wait_for


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store", durability="async") as s:
        yield s


# --- every method at once --------------------------------------------------------------

def test_many_threads_use_every_method_at_once_while_the_map_grows(tmp_path):
    """16 threads each commit savepoints of their own execution (big ones, so the small
    map grows while others are inside transactions), read them back, and claim, renew
    and release, and set settings; nothing fails and everything reads back."""
    rounds = 25
    with Store(tmp_path / "tiny", durability="async", map_size=256 * 1024) as store:
        owner = Owner.current("threads")
        grown_from = store.env.info()["map_size"]

        def worker(k):
            execution = {"id": f"e{k}", "status": "RUNNING", "due": None}
            store.put_execution(execution)
            for i in range(rounds):
                value = bytes([k]) * (20_000 + i)            # its own chunk each time
                assert commit(store, execution, value=value, counter=i) == i + 1
                assert store.get_execution(f"e{k}")["last_seq"] == i + 1
                store.set_setting(f"t{k}", i)
                assert store.get_setting(f"t{k}") == i
                store.put_execution({"id": f"q{k}-{i}", "status": "QUEUED",
                                     "due": time.time()})
                for exec_id in store.claim_many(owner, 2):
                    assert store.renew_many([exec_id], owner) == {exec_id}
                    store.release(exec_id, owner, {"id": exec_id, "status": "ENDED_SUCCESS",
                                                   "due": None})
                assert len(store.savepoints(f"e{k}")) == i + 1

        assert run_threads(worker, 16) == []
        assert store.env.info()["map_size"] > grown_from
        for k in range(16):
            metas = store.savepoints(f"e{k}")
            assert [m["seq"] for m in metas] == list(range(1, rounds + 1))
            meta, record = store.savepoint(f"e{k}", rounds)
            assert meta["size"] == len(record)
        while store.claim(owner) is not None:
            pass
        assert store.queue_depth() == 0 and store.next_due() is None
        assert store.check()["problems"] == []


def test_readers_in_other_threads_survive_a_map_resize(tmp_path):
    """py-lmdb's set_mapsize invalidates every open transaction of the process: the
    store resizes only when none is open, so readers never see a broken transaction."""
    with Store(tmp_path / "tiny", durability="async", map_size=128 * 1024) as store:
        execution = {"id": "w", "status": "RUNNING", "due": None}
        store.put_execution(execution)
        commit(store, execution)
        stop = threading.Event()

        def reader(k):
            if k == 0:
                try:
                    for i in range(40):         # grows the map several times
                        commit(store, execution, value=bytes(range(256)) * 400 + bytes([i]),
                                counter=i)
                finally:
                    stop.set()
                return
            while not stop.is_set():
                assert store.get_execution("w")["id"] == "w"
                assert store.savepoints("w")
                store.savepoint("w", 1)

        assert run_threads(reader, 6) == []
        assert store.env.info()["map_size"] > 128 * 1024
        assert len(store.savepoints("w")) == 41


# --- group commit -------------------------------------------------------------------------

def test_savepoints_committed_together_share_one_transaction(tmp_path):
    """With a write held open, 8 threads commit a savepoint each: they wait, then go in
    one transaction; each returns its own seq with its execution updated."""
    with Store(tmp_path / "store", durability="sync") as store:
        executions = [{"id": f"e{k}", "status": "RUNNING", "due": None} for k in range(8)]
        for execution in executions:
            store.put_execution(execution)
            commit(store, execution)                    # pins its code: the slow path
        writer = store._writer
        held = HeldWrite(store, "holder")
        seqs = {}

        def one(k):
            seqs[k] = commit(store, executions[k], counter=7)   # the one-put path

        threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        assert wait_for(lambda: writer.waiting_writes == 8)
        transactions = writer.transactions
        held.release()
        for t in threads:
            t.join(60)
        assert seqs == {k: 2 for k in range(8)}
        assert writer.transactions - transactions == 2       # the held one, then all 8
        for k, execution in enumerate(executions):
            assert execution["last_seq"] == 2
            assert store.get_execution(f"e{k}")["last_seq"] == 2
            assert [m["seq"] for m in store.savepoints(f"e{k}")] == [1, 2]


def test_a_write_that_fails_in_a_group_fails_alone(store):
    """Three writes queue behind a held one; the middle one raises: the group is rolled
    back and written one by one, so the other two are written and only its caller sees
    the error (and nothing of it is written)."""
    store.put_execution({"id": "a", "status": "QUEUED", "due": None})
    store.put_execution({"id": "b", "status": "QUEUED", "due": None})
    held = HeldWrite(store, "holder")
    outcomes = {}

    def attempt(name, call):
        try:
            outcomes[name] = call()
        except Exception as e:            # noqa: BLE001 - what the caller gets
            outcomes[name] = e

    def refuse(head):
        head["status"] = "PAUSED"
        raise ValueError("not now")

    calls = [("first", lambda: store.put_execution({"id": "c", "status": "QUEUED",
                                                    "due": None})),
             ("failing", lambda: store.update_unless_leased("a", refuse)),
             ("last", lambda: store.update_unless_leased(
                 "b", lambda head: head.update(status="PAUSED")))]
    threads = []
    for n, (name, call) in enumerate(calls):
        threads.append(threading.Thread(target=attempt, args=(name, call)))
        threads[-1].start()
        assert wait_for(lambda: store._writer.waiting_writes == n + 1)
    held.release()
    for t in threads:
        t.join(60)
    assert isinstance(outcomes["failing"], ValueError)
    assert outcomes["last"][0] == "done"
    assert store.get_execution("c")["status"] == "QUEUED"
    assert store.get_execution("a")["status"] == "QUEUED"      # nothing of it written
    assert store.get_execution("b")["status"] == "PAUSED"


def test_a_full_map_in_a_group_grows_and_every_write_is_made(tmp_path):
    with Store(tmp_path / "tiny", durability="async", map_size=128 * 1024) as store:
        executions = [{"id": f"e{k}", "status": "RUNNING", "due": None} for k in range(6)]
        for execution in executions:
            store.put_execution(execution)
        held = HeldWrite(store, "holder")
        seqs = {}

        def big(k):
            seqs[k] = commit(store, executions[k], value=bytes([k]) * 150_000)

        threads = [threading.Thread(target=big, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        assert wait_for(lambda: store._writer.waiting_writes == 6)
        held.release()
        for t in threads:
            t.join(60)
        assert seqs == {k: 1 for k in range(6)}
        assert store.env.info()["map_size"] >= 6 * 150_000
        assert store.check()["problems"] == []


def test_a_store_write_inside_a_store_write_is_refused_not_a_deadlock(store):
    store.put_execution({"id": "a", "status": "QUEUED", "due": None})

    def change(head):
        store.put_execution({"id": "b", "status": "QUEUED", "due": None})

    with pytest.raises(RuntimeError, match="would wait for itself"):
        store.update_unless_leased("a", change)
    store.put_execution({"id": "c", "status": "QUEUED", "due": None})   # not stuck


def test_a_lone_writer_waits_for_no_one(store):
    writer = store._writer
    execution = {"id": "e", "status": "RUNNING", "due": None}
    store.put_execution(execution)
    before = (writer.transactions, writer.writes)
    for i in range(20):
        commit(store, execution, counter=i)
    assert (writer.transactions - before[0], writer.writes - before[1]) == (20, 20)
    assert writer.waiting_writes == 0


def test_every_thread_gets_its_own_seqs_under_contention(tmp_path):
    """32 threads x 30 savepoints, sync: each execution's seqs are 1..30 in order and
    its dict says so; fewer transactions than savepoints were needed."""
    with Store(tmp_path / "store", durability="sync") as store:
        record, codes, chunks = snapshot("state")
        writer = store._writer
        before = writer.transactions

        def worker(k):
            execution = {"id": f"e{k}", "status": "RUNNING", "due": None}
            got = [store.commit_savepoint(execution, {"kind": "implicit", "line": i},
                                          record, codes) for i in range(30)]
            assert got == list(range(1, 31)) and execution["last_seq"] == 30

        assert run_threads(worker, 32) == []
        assert writer.transactions - before < 32 * 30
        for k in range(32):
            assert [m["line"] for m in store.savepoints(f"e{k}")] == list(range(30))
