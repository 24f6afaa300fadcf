"""Claims and leases when a process holds thousands of them: claim_many, renew_many,
next_due; recovery that looks at each owner once and at the leases that ran out, not at
every lease; claims that find nothing take no write lock; the lease indexes in engine
doctor; a store written before them."""
import signal
import threading
import time

import pytest

from engine.store import Owner, Store, leases
from store_threads import HeldWrite
from test_store import run_python


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store", durability="async") as s:
        yield s


def queue(store, count, prefix="e", due=None):
    due = time.time() - 1 if due is None else due
    ids = [f"{prefix}{i:04d}" for i in range(count)]
    for i, exec_id in enumerate(ids):
        store.put_execution({"id": exec_id, "status": "QUEUED", "due": due + i * 1e-6})
    return ids


def dead_owner():
    """An owner that is surely dead: this process's pid with another start time."""
    me = Owner.current()
    return Owner(me.pid, (me.start or 0) + 12345, me.host, "dead")


@pytest.fixture
def proc_reads(monkeypatch):
    """How often /proc/<pid>/stat was read (an owner's liveness)."""
    reads = []
    real = leases.start_time
    monkeypatch.setattr(leases, "start_time", lambda pid: reads.append(pid) or real(pid))
    return reads


# --- claim_many, renew_many, next_due ------------------------------------------------------

def test_claim_many_takes_the_earliest_due_up_to_the_limit(store):
    me = Owner.current("me")
    ids = queue(store, 10)
    store.put_execution({"id": "later", "status": "QUEUED", "due": time.time() + 60})
    assert store.claim_many(me, 4, lease_seconds=3600) == ids[:4]
    assert store.queue_depth() == 6
    assert all(store.lease(i).owner == me for i in ids[:4])
    assert store.claim_many(me, 100, lease_seconds=3600) == ids[4:]
    assert store.claim_many(me, 5) == [] and store.claim(me) is None
    assert store.claim_many(me, 5, now=time.time() + 61) == ["later"]


def test_renew_many_renews_what_the_owner_still_holds(store):
    me, other = Owner.current("me"), Owner(1, 1, "another-boot")
    ids = queue(store, 5)
    now = time.time()
    assert store.claim_many(me, 3, lease_seconds=5, now=now) == ids[:3]
    assert store.claim_many(other, 1, now=now) == [ids[3]]
    renewed = store.renew_many(ids + ["nonesuch"], me, lease_seconds=100, now=now)
    assert renewed == set(ids[:3])
    assert all(store.lease(i).expires == now + 100 for i in ids[:3])
    assert store.lease(ids[3]).owner == other
    assert store.renew(ids[0], me) and not store.renew(ids[3], me)
    assert store.check()["problems"] == []


def test_next_due_says_when_a_claim_could_hand_out_something(store):
    me = Owner.current("me")
    now = time.time()
    assert store.next_due(now) is None
    store.put_execution({"id": "a", "status": "QUEUED", "due": now + 50})
    assert store.next_due(now) == pytest.approx(now + 50, abs=1e-5)
    store.put_execution({"id": "b", "status": "QUEUED", "due": now + 10})
    assert store.next_due(now) == pytest.approx(now + 10, abs=1e-5)
    assert store.claim_one("b", me, lease_seconds=30, now=now)      # off the queue
    assert store.next_due(now) == pytest.approx(now + 30, abs=1e-5)  # its lease's end
    assert store.claim_one("a", dead_owner(), lease_seconds=300, now=now)
    assert store.next_due(now) == now                    # a dead owner: recover now
    assert store.claim_many(me, 5, now=now) == ["a"]     # claimed: it had no due time
    store.release("a", me, {"id": "a", "status": "WAITING", "due": now + 50})
    assert store.next_due(now) == pytest.approx(now + 30, abs=1e-5)
    store.release("b", me)
    assert store.next_due(now) == pytest.approx(now + 50, abs=1e-5)


def test_a_claim_that_finds_nothing_takes_no_write_lock(store):
    """With a write transaction held open by another thread, a claim with nothing to
    claim and next_due return at once."""
    me = Owner.current("me")
    store.put_execution({"id": "later", "status": "QUEUED", "due": time.time() + 60})
    store.claim_one("mine", me)                          # no such execution: nothing
    held = HeldWrite(store, "holder")
    try:
        done = []
        thread = threading.Thread(target=lambda: done.append(
            (store.claim(me), store.claim_many(me, 10), store.next_due())))
        thread.start()
        thread.join(10)
        assert done and done[0][:2] == (None, []), done
    finally:
        held.release()


# --- recovery that does not look at every lease -------------------------------------------

def test_recovery_reads_each_owner_once_not_each_lease(store, proc_reads):
    """3,000 leases held by this live process and 3 by a dead one: a claim reads /proc
    once per owner, recovers exactly the dead owner's executions, and hands them out."""
    me = Owner.current("parked")
    mine = queue(store, 3000, "p")
    assert len(store.claim_many(me, 5000, lease_seconds=3600)) == 3000
    theirs = queue(store, 3, "d")
    assert store.claim_many(dead_owner(), 3, lease_seconds=3600) == theirs
    proc_reads.clear()
    assert store.claim_many(Owner.current("next"), 10) == theirs
    assert len(proc_reads) <= 4, len(proc_reads)          # the look and the claim
    proc_reads.clear()
    assert store.claim(Owner.current("next")) is None
    assert store.next_due() is not None and len(proc_reads) <= 4
    assert all(store.lease(i).owner == me for i in mine[::500])


def test_an_expired_lease_of_a_live_owner_is_recovered_from_the_front(store):
    me, hung = Owner.current("me"), Owner.current("hung")
    ids = queue(store, 3)
    now = time.time()
    assert store.claim_many(hung, 3, lease_seconds=10, now=now) == ids
    assert store.renew_many(ids[1:], hung, lease_seconds=100, now=now) == set(ids[1:])
    assert store.claim_many(me, 3, now=now + 5) == []
    assert store.claim_many(me, 3, now=now + 11) == [ids[0]]     # due now: resumed
    assert store.lease(ids[1]).expires == now + 100
    assert store.check()["problems"] == []


def test_a_sleeper_whose_owner_died_goes_back_at_its_own_due_time(store):
    """A parked execution (leased, its savepoint due at its wake time) whose process dies
    is queued again at its wake time, not now."""
    now = time.time()
    store.put_execution({"id": "s", "status": "QUEUED", "due": now - 1})
    assert store.claim_one("s", dead_owner(), now=now)
    store.put_execution({"id": "s", "status": "WAITING", "due": now + 40})   # parks
    assert store.queue_depth(now + 100) == 0              # leased: not on the queue
    assert store.claim(Owner.current(), now=now) is None  # recovered, not yet due
    assert store.queue_depth(now + 100) == 1
    assert store.next_due(now) == pytest.approx(now + 40, abs=1e-5)
    assert store.claim(Owner.current(), now=now + 41) == "s"


def test_a_leased_execution_made_due_goes_back_to_its_owner_only(store):
    """An execution parked with its owner (leased) that is made due elsewhere -- a child
    ended in another process -- is handed back to its owner's claim (which wakes it),
    never to another's; if the owner dies it goes back on the run queue."""
    me, other = Owner.current("me"), Owner(1, 1, "another-boot")
    queue(store, 2)
    assert store.claim_many(me, 2, lease_seconds=3600) == ["e0000", "e0001"]
    now = time.time()
    for exec_id in ("e0000", "e0001"):              # woken: due now, still leased
        store.put_execution({"id": exec_id, "status": "WAITING", "due": now - 1})
    assert store.queue_depth() == 0
    assert store.next_due() > now + 3000                   # nothing for anyone else
    assert store.next_due(owner=me) == pytest.approx(now - 1, abs=1e-5)
    assert store.claim(other) is None
    assert store.claim(me) == "e0000"                      # handed back, still ours
    assert store.lease("e0000").owner == me and store.next_due(owner=me) <= now
    assert store.check()["problems"] == []
    with store.env.begin(write=True) as txn:               # its owner dies
        store.tables.put_lease(txn, "e0001", dead_owner(), now + 3600)
    assert store.claim(other) == "e0001"
    assert store.check()["problems"] == []


HOLDER = """
    import time
    from engine.store import Store, Owner
    store = Store(sys.argv[1], durability="async")
    taken = store.claim_many(Owner.current("parker"), 1000, lease_seconds=3600)
    print(len(taken), flush=True)
    time.sleep(600)
"""


def test_the_leases_of_a_killed_process_are_recovered_by_the_next_claim(store):
    """A process holds 500 leases for an hour; while it lives no one takes them; killed
    (SIGKILL), the next claim in another process recovers all of them at once."""
    ids = queue(store, 500)
    proc = run_python(HOLDER, store.path, wait=False)
    try:
        assert proc.stdout.readline().strip() == "500"
        me = Owner.current("next")
        assert store.claim_many(me, 1000) == [] and store.queue_depth() == 0
        assert store.next_due() > time.time() + 3000
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert store.next_due() <= time.time()
    assert sorted(store.claim_many(me, 1000)) == ids
    assert store.check()["problems"] == []


# --- engine doctor and old stores ---------------------------------------------------------

def raw(store, db, key, value=None, delete=False):
    with store.env.begin(write=True) as txn:
        if delete:
            txn.delete(key, db=store.db[db])
        else:
            txn.put(key, value, db=store.db[db])


def index_entries(store, db):
    with store.env.begin() as txn:
        return [bytes(k) for k in txn.cursor(db=store.db[db]).iternext(values=False)]


def test_engine_doctor_checks_and_repairs_the_lease_indexes(store):
    me = Owner.current("me")
    ids = queue(store, 3)
    assert store.claim_many(me, 3) == ids
    expiry = index_entries(store, "lease_expiry")
    raw(store, "lease_expiry", expiry[0], delete=True)                  # one missing
    raw(store, "lease_owners", b"\0" * 48 + b"ghost", b"")              # one of no lease
    found = store.check()["problems"]
    assert sorted((p["db"], p["repair"]) for p in found) == [
        ("lease_expiry", "add it"), ("lease_owners", "delete it")], found
    store.check(repair=True)
    assert store.check()["problems"] == []
    assert sorted(index_entries(store, "lease_expiry")) == sorted(expiry)


def test_a_lease_written_without_its_index_entries_is_found_by_the_next_claim(store):
    """Counts out of step (damage, or a lease written by another tool): one pass over
    the leases puts the indexes back in step, so a dead owner's lease is recovered."""
    queue(store, 1)
    assert store.claim(dead_owner()) == "e0000"
    for db in ("lease_owners", "lease_expiry"):
        raw(store, db, index_entries(store, db)[0], delete=True)
    assert store.next_due() is not None
    assert store.claim(Owner.current()) == "e0000"
    assert store.check()["problems"] == []


OLD_LAYOUT = """
    # What a store written before the lease indexes holds: leases without index entries,
    # a leased execution still on the run queue, and no "leases-indexed" mark.
    import time
    from engine.store import Store, Owner
    from engine.store.lmdbtables import due_key
    path = sys.argv[1]
    store = Store(path, durability="async")
    now = time.time()
    for i in range(3):
        store.put_execution({"id": f"e{i}", "status": "QUEUED", "due": now - 10 + i})
    me = Owner.current("old")
    assert store.claim(me) == "e0"                       # leased by a process that dies
    with store.env.begin(write=True) as txn:
        for db in ("lease_owners", "lease_expiry"):
            txn.drop(store.db[db], delete=False)
        txn.delete(b"leases-indexed", db=store.db["meta"])
        txn.put(b"e0", due_key(now + 3600), db=store.db["due"])     # parked, leased,
        txn.put(due_key(now + 3600) + b"e0", b"", db=store.db["queue"])   # and queued
    store.close()
"""


def test_a_store_written_before_the_lease_indexes_opens_and_works(tmp_path):
    path = tmp_path / "old"
    run_python(OLD_LAYOUT, path)
    with Store(path, durability="async") as store:
        assert store.check()["problems"] == []              # indexed when opened
        assert len(index_entries(store, "lease_expiry")) == 1
        assert store.queue_depth(time.time() + 7200) == 2   # e0 is leased: off the queue
        me = Owner.current("new")
        assert store.claim_many(me, 5) == ["e1", "e2"]      # e0's owner died: due later
        for exec_id in ("e1", "e2"):
            store.release(exec_id, me, {"id": exec_id, "status": "ENDED_SUCCESS",
                                        "due": None})
        assert store.next_due() == pytest.approx(time.time() + 3600, abs=60)
        assert store.claim(me, now=time.time() + 3601) == "e0"
        assert store.check()["problems"] == []
    with Store(path, durability="async") as again:       # indexed once: nothing to do
        assert again.check()["problems"] == []


def test_a_damaged_lease_is_recovered_when_its_owner_renews_it(store):
    me = Owner.current("me")
    queue(store, 1)
    assert store.claim(me, lease_seconds=3600) == "e0000"
    store.put_execution({"id": "e0000", "status": "WAITING", "due": time.time() + 5})
    with store.env.begin(write=True) as txn:           # a flipped byte in the lease
        value = bytearray(txn.get(b"e0000", db=store.db["leases"]))
        value[len(value) // 2] ^= 0x40
        txn.put(b"e0000", bytes(value), db=store.db["leases"])
    assert store.lease("e0000") is None                 # taken as no lease
    assert store.renew_many(["e0000"], me) == set()     # lost to its owner ...
    assert store.queue_depth(time.time() + 10) == 1     # ... and queued again
    assert store.claim(me, now=time.time() + 10) == "e0000"
    assert store.check()["problems"] == []


def test_engine_doctor_checks_what_an_owner_holds_due(store):
    me = Owner.current("me")
    queue(store, 1)
    assert store.claim(me) == "e0000"
    store.put_execution({"id": "e0000", "status": "WAITING", "due": time.time() + 60})
    entry = index_entries(store, "held")
    assert len(entry) == 1 and store.check()["problems"] == []
    raw(store, "held", entry[0], delete=True)
    found = store.check()["problems"]
    assert [(p["db"], p["repair"]) for p in found] == [("held", "add it")], found
    store.check(repair=True)
    assert index_entries(store, "held") == entry and store.check()["problems"] == []
