"""Store: committing a 500-byte savepoint record with its execution update, against a bare
LMDB put+commit of the same bytes, in async and sync durability, plus a savepoint read.
Everything in one run, on fresh environments in a temporary directory.

    python benchmarks/bench_store.py            # table
    python benchmarks/bench_store.py --json     # {"commit_async_us": ..., ...}

Targets: commit <= 1.3x bare LMDB in both modes; read <= 3 us.

"Bare" is py-lmdb with its usual flags (no writemap).  The store opens LMDB with
writemap, which makes every commit several times cheaper; the table also shows a bare
put+commit with those same flags, so the store's own overhead is visible too.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
from time import perf_counter_ns

import lmdb

from engine import _frames
from engine.store import Store

root = _frames.Root()


def holder():
    return _frames.capture(root)


def timed(func, runs):
    samples = []
    for i in range(runs):
        t0 = perf_counter_ns()
        func(i)
        samples.append(perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def measure(tmp, durability, runs):
    sync = durability == "sync"
    record = os.urandom(500)
    codes = [holder.__code__]
    store = Store(os.path.join(tmp, f"store-{durability}"), durability=durability,
                  map_size=1 << 30)
    execution = {"id": "bench", "flow": "bench:flow", "status": "RUNNING", "due": None,
                 "created_at": 0.0, "updated_at": 0.0, "restore_count": 0}
    meta = {"kind": "implicit", "name": None, "line": 12, "action": "connect",
            "command": "this.connect('db', fetch='SELECT * FROM data')", "created_at": 0.0}

    def commit(i):
        execution["updated_at"] = i
        store.commit_savepoint(execution, meta, record, codes)

    bare_envs = {}
    for writemap in (False, True):
        env = lmdb.open(os.path.join(tmp, f"bare-{durability}-{writemap}"),
                        map_size=1 << 30, max_dbs=2, sync=sync, metasync=sync,
                        writemap=writemap)
        bare_envs[writemap] = (env, env.open_db(b"savepoints"))

    def bare(writemap):
        env, db = bare_envs[writemap]

        def put(i):
            with env.begin(write=True) as txn:
                txn.put(i.to_bytes(8, "big"), record, db=db)
        return put

    commit(0)
    # interleave the three so the machine's noise hits each alike
    ours, theirs, same_flags = [], [], []
    chunk = max(1, runs // 10)
    for round_ in range(10):
        ours.append(timed(commit, chunk))
        theirs.append(timed(lambda i: bare(False)(i + round_ * chunk), chunk))
        same_flags.append(timed(lambda i: bare(True)(i + round_ * chunk), chunk))
    result = {"commit": statistics.median(ours), "bare": statistics.median(theirs),
              "bare_writemap": statistics.median(same_flags)}
    if not sync:
        seq = execution["last_seq"] // 2
        result["read"] = timed(lambda i: store.savepoint("bench", seq), 20_000)
    store.close()
    for env, _ in bare_envs.values():
        env.close()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        fast = measure(tmp, "async", 20_000)
        slow = measure(tmp, "sync", 400)
    result = {
        "commit_async_us": round(fast["commit"], 2), "bare_async_us": round(fast["bare"], 2),
        "commit_sync_us": round(slow["commit"], 1), "bare_sync_us": round(slow["bare"], 1),
        "read_us": round(fast["read"], 2),
        "bare_async_writemap_us": round(fast["bare_writemap"], 2),
        "bare_sync_writemap_us": round(slow["bare_writemap"], 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"store, CPython {sys.version.split()[0]}, lmdb {lmdb.__version__}: 500-byte "
          f"savepoint + execution update per commit (medians)")
    print(f"{'':8} {'store commit':>14} {'bare LMDB':>12} {'ratio':>7}  target"
          f"   {'bare, writemap':>15} {'ratio':>7}")
    for mode in ("async", "sync"):
        ours, bare = result[f"commit_{mode}_us"], result[f"bare_{mode}_us"]
        same = result[f"bare_{mode}_writemap_us"]
        print(f"{mode:8} {ours:>11.2f} us {bare:>9.2f} us {ours / bare:>6.2f}x  <= 1.3x"
              f"   {same:>12.2f} us {ours / same:>6.2f}x")
    print(f"{'read':8} {result['read_us']:>11.2f} us {'':>12} {'':>7}  <= 3 us")


if __name__ == "__main__":
    main()
