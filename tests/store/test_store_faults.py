"""No SIGBUS, ever (issue 11): a truncated or emptied data.mdb is refused at open with
engine.CorruptStore, and a full disk fails the write with engine.StoreFull, in both
durabilities, leaving the execution resumable.  Everything that could die of a signal
runs in a subprocess, which must exit by itself (a negative return code is a signal)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import lmdb
import pytest

import engine
from engine import store as store_module
from engine.store import lmdbfile
import fault_flows
from locations import SUPPORT

TIMEOUT = 120


def run_python(code, *args, timeout=TIMEOUT):
    """Run ``code`` in a fresh interpreter (this directory importable); the completed
    process, after asserting that no signal ended it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [SUPPORT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode >= 0, (f"killed by signal {-proc.returncode}\n"
                                  f"{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(lines[-1])


# --- truncated and emptied stores ------------------------------------------------------------

READ_ALL = """
    import json, sys
    import engine
    try:
        with engine.Engine(sys.argv[1], durability=sys.argv[2]) as eng:
            found = eng.executions()
            for ex in found:
                eng.savepoints(ex.id)
        print(json.dumps({"ok": sorted((ex.status.value, ex.output) for ex in found)}))
    except engine.CorruptStore as e:
        print(json.dumps({"error": "CorruptStore", "message": str(e)}))
"""


@pytest.fixture(scope="module", params=["sync", "async"])
def made_store(request, tmp_path_factory):
    """A real store with three ended executions and their savepoints, made with that
    durability ("async": writemap, so data.mdb is as long as the map)."""
    path = tmp_path_factory.mktemp(f"made-{request.param}") / "store"
    run_python("""
        import sys
        import engine, fault_flows
        with engine.Engine(sys.argv[1], durability=sys.argv[2]) as eng:
            for steps in (3, 4, 5):
                assert eng.execute(fault_flows.counter, {"steps": steps}).status.value \\
                    == "ENDED_SUCCESS"
    """, path, request.param)
    return path, request.param


def expected_runs():
    return [["ENDED_SUCCESS", 3], ["ENDED_SUCCESS", 6], ["ENDED_SUCCESS", 10]]


def test_an_intact_copy_reads_back(made_store, tmp_path):
    path, durability = made_store
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    for opened_with in ("sync", "async"):
        proc = run_python(READ_ALL, copy, opened_with)
        assert last_json(proc) == {"ok": expected_runs()}, proc.stderr


CUTS = {"0": lambda size: 0, "8K": lambda size: 8192, "12K": lambda size: 12288,
        "16K": lambda size: 16384, "1/3": lambda size: size // 3,
        "1/2": lambda size: size // 2}


@pytest.mark.parametrize("cut", list(CUTS))
def test_a_truncated_data_file_is_refused_with_a_clear_error(made_store, tmp_path, cut):
    path, durability = made_store
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    data = copy / "data.mdb"
    size = data.stat().st_size
    env = lmdb.open(str(copy), readonly=True, lock=False)
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]     # bytes in use
    env.close()
    new_size = CUTS[cut](size)
    os.truncate(data, new_size)
    for opened_with in ("sync", "async"):
        result = last_json(run_python(READ_ALL, copy, opened_with))
        if new_size >= used:          # writemap's data.mdb is as long as its map
            assert result == {"ok": expected_runs()}
            continue
        assert result["error"] == "CorruptStore", result
        assert str(data) in result["message"]
        if new_size == 0:
            assert "is empty (0 bytes)" in result["message"]
        else:
            assert "is truncated" in result["message"]
            if new_size >= 2 * 4096:
                assert f"{used} bytes are in use, the file has {new_size}" in \
                    result["message"]
        assert data.stat().st_size == new_size            # nothing was changed


def test_what_the_messages_say(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.mdb").write_bytes(b"")
    with pytest.raises(engine.CorruptStore, match=r"data\.mdb is empty \(0 bytes\) where a "
                                                  r"store was expected"):
        store_module.Store(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "data.mdb").write_bytes(os.urandom(3 * 4096))
    with pytest.raises(engine.CorruptStore, match="is not an LMDB data file"):
        store_module.Store(junk, durability="async")
    assert issubclass(engine.CorruptStore, engine.EngineError)
    assert issubclass(engine.StoreFull, engine.EngineError)


def test_a_directory_without_data_mdb_is_a_new_store(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "lock.mdb").write_bytes(b"")                # a stale, empty lock file
    with engine.Engine(bare, durability="async") as eng:
        assert eng.executions() == []
        assert eng.execute("fault_flows:counter", {"steps": 2}).output == 1
    with engine.Engine(tmp_path / "never-made", durability="sync") as eng:
        assert eng.executions() == []


def test_a_file_that_ends_before_free_pages_only_is_not_truncated(tmp_path):
    """LMDB does not write a page that one commit allocated and freed again: the file may
    end before such pages (the free DB lists them), and that store is intact."""
    path = str(tmp_path / "loose")
    env = lmdb.open(path, map_size=1 << 30, writemap=False, sync=False, metasync=False)
    rng = __import__("random").Random(1)
    keys, short = [], 0
    for _ in range(600):
        with env.begin(write=True) as txn:
            for _ in range(rng.randint(1, 30)):
                keys.append(os.urandom(8))
                txn.put(keys[-1], os.urandom(rng.choice([10, 200, 3000, 9000])))
            for _ in range(rng.randint(0, 30)):
                if keys:
                    txn.delete(keys.pop(rng.randrange(len(keys))))
        used = (env.info()["last_pgno"] + 1) * 4096
        if os.path.getsize(os.path.join(path, "data.mdb")) < used:
            short += 1
            assert lmdbfile.check_data_file(path) is not None
    env.close()
    assert short, "the seed no longer makes a file that ends before its free pages"


# --- a full disk --------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """mount(size): a tmpfs of that size at a fresh directory (skips the test when this
    process may not mount one); remount(size) makes it bigger."""
    mounted = []

    def mount(size):
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        try:
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                   str(where)], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot mount a small tmpfs here to fill: {e}")
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here to fill: mount said "
                        f"{proc.stderr.strip() or proc.returncode}")
        mounted.append(where)
        return where

    def remount(where, size):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True,
                       timeout=30)

    yield mount, remount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], timeout=30)


FILL_AND_RUN = """
    import json, os, sys
    import engine, fault_flows
    path, durability, steps, fill_first = sys.argv[1], sys.argv[2], int(sys.argv[3]), \\
        sys.argv[4] == "fill"
    with engine.Engine(path, durability=durability) as eng:
        ex = eng.start(fault_flows.filler, {"steps": steps, "size": 100_000})
        if fill_first:              # the rest of the device, beside the store
            fault_flows.fill_device(os.path.dirname(path))
        try:
            eng.run()
            raised = None
        except engine.StoreFull as e:
            raised = str(e)
        got = eng.get(ex.id)
        lease = eng._store.lease(ex.id)
        print(json.dumps({"raised": raised, "id": ex.id, "status": got.status.value,
                          "error": got.error, "leased_by_me": lease is not None and
                          lease.owner.pid == os.getpid(),
                          "writemap": eng._store._room.writemap,
                          "savepoints": len(eng.savepoints(ex.id))}))
"""

RESUME = """
    import json, sys
    import engine
    with engine.Engine(sys.argv[1], durability=sys.argv[2]) as eng:
        eng.run(execution_id=sys.argv[3])          # due in 5 s for a worker: now here
        got = eng.get(sys.argv[3])
        print(json.dumps({"status": got.status.value, "output": got.output,
                          "error": got.error}))
"""


def check_full_disk(result, path):
    assert result["raised"] is not None, result       # the Flow-API call failed ...
    assert result["raised"].startswith(f"no space left on the device holding {path}")
    # ... and the execution is resumable: back on the queue, or (when not even that
    # could be written) still leased by the process that failed, for lease recovery
    if result["status"] == "QUEUED":
        assert result["error"].startswith("StoreFull: no space left"), result
    else:
        assert result["status"] == "RUNNING" and result["leased_by_me"], result


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_a_full_disk_fails_the_call_and_the_execution_resumes(small_disk, durability):
    """A flow fills a 4 MB device with savepoints.  "async" cannot allocate its 64 MB
    map there, so it writes without writemap (pwrite: ENOSPC)."""
    mount, remount = small_disk
    disk = mount("4m")
    path = disk / "store"
    result = last_json(run_python(FILL_AND_RUN, path, durability, 60, "no"))
    check_full_disk(result, path)
    assert result["writemap"] is False
    assert 3 <= result["savepoints"] < 60
    remount(disk, "160m")                           # room again: it goes on and ends
    resumed = last_json(run_python(RESUME, path, durability, result["id"]))
    assert resumed == {"status": "ENDED_SUCCESS", "output": 60, "error": None}


def test_a_full_disk_under_a_writemap_that_must_grow(small_disk):
    """"async" with its 64 MB map allocated at open; the device then fills up; the flow
    fills the map, and growing it cannot be allocated: StoreFull, not SIGBUS."""
    mount, remount = small_disk
    disk = mount("72m")
    path = disk / "store"
    result = last_json(run_python(FILL_AND_RUN, path, "async", 2000, "fill"))
    assert result["writemap"] is True
    check_full_disk(result, path)
    assert 500 < result["savepoints"] < 2000
    os.unlink(disk / "filler")
    remount(disk, "400m")
    resumed = last_json(run_python(RESUME, path, "async", result["id"]))
    assert resumed == {"status": "ENDED_SUCCESS", "output": 2000, "error": None}


STORE_FILL = """
    import json, os, sys
    from engine.errors import StoreFull
    from engine.store import Store
    from store_records import commit
    import fault_flows

    path = sys.argv[1]
    store = Store(path, durability=sys.argv[2], map_size=1 << 20)
    execution = {"id": "e1", "due": None}
    done, raised = 0, None
    try:
        for i in range(1000):
            if i == 3:
                fault_flows.fill_device(os.path.dirname(path))
            commit(store, execution, value=os.urandom(50_000), counter=i)
            done += 1
    except StoreFull as e:
        raised = str(e)
    print(json.dumps({"raised": raised, "done": done, "writemap": store._room.writemap,
                      "read": len(store.savepoints("e1"))}))
"""


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_a_store_on_a_full_disk_raises_store_full(small_disk, durability):
    mount, _ = small_disk
    disk = mount("4m")
    proc = run_python(STORE_FILL, disk / "store", durability)
    result = last_json(proc)
    assert result["raised"] and result["raised"].startswith(
        f"no space left on the device holding {disk / 'store'}"), (result, proc.stderr)
    assert result["writemap"] is (durability == "async")
    assert result["read"] == result["done"] >= 3      # what was written reads back


ADOPT = """
    import json, os, subprocess, sys
    from engine.errors import StoreFull
    from engine.store import Store
    from store_records import commit
    import fault_flows

    path = sys.argv[1]
    mine = Store(path, durability="async", map_size=1 << 20)    # 1 MB, allocated
    execution = {"id": "e1", "due": None}
    commit(mine, execution, value=b"first")
    # another process, without writemap, grows the map and writes past this one's
    subprocess.run([sys.executable, "-c", '''if 1:
        import os, sys
        from engine.store import Store
        from store_records import commit
        other = Store(sys.argv[1], durability="sync", map_size=1 << 20)
        execution = {"id": "e2", "due": None}
        for i in range(30):
            commit(other, execution, value=os.urandom(50_000), counter=i)
        assert other.env.info()["map_size"] > 1 << 20
        other.close()
    ''', path], check=True, timeout=60)
    fault_flows.fill_device(os.path.dirname(path))
    read = len(mine.savepoints("e2"))          # adopts the grown map: reads go on
    try:
        commit(mine, execution, value=os.urandom(300_000))   # pages past the file
        raised = None
    except StoreFull as e:
        raised = str(e)
    print(json.dumps({"read": read, "raised": raised, "short": mine._room.short}))
"""


def test_a_map_grown_elsewhere_that_cannot_be_allocated_here(small_disk):
    """A writemap process adopts a map another process grew, but the device cannot
    allocate it: reads go on, writes fail with StoreFull (never into a hole)."""
    mount, _ = small_disk
    disk = mount("4m")
    proc = run_python(ADOPT, disk / "store")
    result = last_json(proc)
    assert result["read"] == 30 and result["short"] is True, (result, proc.stderr)
    assert result["raised"].startswith(f"no space left on the device holding "
                                       f"{disk / 'store'}"), result


def test_a_full_disk_fails_each_write_of_a_group_and_writes_none_of_them(small_disk):
    """Writes queued behind a held one go as a group; the device is full: each caller
    whose write was not made gets StoreFull, and none of them is in the store."""
    import threading

    from engine.store import Store
    from store_threads import HeldWrite
    from waiting import wait_for
    mount, remount = small_disk
    disk = mount("4m")
    with Store(disk / "store", durability="sync") as store:
        held = HeldWrite(store, "holder")
        fault_flows.fill_device(str(disk))
        errors = {}

        def put(k):
            try:
                store.put_execution({"id": f"p{k}", "status": "QUEUED", "due": None,
                                     "inputs": os.urandom(200_000)})
            except engine.StoreFull as e:
                errors[k] = str(e)

        threads = [threading.Thread(target=put, args=(k,)) for k in range(4)]
        for k, thread in enumerate(threads):
            thread.start()
            assert wait_for(lambda: store._writer.waiting_writes == k + 1)
        held.release()
        for thread in threads:
            thread.join(60)
        assert sorted(errors) == [0, 1, 2, 3], errors
        assert all(e.startswith("no space left on the device") for e in errors.values())
        assert all(store.get_execution(f"p{k}") is None for k in range(4))
        os.unlink(disk / "filler")
        store.put_execution({"id": "after", "status": "QUEUED", "due": None})
        assert store.get_execution("after")["status"] == "QUEUED"
