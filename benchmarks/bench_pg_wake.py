"""Idle workers and wake-ups: how many transactions per second an idle `engine worker`
(one worker process) costs the database -- beyond what the database counts with no worker
(autovacuum, this benchmark's own looks), measured just before in the same run -- and how
long an execution started in another process waits before a worker runs it: on
PostgreSQL, beside the LMDB store (whose idle workers look at the queue every 20 ms).

A PostgreSQL server: $ENGINE_BENCH_PG_URL (a database the benchmark may fill), else a
cluster of its own (tests/support/pgcluster.py: pgserver's binaries or $ENGINE_TEST_PG_BIN).

    python benchmarks/bench_pg_wake.py            # table
    python benchmarks/bench_pg_wake.py --json     # {"pg_idle_xact_per_s": ..., ...}

Targets: an idle PostgreSQL worker <= 5 transactions/s (its report to the store once a
second, and one look at the queue per slow poll; it was ~50 with a look every 20 ms); its
wake latency (median) <= 50 ms.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "support"))

import wake_flows  # noqa: E402
from engine import Engine, Status  # noqa: E402

IDLE_SECONDS = 15.0          # pg_stat_database lags: each backend flushes its counts about once a second
WAKES = 15


def committed(url):
    """Transactions the database has counted so far (every autocommit query is one)."""
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()[0]


def start_worker(path):
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", "1", "--path", path,
         "--durability", "async", "--flows", "wake_flows"],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [HERE, *filter(None, [os.environ.get("PYTHONPATH")])])),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)


def wake_latencies(eng):
    """Seconds from start() to the worker's first Flow-API call, each after a pause."""
    found = []
    for _ in range(WAKES):
        time.sleep(random.uniform(0.3, 1.2))     # the worker is idle, at any point of its wait
        t0 = time.time()
        ex = eng.start(wake_flows.stamp)
        while (ex := eng.get(ex.id)).status != Status.ENDED_SUCCESS:
            time.sleep(0.005)
        found.append(ex.output - t0)
    return found


def rate(url):
    """Transactions per second the database counts over IDLE_SECONDS."""
    before = committed(url)
    time.sleep(IDLE_SECONDS)
    return (committed(url) - before) / IDLE_SECONDS


def measure(path, pg_url=None):
    """(idle transactions per second -- the worker's own -- or None, wake latencies) of
    one worker on ``path``."""
    with Engine(path, durability="async") as eng:
        baseline = rate(pg_url) if pg_url is not None else None
        worker = start_worker(path)
        try:
            # warm: the worker has started and run one execution
            ex = eng.start(wake_flows.stamp)
            while eng.get(ex.id).status != Status.ENDED_SUCCESS:
                time.sleep(0.05)
            time.sleep(5.0)                      # its after-effects flushed
            idle = None if pg_url is None else rate(pg_url) - baseline
            return idle, wake_latencies(eng)
        finally:
            worker.terminate()
            worker.wait(timeout=60)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    cluster = None
    url = os.environ.get("ENGINE_BENCH_PG_URL")
    os.environ.setdefault("ENGINE_SECRET_KEY", "bench_pg_wake")
    try:
        if not url:
            from pgcluster import Cluster
            cluster = Cluster()
            url = cluster.create_database("wake_" + uuid.uuid4().hex[:8])
        idle, pg = measure(url, url)
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            _, lmdb = measure(os.path.join(tmp, "store"))
    finally:
        if cluster is not None:
            cluster.stop()
    ms = lambda xs, q: round(1000 * statistics.quantiles(xs, n=10)[q] if q else  # noqa: E731
                             1000 * statistics.median(xs), 1)
    result = {"pg_idle_xact_per_s": round(idle, 1),
              "pg_wake_ms_median": ms(pg, 0), "pg_wake_ms_p90": ms(pg, 8),
              "lmdb_wake_ms_median": ms(lmdb, 0), "lmdb_wake_ms_p90": ms(lmdb, 8)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"idle worker (1 process), CPython {sys.version.split()[0]}")
    print(f"  PostgreSQL: {idle:7.1f} transactions/s while idle   (target <= 5)")
    print("  wake latency, start() in another process to the first Flow-API call:")
    print(f"    PostgreSQL: median {result['pg_wake_ms_median']:6.1f} ms, "
          f"p90 {result['pg_wake_ms_p90']:6.1f} ms   (target median <= 50)")
    print(f"    LMDB      : median {result['lmdb_wake_ms_median']:6.1f} ms, "
          f"p90 {result['lmdb_wake_ms_p90']:6.1f} ms")


if __name__ == "__main__":
    main()
