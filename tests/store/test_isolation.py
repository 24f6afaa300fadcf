"""One damaged record affects only its own execution (SPEC.md, "Bad input and faults").

A real store with several executions of tests/isolation_flows.py; one record at a time is
damaged with raw LMDB writes (a flipped byte in the stored value, a key that is not UTF-8,
a queue entry without its due-index entry), and then: the API and the installed `engine`
command (run from a directory of its own, without PYTHONPATH) list and show every
execution, the damaged one marked; delete, cancel and restore to an intact savepoint work
and the restored execution runs to its end; eng.run() never hangs; `engine doctor` finds
each problem and --repair fixes what is safe to fix."""
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

import isolation_flows
from engine import CorruptSavepoint, Engine, InvalidTransition, Status, store as store_module
from locations import SUPPORT

ENGINE = shutil.which("engine")


# --- a store, damage, the command --------------------------------------------------------

class World:
    """A store holding: a and b (isolation_flows.steps, ENDED_SUCCESS, savepoints 1-5,
    4 named "after-steps") and w (isolation_flows.waiting: WAITING an hour)."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.path = tmp_path / "store"
        self.eng = self.open()
        self.a = self.eng.execute(isolation_flows.steps, {"n": 3}).id
        self.b = self.eng.execute(isolation_flows.steps, {"n": 3}).id
        self.w = self.eng.execute(isolation_flows.waiting).id
        assert self.eng.get(self.a).status == Status.ENDED_SUCCESS
        assert self.eng.get(self.w).status == Status.WAITING

    def open(self):
        eng = Engine(self.path, durability="async", sleep_max_seconds=0.1)
        eng.add_connector("die", lambda: None)
        return eng

    @property
    def store(self):
        return self.eng._store

    def raw(self, db, key, value=None, delete=False):
        """Read, write or delete one raw LMDB entry; returns the value read."""
        store = self.store
        with store.env.begin(write=True) as txn:
            old = txn.get(key, db=store.db[db])
            if delete:
                txn.delete(key, db=store.db[db])
            elif value is not None:
                txn.put(key, value, db=store.db[db])
        return None if old is None else bytes(old)

    def flip(self, db, key):
        """Flip one bit in the middle of a stored value."""
        raw = bytearray(self.raw(db, key))
        raw[len(raw) // 2] ^= 0x40
        self.raw(db, key, bytes(raw))

    def cli(self, *args, expect=0):
        """The installed `engine` command on this store, from a directory of its own."""
        assert ENGINE, "the engine command is not installed (pip install -e .)"
        work = self.tmp_path / "cli"
        work.mkdir(exist_ok=True)
        env = dict(os.environ, ENGINE_PATH=str(self.path), ENGINE_DURABILITY="async",
                   COLUMNS="250")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([ENGINE, *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=120, cwd=work)
        assert proc.returncode == expect, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def everyone_else_is_fine(self, damaged, cli=True):
        """Every other execution lists, shows and reads as before; the damaged one is
        listed and shown, marked damaged."""
        listed = {ex.id: ex for ex in self.eng.executions()}
        assert damaged in listed and listed[damaged].damaged
        for other in (self.a, self.b, self.w):
            if other != damaged and other in listed:
                assert listed[other].damaged is None
                assert self.eng.get(other).status == listed[other].status
                assert self.eng.get(other[:10]).id == other      # prefixes resolve
        if cli:
            rows = {r["id"]: r for r in json.loads(self.cli("ls", "--json").stdout)}
            assert rows.keys() == listed.keys() and rows[damaged]["damaged"]
            table = self.cli("ls").stdout
            assert "damaged" in table.splitlines()[0]
            assert any(line.startswith(damaged[:12]) for line in table.splitlines())
            shown = self.cli("show", damaged).stdout
            assert "damaged:" in shown
            others = [i for i in listed if i != damaged]
            assert "damaged:" not in self.cli("show", others[0]).stdout
            assert json.loads(self.cli("show", damaged, "--json").stdout)["damaged"]
        return listed[damaged]


def sp_key(exec_id, seq):
    return exec_id.encode() + b"\0" + seq.to_bytes(8, "big")


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.eng.close()


def run_promptly(eng, seconds=20):
    """eng.run() in a thread; fails (and stops it) if it has not returned in time."""
    done = threading.Event()
    failure = []

    def target():
        try:
            eng.run()
        except BaseException as e:          # noqa: BLE001 -- reported below
            failure.append(e)
        done.set()
    threading.Thread(target=target, daemon=True).start()
    if not done.wait(seconds):
        eng.stop()
        done.wait(10)
        pytest.fail(f"eng.run() did not return within {seconds} s")
    if failure:
        raise failure[0]


# --- the newest savepoint damaged ----------------------------------------------------------

def test_a_damaged_newest_savepoint_is_listed_and_restoring_an_intact_one_runs_on(world):
    eng, a = world.eng, world.a
    world.flip("savepoints", sp_key(a, 5))
    ex = world.everyone_else_is_fine(a)
    assert ex.damaged.startswith("newest savepoint 5 is damaged")
    assert ex.status == Status.ENDED_SUCCESS
    kinds = [(sp.seq, sp.kind) for sp in eng.savepoints(a)]
    assert kinds == [(1, "implicit"), (2, "implicit"), (3, "implicit"), (4, "explicit"),
                     (5, "damaged")]
    assert "damaged" in world.cli("savepoints", a).stdout
    with pytest.raises(CorruptSavepoint, match="savepoint 5 of execution"):
        eng.restore(a, 5)

    restored = eng.restore(a, "after-steps", by="name")
    assert restored.status == Status.QUEUED and restored.restore_count == 1
    assert restored.damaged                    # the damaged savepoint is still its newest
    run_promptly(eng)
    ex = eng.get(a)
    assert ex.status == Status.ENDED_SUCCESS and ex.output == 3, ex
    assert ex.damaged is None                  # its newest savepoint is a new one now
    seqs = [(sp.seq, sp.kind) for sp in eng.savepoints(a)]
    assert seqs[4] == (5, "damaged") and seqs[5][0] == 6     # nothing overwritten


CRASH = """
import os, sys
sys.path.insert(0, sys.argv[2])
import isolation_flows
from engine import Engine
eng = Engine(sys.argv[1], durability="async")
eng.add_connector("die", lambda: os._exit(3))
print(eng.start(isolation_flows.crashing).id, flush=True)
eng.run()
"""


def crashed(world):
    """An execution whose process died after savepoint 2: its record says RUNNING, as
    written when the run began; only savepoint 2 knows more."""
    proc = subprocess.run([sys.executable, "-c", CRASH, str(world.path), SUPPORT],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    return proc.stdout.split()[0]


def test_a_crashed_execution_with_a_damaged_newest_savepoint_cancels_and_restores(world):
    eng = world.eng
    x = crashed(world)
    world.flip("savepoints", sp_key(x, 2))
    ex = world.everyone_else_is_fine(x)
    assert ex.status == Status.RUNNING and ex.damaged.startswith("newest savepoint 2 is damaged")
    assert eng.cancel(x).status == Status.ENDED_CANCELLED
    assert world.cli("cancel", world.w).stdout.split()[1] == "ENDED_CANCELLED"

    eng.restore(x, 1)
    run_promptly(eng)
    ex = eng.get(x)
    assert ex.status == Status.ENDED_SUCCESS and ex.output == "survived", ex
    # it went on from savepoint 1: its new savepoints come after the damaged one
    assert [(sp.seq, sp.kind) for sp in eng.savepoints(x)] == [
        (1, "implicit"), (2, "damaged"), (3, "implicit"), (4, "implicit"), (5, "implicit")]


def test_running_an_execution_whose_newest_savepoint_is_damaged_fails_it_clearly(world):
    eng = world.eng
    x = crashed(world)
    world.flip("savepoints", sp_key(x, 2))
    other = eng.start(isolation_flows.steps, {"n": 1}).id
    run_promptly(eng)                          # the dead owner's execution is resumed
    ex = eng.get(x)
    assert ex.status == Status.ENDED_ERROR, ex
    assert ex.error.startswith("CorruptSavepoint: ") and "savepoint 2" in ex.error
    assert eng.get(other).status == Status.ENDED_SUCCESS
    eng.delete(x)
    assert x not in {e.id for e in eng.executions()}


# --- other records damaged ---------------------------------------------------------------

def test_a_damaged_execution_record_is_listed_and_can_only_be_deleted(world):
    eng, a = world.eng, world.a
    world.flip("executions", a.encode())
    ex = world.everyone_else_is_fine(a)
    assert ex.status == Status.ENDED_ERROR and ex.flow == ""
    assert ex.error.startswith(f"CorruptSavepoint: execution {a} is damaged")
    assert ex.damaged.startswith("execution record is damaged")
    for operation in (eng.cancel, eng.pause, lambda i: eng.restore(i, 4),
                      lambda i: eng.fork(i, 4)):
        with pytest.raises(InvalidTransition, match="can only be deleted|cannot fork"):
            operation(a)
    err = world.cli("restore", a, "4", expect=2).stderr
    assert err.count("\n") == 1 and "damaged" in err
    assert world.cli("delete", a).stdout.startswith("deleted")
    assert a not in {e.id for e in eng.executions()}
    assert world.store.savepoints(a) == []


def test_a_damaged_older_savepoint_leaves_the_head_alone(world):
    eng, a = world.eng, world.a
    world.flip("savepoints", sp_key(a, 2))
    assert all(ex.damaged is None for ex in eng.executions())
    assert [sp.kind for sp in eng.savepoints(a)][1] == "damaged"
    assert "savepoint 2" in eng.savepoints(a)[1].damaged
    with pytest.raises(CorruptSavepoint):
        eng.restore(a, 2)
    eng.restore(a, 3)
    run_promptly(eng)
    assert eng.get(a).status == Status.ENDED_SUCCESS
    eng.delete(a)
    assert eng.check()["problems"] == []       # deleting it collected everything


def test_a_damaged_lease_blocks_nothing(world):
    eng, w = world.eng, world.w
    world.store._write(lambda txn: world.store.tables.put_lease(
        txn, w, store_module.Owner.current("test"), time.time() + 3600))
    world.flip("leases", w.encode())
    assert world.store.lease(w) is None                # taken as no lease
    queued = eng.start(isolation_flows.steps, {"n": 1}).id
    assert eng.cancel(w).status == Status.ENDED_CANCELLED
    run_promptly(eng)
    assert eng.get(queued).status == Status.ENDED_SUCCESS
    eng.delete(w)


def test_a_damaged_request_or_setting_blocks_nothing(world):
    eng = world.eng
    queued = eng.start(isolation_flows.steps, {"n": 1}).id
    world.store.set_setting(f"signal:{queued}", ["cancel"])
    world.flip("settings", f"signal:{queued}".encode())
    world.store.set_setting("worker:1", {"pid": 1})
    world.flip("settings", b"worker:1")
    run_promptly(eng)                          # the damaged request is dropped
    assert eng.get(queued).status == Status.ENDED_SUCCESS
    assert eng.stats()["workers"] == []        # the damaged report is left out
    problems = [p["key"] for p in eng.check()["problems"]]
    assert problems == ["worker:1"]


def test_keys_that_are_not_utf8_are_passed_over_and_reported(world):
    eng, store = world.eng, world.store
    copy = world.raw("executions", world.a.encode())
    bad = b"\xff\xfe" + world.b.encode()[:8]
    world.raw("executions", bad, copy)
    world.raw("queue", (0).to_bytes(8, "big") + bad, b"")
    world.raw("leases", bad, copy)
    world.raw("settings", bad, copy)
    listed = {ex.id for ex in eng.executions()}
    assert listed == {world.a, world.b, world.w}
    assert eng.get(world.b[:6]).id == world.b
    run_promptly(eng)
    assert world.raw("queue", (0).to_bytes(8, "big") + bad) is None       # repaired
    assert world.raw("leases", bad) is None                              # recovered
    assert len(json.loads(world.cli("ls", "--json").stdout)) == 3
    found = world.cli("doctor", expect=1).stdout
    assert "executions 0xfffe" in found and "settings 0xfffe" in found
    store.check(repair=True)
    assert world.raw("executions", bad) == copy      # a record is never deleted


# --- the run queue -------------------------------------------------------------------------

def test_a_queue_entry_without_its_due_index_entry_is_repaired_not_handed_out_forever(
        world, caplog):
    eng, a = world.eng, world.a
    now = int(time.time() * 1_000_000).to_bytes(8, "big")
    world.raw("queue", now + a.encode(), b"")                  # a has ended: no due entry
    world.raw("queue", now + b"0" * 32, b"")                   # no such execution
    gone = eng.start(isolation_flows.steps, {"n": 1}).id       # due index: elsewhere
    world.raw("due", gone.encode(), (1).to_bytes(8, "big"))
    world.raw("queue", (1).to_bytes(8, "big") + gone.encode(), b"")
    queued = eng.start(isolation_flows.steps, {"n": 1}).id
    with caplog.at_level(logging.WARNING, logger="engine.store"):
        run_promptly(eng)
    assert eng.get(queued).status == Status.ENDED_SUCCESS
    assert eng.get(gone).status == Status.ENDED_SUCCESS         # its real entry ran it
    assert world.raw("queue", now + a.encode()) is None
    assert world.raw("queue", now + b"0" * 32) is None
    repairs = [r.getMessage() for r in caplog.records if r.name == "engine.store"]
    assert any(a in m and "no due-index entry" in m for m in repairs), repairs
    assert any("0" * 32 + " does not exist" in m for m in repairs), repairs
    assert eng.check()["problems"] == []


# --- engine doctor -------------------------------------------------------------------------

def test_engine_doctor_finds_each_problem_and_repairs_the_queue(world):
    eng, a, b = world.eng, world.a, world.b
    out = world.cli("doctor").stdout
    assert out.splitlines()[-1].endswith("no problems")
    assert world.cli("doctor", "--json").stdout and \
        json.loads(world.cli("doctor", "--json").stdout)["problems"] == []

    world.flip("savepoints", sp_key(a, 5))
    world.flip("executions", b.encode())
    now = int(time.time() * 1_000_000).to_bytes(8, "big")
    world.raw("queue", now + a.encode(), b"")                 # a queue orphan
    world.raw("names", a.encode() + b"\0ghost", (99).to_bytes(8, "big"))   # dangling name
    world.raw("due", world.w.encode(), delete=True)           # w queued, not indexed
    proc = world.cli("doctor", expect=1)
    lines = proc.stdout.splitlines()
    assert any(line.startswith(f"savepoints {a}.5: ") and "damaged" in line for line in lines)
    assert any(line.startswith(f"executions {b}: ") and "damaged" in line for line in lines)
    assert any(line.startswith(f"queue {a}: ") and "no due-index entry" in line
               for line in lines)
    assert any(line.startswith(f"names {a} 'ghost'") for line in lines)
    assert any(line.startswith(f"queue {world.w}: ") and "due-index entry is missing"
               in line and "(--repair would add the due-index entry)" in line
               for line in lines)
    assert "(--repair would delete it)" in proc.stdout
    assert lines[-1].startswith("checked 3 executions") and "5 problems" in lines[-1]

    repaired = world.cli("doctor", "--repair", expect=1).stdout
    assert "-- repaired: delete it" in repaired and "5 problems, 3 repaired" in repaired
    again = json.loads(world.cli("doctor", "--json", expect=1).stdout)["problems"]
    assert sorted(p["db"] for p in again) == ["executions", "savepoints"]
    assert all(p["repair"] is None for p in again)
    assert world.raw("queue", now + a.encode()) is None
    assert world.raw("names", a.encode() + b"\0ghost") is None
    eng.delete(b)
    eng.restore(a, 4)
    run_promptly(eng)
    assert eng.get(a).status == Status.ENDED_SUCCESS
    assert eng.get(world.w).status == Status.WAITING          # still due in an hour
    assert [p["db"] for p in eng.check()["problems"]] == ["savepoints"]   # a.5 still


def test_engine_doctor_repairs_indexes_and_collects_what_nothing_uses(world):
    from engine import _codec
    store, a = world.store, world.a
    with store.env.begin() as txn:
        mine = [bytes(k) for k in txn.cursor(db=store.db["exec_codes"]).iternext(
            values=False) if bytes(k).startswith(a.encode() + b"\0")]
    world.raw("exec_codes", mine[0], delete=True)                    # one side missing
    unused = World.open.__code__                                    # code nothing uses
    world.raw("code", _codec.fingerprint(unused),
              store.tables.seal(_codec.encode_code(unused)))
    world.raw("leases", b"0" * 32, b"x" * 40)                         # damaged, of no one
    world.raw("names", a.encode() + b"\0after-steps", delete=True)   # a name lost
    found = store.check()["problems"]
    assert sorted(p["db"] for p in found) == ["code", "code_users", "leases", "names"], found
    assert all(p["repair"] for p in found), found
    fixed = store.check(repair=True)["problems"]
    assert all(p["repaired"] for p in fixed)
    assert store.check()["problems"] == []
    assert world.eng.restore(a, "after-steps", by="name").status == Status.QUEUED


def test_engine_doctor_checks_chunks_and_their_reference_counts(world):
    eng, store = world.eng, world.store
    x = eng.execute(isolation_flows.big).id
    y = eng.execute(isolation_flows.big).id
    assert eng.get(x).output == 5000
    with store.env.begin() as txn:
        refs = {bytes(k): int.from_bytes(v, "big")
                for k, v in txn.cursor(db=store.db["chunk_refs"])}
    assert refs and all(n == 4 for n in refs.values()), refs      # 2 savepoints each
    assert store.check()["problems"] == []
    digest = next(iter(refs))
    world.raw("chunk_refs", digest, (1).to_bytes(8, "big"))        # a count out of step
    found = store.check()["problems"]
    assert [(p["db"], p["repair"]) for p in found] == [("chunk_refs", "set it to 4")]
    store.check(repair=True)
    assert world.raw("chunk_refs", digest) == (4).to_bytes(8, "big")
    eng.delete(x)
    eng.delete(y)
    assert store.check()["problems"] == []                          # all collected
    z = eng.execute(isolation_flows.big).id
    digest = next(iter(store._read(lambda txn: [
        bytes(k) for k in txn.cursor(db=store.db["chunks"]).iternext(values=False)])))
    world.flip("chunks", digest)
    found = store.check()["problems"]
    assert [p["db"] for p in found] == ["chunks"] and "damaged" in found[0]["problem"]
    assert eng.get(z).status == Status.ENDED_SUCCESS                 # listing is fine
    eng.restore(z, 1)
    run_promptly(eng)
    ex = eng.get(z)                        # resuming needs the chunk: a clear error
    assert ex.status == Status.ENDED_ERROR and "CorruptSavepoint" in ex.error, ex


# --- the per-execution caches stay bounded ------------------------------------------------

def test_the_pinned_caches_forget_released_executions(world):
    eng, store = world.eng, world.store
    for _ in range(20):
        eng.execute(isolation_flows.steps, {"n": 2})
    assert len(store._pinned_ids) == 0 and len(store._pinned) == 0
    assert len(store._keep) == 0


def test_the_pinned_caches_are_bounded_for_direct_store_users(tmp_path, monkeypatch):
    from store_records import commit
    monkeypatch.setattr("engine.store.lmdb.PINNED_EXECUTIONS", 4)
    with store_module.Store(tmp_path / "s", durability="async") as store:
        executions = [{"id": f"e{i}", "status": "RUNNING", "due": None} for i in range(10)]
        for execution in executions:
            store.put_execution(execution)
            commit(store, execution)
            commit(store, execution, counter=1)
        assert list(store._pinned_ids) == ["e6", "e7", "e8", "e9"]
        assert set(store._pinned) == {"e6", "e7", "e8", "e9"}
        assert len(store._keep) == 1 and list(store._keep.values())[0][1] == 4
        commit(store, executions[0], counter=2)    # forgotten: pins again, reads fine
        assert "e0" in store._pinned_ids and len(store._pinned_ids) == 4
        meta, record = store.savepoint("e0", 3)
        assert set(store.codes_for(record)) <= set().union(*store._pinned.values())
        store.forget_pins("e0")
        assert "e0" not in store._pinned_ids and len(store._keep) == 1
        assert store.check()["problems"] == []
