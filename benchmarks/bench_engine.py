"""The whole engine: one Flow-API call with its savepoint, and resuming in a fresh process.

- A Flow-API call (a connector returning a constant) with the codec benchmark's standard
  10-local state in the handler, at depth 1 and 5, async and sync durability; beside a
  plain function call and a bare LMDB fsync'ed commit of as many bytes as a savepoint
  value, into a named database (in rounds alternating with the sync calls).
- Resuming an execution in a fresh process, from opening the engine to the next
  instruction running, after K = 10, 1,000 and 100,000 savepoints of history (async).

    python benchmarks/bench_engine.py            # table
    python benchmarks/bench_engine.py --json     # {"call_async_us_depth1": ..., ...}

Targets: async <= 10 us at depth 1 and <= 20 us at depth 5; sync <= 1.2x a bare fsync
commit; resume <= 1 ms at every K, not growing with K.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from time import perf_counter_ns

import lmdb

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import engine_flows  # noqa: E402
from engine import Engine, Status  # noqa: E402

RESUME = f"""
import sys, time
sys.path.insert(0, {HERE!r})
import engine_flows
from engine import Engine
t0 = time.perf_counter()
marks = []
with Engine(sys.argv[1], durability="async") as eng:
    eng.add_connector("const", lambda: 1)
    eng.add_connector("mark", lambda: marks.append(time.perf_counter()))
    eng.run()
print((marks[0] - t0) * 1000)
"""


def call_cost(tmp, durability, depth, calls):
    """Median microseconds of one Flow-API call, and the bytes its savepoint value takes."""
    with Engine(os.path.join(tmp, f"calls-{durability}-{depth}"), durability=durability) as eng:
        eng.add_connector("const", lambda: 1)
        engine_flows.TIMINGS.clear()
        ex = eng.execute(engine_flows.timed_calls, {"depth": depth, "calls": calls})
        assert ex.status == Status.ENDED_SUCCESS, ex.error
        samples = engine_flows.TIMINGS[calls // 10:]       # past the first pins and warm-up
        with eng._store.env.begin() as txn:
            cursor = txn.cursor(db=eng._store.db["savepoints"])
            cursor.last()
            size = len(cursor.value())
        return statistics.median(samples) / 1000, size


def sync_rounds(tmp, rounds=10, calls=40):
    """Sync Flow-API calls and bare fsync'ed commits in alternating rounds, so this
    machine's fsync noise hits both alike.  Returns (call_us, bare_us, value_bytes)."""
    ours, bare_samples = [], []
    path = os.path.join(tmp, "sync-rounds")
    env = lmdb.open(os.path.join(tmp, "bare-rounds"), map_size=1 << 28, max_dbs=2,
                    sync=True, metasync=True)
    db = env.open_db(b"savepoints")
    size = None
    with Engine(path, durability="sync") as eng:
        eng.add_connector("const", lambda: 1)
        for r in range(rounds):
            engine_flows.TIMINGS.clear()
            ex = eng.execute(engine_flows.timed_calls, {"depth": 1, "calls": calls})
            assert ex.status == Status.ENDED_SUCCESS, ex.error
            ours += engine_flows.TIMINGS[3:]              # past the first call's pinning
            if size is None:
                with eng._store.env.begin() as txn:
                    cursor = txn.cursor(db=eng._store.db["savepoints"])
                    cursor.last()
                    size = len(cursor.value())
            value = os.urandom(size)
            for i in range(calls):
                t0 = perf_counter_ns()
                with env.begin(write=True) as txn:
                    txn.put((r * calls + i).to_bytes(8, "big"), value, db=db)
                bare_samples.append(perf_counter_ns() - t0)
    env.close()
    return statistics.median(ours) / 1000, statistics.median(bare_samples) / 1000, size


def plain_call_us():
    def plain(x):
        return x
    samples = []
    for i in range(20000):
        t0 = perf_counter_ns()
        plain(i)
        samples.append(perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def resume_ms(tmp, k, repeats=5):
    path = os.path.join(tmp, f"history-{k}")
    with Engine(path, durability="async", savepoint_retention="all") as eng:
        eng.add_connector("const", lambda: 1)
        ex = eng.execute(engine_flows.history, {"k": k})
        assert eng.get(ex.id).status == Status.WAITING
        sleep_sp = eng.savepoints(ex.id)[-1].id if k <= 1000 else \
            f"{ex.id}.{eng._store.get_execution(ex.id)['last_seq']}"
    times = []
    for _ in range(repeats):
        with Engine(path, durability="async") as eng:
            eng.restore(ex.id, sleep_sp)                  # due now, from the sleep
        out = subprocess.run([sys.executable, "-c", RESUME, path], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        times.append(float(out.stdout.split()[-1]))
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--max-k", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        sync_us, bare_us, size = sync_rounds(tmp)
        result = {
            "call_async_us_depth1": round(call_cost(tmp, "async", 1, 20_000)[0], 2),
            "call_async_us_depth5": round(call_cost(tmp, "async", 5, 20_000)[0], 2),
            "call_sync_us_depth1": round(sync_us, 1),
            "bare_sync_commit_us": round(bare_us, 1),
            "savepoint_value_bytes": size,
            "plain_call_us": round(plain_call_us(), 3),
            "resume_ms": {str(k): round(resume_ms(tmp, k), 3)
                          for k in (10, 1000, 100_000) if k <= args.max_k},
        }
    if args.json:
        print(json.dumps(result))
        return
    print(f"engine, CPython {sys.version.split()[0]} (medians)")
    print(f"  Flow-API call, async, depth 1: {result['call_async_us_depth1']:8.2f} us"
          f"   (target <= 10 us; a plain call: {result['plain_call_us']} us)")
    print(f"  Flow-API call, async, depth 5: {result['call_async_us_depth5']:8.2f} us"
          f"   (target <= 20 us)")
    ratio = result["call_sync_us_depth1"] / result["bare_sync_commit_us"]
    print(f"  Flow-API call, sync,  depth 1: {result['call_sync_us_depth1']:8.1f} us"
          f"   = {ratio:.2f}x a bare fsync'ed LMDB commit "
          f"({result['bare_sync_commit_us']} us; target <= 1.2x)")
    for k, ms in result["resume_ms"].items():
        print(f"  resume in a fresh process after {int(k):>7,} savepoints: {ms:6.3f} ms"
              f"   (target <= 1 ms)")


if __name__ == "__main__":
    main()
