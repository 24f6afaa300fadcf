"""The LMDB store, on real LMDB environments in temporary directories, with real processes."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import lmdb
import pytest

from engine import CorruptSavepoint, SavepointError, _codec
from engine.store import Owner, Store
from locations import SUPPORT
from store_records import commit, holder

def run_python(code, *args, wait=True):
    script = "import sys; sys.path.insert(0, %r)\n" % SUPPORT + textwrap.dedent(code)
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store", durability="async") as s:
        yield s


# --- executions and savepoints ------------------------------------------------------------

def test_savepoints_round_trip_through_the_store(store):
    execution = {"id": "e1", "status": "RUNNING", "due": None}
    store.put_execution(execution)
    seqs = [commit(store, execution, counter=i) for i in range(3)]
    assert seqs == [1, 2, 3] and execution["last_seq"] == 3
    assert store.get_execution("e1")["last_seq"] == 3
    assert [m["seq"] for m in store.savepoints("e1")] == [1, 2, 3]
    meta, record = store.savepoint("e1", 2)
    frames = _codec.decode_snapshot(record, store.codes_for(record), chunks=store.chunk)
    assert frames[0].locals == ("state", 1)
    assert meta["kind"] == "implicit" and meta["size"] == len(record)


def test_a_second_process_reads_what_the_first_wrote(tmp_path):
    path = tmp_path / "store"
    with Store(path, durability="sync") as store:
        execution = {"id": "e1", "due": None}
        store.put_execution(execution)
        commit(store, execution, kind="explicit", name="with-fetched-data", value=[1, 2])
        store.set_setting("greeting", {"text": "hi", "n": 3})
    out = run_python("""
        from engine.store import Store
        from engine import _codec
        import store_records
        with Store(sys.argv[1]) as store:
            seq = store.seq_of("e1", "with-fetched-data")
            meta, record = store.savepoint("e1", seq)
            frames = _codec.decode_snapshot(record, store.codes_for(record),
                                            chunks=store.chunk)
            print(frames[0].locals[0], store.get_setting("greeting"))
    """, path)
    assert out.strip() == "[1, 2] {'text': 'hi', 'n': 3}"


def test_retention_last_keeps_only_the_newest_implicit_and_every_explicit(store):
    execution = {"id": "e1", "due": None}
    for i in range(5):
        commit(store, execution, counter=i, retention="last")
        if i == 2:
            commit(store, execution, kind="explicit", name="keep", retention="last")
    kinds = [(m["seq"], m["kind"]) for m in store.savepoints("e1")]
    assert kinds == [(4, "explicit"), (6, "implicit")]
    other = {"id": "e2", "due": None}
    for i in range(3):
        commit(store, other, counter=i, retention="all")
    assert len(store.savepoints("e2")) == 3
    with pytest.raises(ValueError, match="savepoint_retention"):
        commit(store, other, retention="some")


def test_delete_removes_everything_of_the_execution_and_collects_unused_code(store):
    big = list(range(5000))
    first, second = {"id": "e1", "due": time.time()}, {"id": "e2", "due": None}
    for execution in (first, second):
        store.put_execution(execution)
        commit(store, execution, kind="explicit", name="n", value=big)
    store.claim(Owner.current())
    digest = _codec.fingerprint(holder.__code__)
    assert store.code(digest) is not None
    assert store.delete_execution("e1")
    assert store.get_execution("e1") is None and store.savepoints("e1") == []
    assert store.seq_of("e1", "n") is None and store.lease("e1") is None
    assert store.claim(Owner.current()) is None
    # e2 still uses the code and the chunk
    _, record = store.savepoint("e2", 1)
    assert _codec.decode_snapshot(record, store.codes_for(record),
                                  chunks=store.chunk)[0].locals[0] == big
    assert store.delete_execution("e2") and not store.delete_execution("e2")
    fresh = Store(store.path, durability="async")   # no in-process cache: what LMDB holds
    assert fresh.code(digest) is None
    with fresh.env.begin() as txn:
        for name in ("chunks", "chunk_refs", "code", "code_users", "exec_codes", "names"):
            assert txn.stat(fresh.db[name])["entries"] == 0, name


def test_a_flipped_byte_in_one_record_is_detected_and_the_others_read_fine(store):
    execution = {"id": "e1", "due": None}
    for i in range(3):
        commit(store, execution, counter=i)
    key = b"e1\0" + (2).to_bytes(8, "big")
    with store.env.begin(write=True) as txn:
        raw = bytearray(txn.get(key, db=store.db["savepoints"]))
        raw[len(raw) // 2] ^= 0x40
        txn.put(key, bytes(raw), db=store.db["savepoints"])
    with pytest.raises(CorruptSavepoint, match="savepoint 2 of execution e1"):
        store.savepoint("e1", 2)
    assert store.savepoint("e1", 1) is not None and store.savepoint("e1", 3) is not None
    with store.env.begin(write=True) as txn:
        txn.put(b"e1", b"\0" * 12, db=store.db["executions"])
    head = store.get_execution("e1")     # never raises: marked damaged (test_isolation.py)
    assert head["damaged"].startswith("execution record is damaged")
    assert head["status"] == "ENDED_ERROR"
    assert head["error"].startswith("CorruptSavepoint: ") and head["last_seq"] == 3


def test_a_store_of_another_format_is_refused(tmp_path):
    env = lmdb.open(str(tmp_path / "other"), max_dbs=20)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", b"\0" * 7 + b"\x09", db=meta)
    env.close()
    with pytest.raises(SavepointError, match="another format"):
        Store(tmp_path / "other")
    with pytest.raises(ValueError, match="durability"):
        Store(tmp_path / "x", durability="fast")


# --- growth, sharing, crashes -------------------------------------------------------------------

def test_a_full_map_grows_and_the_write_is_retried(tmp_path):
    with Store(tmp_path / "tiny", durability="async", map_size=128 * 1024) as store:
        execution = {"id": "e1", "due": None}
        blobs = [os.urandom(200_000) for _ in range(10)]
        for i, blob in enumerate(blobs):
            commit(store, execution, value=blob, counter=i)
        assert store.env.info()["map_size"] > 128 * 1024
        for i, blob in enumerate(blobs):
            _, record = store.savepoint("e1", i + 1)
            frames = _codec.decode_snapshot(record, store.codes_for(record),
                                            chunks=store.chunk)
            assert frames[0].locals[0] == blob


def test_an_unchanged_big_list_across_a_thousand_savepoints_is_stored_once(tmp_path):
    big = list(range(250_000))                       # ~1 MB encoded
    assert len(_codec.encode_value(big)) > 1_000_000
    with Store(tmp_path / "s", durability="async") as store:
        execution = {"id": "loop", "due": None}
        for i in range(1000):
            commit(store, execution, value=big, counter=i)
        assert len(store.savepoints("loop")) == 1000
        assert store.size() < 3 * 1024 * 1024, store.size()
        _, record = store.savepoint("loop", 777)
        frames = _codec.decode_snapshot(record, store.codes_for(record), chunks=store.chunk)
        assert frames[0].locals == (big, 776)


WRITER = """
    from engine.store import Store
    import store_records
    store = Store(sys.argv[1], durability=sys.argv[2])
    execution = {"id": "w", "due": None}
    big = bytes(range(256)) * 4000
    i = 0
    while True:
        i += 1
        store_records.commit(store, execution, value=big + i.to_bytes(4, "big"), counter=i)
        if i == 3:
            print("ready", flush=True)
"""


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_sigkill_during_writes_leaves_no_partial_savepoint(tmp_path, durability):
    path = tmp_path / "crash"
    for round_ in range(4):
        proc = run_python(WRITER, path, durability, wait=False)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.07 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Store(path, durability="async") as store:
            execution = store.get_execution("w")
            metas = store.savepoints("w")
            assert [m["seq"] for m in metas] == list(range(1, execution["last_seq"] + 1))
            for meta in metas[-3:]:
                _, record = store.savepoint("w", meta["seq"])
                frames = _codec.decode_snapshot(record, store.codes_for(record),
                                                chunks=store.chunk)
                assert frames[0].locals[1] == meta["seq"]
            store.delete_execution("w")


# --- claims and leases ----------------------------------------------------------------------------

CLAIMER = """
    import os, time
    from engine.store import Store, Owner
    store = Store(sys.argv[1], durability="async")
    owner = Owner.current("claimer")
    log = open(sys.argv[2], "w")
    batch = int(sys.argv[3])          # 1: claim; more: claim_many and renew_many
    idle = 0
    while idle < 20:
        if batch == 1:
            exec_id = store.claim(owner, lease_seconds=30)
            taken = [] if exec_id is None else [exec_id]
        else:
            taken = store.claim_many(owner, batch, lease_seconds=30)
            assert store.renew_many(taken, owner) == set(taken)
        if not taken:
            idle += 1
            time.sleep(0.01)
            continue
        idle = 0
        for exec_id in taken:
            execution = store.get_execution(exec_id)
            execution["runs"] = execution.get("runs", 0) + 1
            execution["due"] = None
            store.release(exec_id, owner, execution)
            log.write(exec_id + "\\n")
        log.flush()
"""


@pytest.mark.parametrize("batch", [1, 7])
def test_many_processes_claim_at_once_and_no_execution_is_claimed_twice(tmp_path, batch):
    path = tmp_path / "queue"
    with Store(path, durability="async") as store:
        now = time.time()
        for i in range(200):
            store.put_execution({"id": f"e{i:03d}", "due": now - i * 0.001})
    procs = [run_python(CLAIMER, path, tmp_path / f"log{k}", batch, wait=False)
             for k in range(4)]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    claims = []
    for k in range(4):
        claims += (tmp_path / f"log{k}").read_text().split()
    assert sorted(claims) == [f"e{i:03d}" for i in range(200)]
    with Store(path) as store:
        assert all(e["runs"] == 1 for e in store.executions())
        assert all(store.lease(e["id"]) is None for e in store.executions())
        assert store.next_due() is None


def test_a_dead_owner_is_detected_at_once(store):
    store.put_execution({"id": "e1", "due": time.time()})
    run_python("""
        from engine.store import Store, Owner
        store = Store(sys.argv[1], durability="async")
        assert store.claim(Owner.current("doomed"), lease_seconds=3600) == "e1"
    """, store.path)
    # its lease has an hour left, but its process is gone
    assert store.lease("e1").expires > time.time() + 3000
    assert store.claim(Owner.current("next"), lease_seconds=30) == "e1"


def test_a_reused_pid_is_not_mistaken_for_the_owner(store):
    me = Owner.current()
    impostor = Owner(me.pid, (me.start or 0) + 12345, me.host)   # same pid, other process
    assert not impostor.alive() and me.alive()
    other_boot = Owner(me.pid, me.start, "another-boot")
    assert not other_boot.alive()
    store.put_execution({"id": "e1", "due": time.time()})
    assert store.claim(impostor, lease_seconds=3600) == "e1"
    assert store.claim(me) == "e1"                         # the impostor's lease is void


def test_a_hung_owner_keeps_its_lease_until_it_expires(store):
    store.put_execution({"id": "e1", "due": time.time()})
    proc = run_python("""
        import time
        from engine.store import Store, Owner
        store = Store(sys.argv[1], durability="async")
        print(store.claim(Owner.current("hung"), lease_seconds=1.5), flush=True)
        time.sleep(60)
    """, store.path, wait=False)
    try:
        assert proc.stdout.readline().strip() == "e1"
        proc.send_signal(signal.SIGSTOP)            # hung: alive, but doing nothing
        lease = store.lease("e1")
        assert lease.owner.alive()
        assert store.claim(Owner.current()) is None
        time.sleep(max(0.0, lease.expires - time.time()) + 0.1)
        assert store.claim(Owner.current()) == "e1"
    finally:
        proc.kill()
        proc.wait()


def test_renew_and_release(store):
    me, other = Owner.current("me"), Owner(1, 1, "x")
    store.put_execution({"id": "e1", "due": time.time()})
    assert store.claim(me, lease_seconds=5) == "e1"
    assert store.renew("e1", me, lease_seconds=100)
    assert store.lease("e1").expires > time.time() + 90
    assert not store.renew("e1", other)
    store.release("e1", other)
    assert store.lease("e1") is not None
    store.release("e1", me, {"id": "e1", "due": time.time()})
    assert store.lease("e1") is None and store.claim(me) == "e1"


def test_not_due_yet_is_not_claimed(store):
    store.put_execution({"id": "later", "due": time.time() + 60})
    store.put_execution({"id": "idle", "due": None})
    assert store.claim(Owner.current()) is None
    assert store.claim(Owner.current(), now=time.time() + 61) == "later"


def test_one_process_cannot_mix_durabilities_on_one_store(store):
    with pytest.raises(ValueError, match="already open in this process"):
        Store(store.path, durability="sync")
    with Store(store.path, durability="async") as again:      # shares the environment
        again.put_execution({"id": "x", "due": None})
    assert store.get_execution("x")["id"] == "x"


# --- the seam: the protocol and the record layout -------------------------------------------

def test_the_lmdb_store_implements_every_method_of_the_protocol():
    """Each StoreProtocol method is LmdbStore's own (not the protocol's empty body), with
    the same parameters: names, kinds and defaults -- but those the protocol writes once
    for every store (codes_for: by code())."""
    import inspect

    from engine.store import LmdbStore, StoreProtocol
    promised = [name for name, member in vars(StoreProtocol).items()
                if inspect.isfunction(member) and
                (not name.startswith("_") or name in ("__enter__", "__exit__")) and
                name != "codes_for"]
    assert {"claim", "commit_savepoint", "update_unless_leased", "check"} <= set(promised)
    for name in promised:
        assert name in vars(LmdbStore), f"LmdbStore.{name} is missing"
        ours, theirs = (inspect.signature(getattr(cls, name)).parameters.values()
                        for cls in (LmdbStore, StoreProtocol))
        assert [(p.name, p.kind, p.default) for p in ours] == \
            [(p.name, p.kind, p.default) for p in theirs], name


def test_savepoints_are_stored_as_records_lays_them_out(store):
    """Meta and state in records.META_FIELDS/STATE_FIELDS order, on the one-put path and
    the slow one alike, and the head carries the newest savepoint's state."""
    from engine.store import lmdb as backend, records
    from engine.store.lmdbtables import savepoint_key
    assert backend.LAYOUT.meta_fields == records.META_FIELDS
    assert backend.LAYOUT.state_fields == records.STATE_FIELDS
    execution = {"id": "e1", "status": "RUNNING", "due": None, "error": None,
                 "restore_count": 2, "updated_at": 5.0}
    store.put_execution(execution)
    commit(store, execution)                                  # pins code: the slow path
    commit(store, execution, kind="explicit", name="n")       # a name: the slow path
    assert "e1" in store._pinned_ids and "_due_written" in execution
    commit(store, execution, counter=1)                       # the one-put path
    with store.env.begin() as txn:
        stored = [store.tables.savepoint_value(
            txn.get(savepoint_key("e1", seq), db=store.db["savepoints"]), seq, "e1")
            for seq in (1, 2, 3)]
    listed = store.savepoints("e1")
    for seq, (meta, record, state) in enumerate(stored, 1):
        assert records.meta_dict(meta) == listed[seq - 1]
        assert listed[seq - 1]["seq"] == seq and listed[seq - 1]["size"] == len(record)
        state = dict(zip(records.STATE_FIELDS, state))
        assert (state["last_seq"], state["status"], state["restore_count"]) == \
            (seq, "RUNNING", 2)
        assert state["last_implicit"] == (1 if seq < 3 else 3)
    assert listed[1]["kind"] == "explicit" and listed[1]["name"] == "n"
    head = store.get_execution("e1")
    assert {name: head[name] for name in records.STATE_FIELDS} == state
    assert {name: execution[name] for name in records.STATE_FIELDS} == state


def test_the_runtime_writes_the_execution_fields_and_no_other(tmp_path):
    """The stored execution records hold exactly the fields records.EXECUTION_FIELDS
    names, after starts, children, sleeps, timeouts, logs, outputs, load_dump, pause,
    resume, restore, fork and cancel."""
    import lifecycle_flows
    import message_flows
    import rt_flows
    from engine import Engine
    from engine.store import records
    path = tmp_path / "store"
    with Engine(path, durability="async", sleep_max_seconds=0.2) as eng:
        lifecycle_flows.register(eng)
        eng.execute(rt_flows.api_tour, {"x": 1})
        eng.execute(rt_flows.parent_flow)
        eng.execute(lifecycle_flows.loads_by_seq)
        sleeper = eng.execute(lifecycle_flows.sleeps, {"seconds": 3600, "timeout": 7200}).id
        eng.pause(sleeper)
        eng.resume(sleeper)
        eng.fork(sleeper, 1)
        eng.restore(sleeper, 1)
        eng.cancel(sleeper)
        eng.pause(eng.start(lifecycle_flows.sleeps, {"seconds": 1}).id)
        receiver = eng.start(message_flows.approval).id
        eng.run()                                  # waits for its message, unloaded
        eng.send(receiver, "approval", 1)
        eng.run()
        with Store(path, durability="async") as store, store.env.begin() as txn:
            fields = set()
            for key, raw in txn.cursor(db=store.db["executions"]):
                fields |= set(store.tables.execution_record(raw, bytes(key).decode()))
    assert fields == set(records.EXECUTION_FIELDS), fields ^ set(records.EXECUTION_FIELDS)
