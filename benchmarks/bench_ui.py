"""The Savepoints page with a big store: server time (a request's round trip on loopback to
a real `engine ui` process) for the executions page and for an execution's Savepoints
tab, with 100,000 executions and one execution holding 10,000 savepoints.  Baseline,
measured in the same run: listing by reading every execution's head (what the store
protocol's executions() costs, which a page without the listing index would pay), and
reading all 10,000 savepoints' metadata.

    python benchmarks/bench_ui.py            # table
    python benchmarks/bench_ui.py --json     # {"list_ms": ..., "savepoints_ms": ..., ...}
    python benchmarks/bench_ui.py --store postgres   # the same on a PostgreSQL store, in
                                             # a cluster of its own (tests/support/
                                             # pgcluster.py; fsync off: it measures reads)

Targets: list_ms <= 100 and savepoints_ms <= 100 (the first page of each; the other
pages are shown too).
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchkit  # noqa: E402
from engine import _frames  # noqa: E402
from engine.store import Store, is_url, listing  # noqa: E402

SECRET = "bench_ui signing key"     # the PostgreSQL store's: the ui process shares it
EXECUTIONS = 100_000
SAVEPOINTS = 10_000
STATUSES = ["ENDED_SUCCESS"] * 7 + ["ENDED_ERROR", "WAITING", "QUEUED"]
FLOWS = [f"shop.flows:step{n}" for n in range(5)]
root = _frames.Root()


def holder():
    return _frames.capture(root)


def build(path):
    """100,000 executions, each with a savepoint that carries its status, and one with
    10,000 savepoints; the id of that one."""
    store = Store(path, durability="async",
                  **({} if is_url(path) else {"map_size": 1 << 30}))
    record, codes = os.urandom(500), [holder.__code__]
    meta = {"kind": "implicit", "name": None, "line": 12, "action": "connect",
            "command": "this.connect('db', fetch='SELECT * FROM data')"}
    now = time.time() - EXECUTIONS

    def one(n):
        execution = {"id": uuid.uuid4().hex, "flow": FLOWS[n % len(FLOWS)],
                     "status": "QUEUED", "created_at": now + n, "updated_at": now + n,
                     "due": None, "restore_count": 0, "inputs": {"n": n}, "log": []}
        store.put_execution(execution)
        execution["status"] = STATUSES[n % len(STATUSES)]
        store.commit_savepoint(execution, dict(meta, created_at=now + n), record, codes)
    # PostgreSQL: round trips overlap on a few connections (LMDB has one writer)
    with concurrent.futures.ThreadPoolExecutor(4 if is_url(path) else 1) as threads:
        for _ in threads.map(one, range(EXECUTIONS), chunksize=256):
            pass
    big = {"id": uuid.uuid4().hex, "flow": FLOWS[0], "status": "RUNNING",
           "created_at": time.time(), "updated_at": time.time(), "due": None,
           "restore_count": 0}
    store.put_execution(big)
    for n in range(SAVEPOINTS):
        store.commit_savepoint(big, dict(meta, created_at=time.time(),
                                         name=f"step-{n}" if n % 100 == 0 else None),
                               record, codes)
    store.close()
    return big["id"]


def median_ms(func, runs):
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        func()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def start_ui(path):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "ui", "--path", path,
                             "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        raise SystemExit(f"engine ui did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].split()[0].rstrip("/")


def get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
        assert response.status == 200 and body, url


def measure(path, runs):
    t0 = time.perf_counter()
    big = build(path)
    built_s = time.perf_counter() - t0
    proc, base = start_ui(path)
    try:
        pages = {
            "list_ms": "/",
            "list_status_ms": "/?status=ENDED_ERROR",
            "list_flow_ms": "/?flow=step3",
            "list_last_page_ms": f"/?page={EXECUTIONS // 50}",
            "api_executions_ms": "/api/executions?limit=50",
            "savepoints_ms": f"/executions/{big}/savepoints",
            "savepoints_last_page_ms": f"/executions/{big}/savepoints?page={SAVEPOINTS // 50}",
            "api_savepoints_ms": f"/api/executions/{big}/savepoints?limit=50",
        }
        for url in pages.values():
            get(base + url)                            # warm: templates, page cache
        result = {name: median_ms(lambda u=url: get(base + u), runs)
                  for name, url in pages.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with Store(path, durability="async") as store:
        result["baseline_scan_ms"] = median_ms(
            lambda: listing.scan_page(store.executions(), None, None, 0, 50), 3)
        result["baseline_savepoints_ms"] = median_ms(lambda: store.savepoints(big), 3)
    result["build_s"] = built_s
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=15, help="requests per page (median)")
    parser.add_argument("--store", choices=("lmdb", "postgres"), default="lmdb",
                        help="the store measured (postgres: a cluster of its own)")
    args = parser.parse_args(argv)
    if args.store == "postgres":
        os.environ["ENGINE_SECRET_KEY"] = SECRET
        cluster = benchkit.pgcluster().Cluster()
        try:
            found = measure(cluster.empty_database(), args.runs)
        finally:
            cluster.stop()
    else:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            found = measure(os.path.join(tmp, "store"), args.runs)
    result = {k: round(v, 2) for k, v in found.items()}
    if args.json:
        print(json.dumps(result))
        return
    print(f"engine ui on {args.store}, CPython {sys.version.split()[0]}: "
          f"{EXECUTIONS:,} executions, one "
          f"with {SAVEPOINTS:,} savepoints (store built in {result['build_s']:.1f} s); "
          f"median request round trip")
    rows = [("executions page 1", "list_ms", "<= 100"),
            ("  by status", "list_status_ms", ""),
            ("  by flow (scans the index)", "list_flow_ms", ""),
            ("  last page", "list_last_page_ms", ""),
            ("  /api/executions", "api_executions_ms", ""),
            ("  baseline: read every head", "baseline_scan_ms", ""),
            ("savepoints tab page 1", "savepoints_ms", "<= 100"),
            ("  last page", "savepoints_last_page_ms", ""),
            ("  /api/.../savepoints", "api_savepoints_ms", ""),
            ("  baseline: read all metadata", "baseline_savepoints_ms", "")]
    for label, key, target in rows:
        print(f"{label:32} {result[key]:>10.1f} ms  {target}")


if __name__ == "__main__":
    main()
