"""Worker pools: Flow-API calls per second with 1 and 2 worker processes on one workload
(async durability), and the scaling between them.

The workload: 400 executions of 60 Flow-API calls each, every call to a connector that
does 50 us of CPU work (BENCH_WORK_US) -- the engine's part of a call is ~9 us, and the
LMDB write lock it takes is shared by all processes.  Rates are measured from the first
to the last savepoint, so worker start-up is left out.

    python benchmarks/bench_workers.py            # table
    python benchmarks/bench_workers.py --json     # {"calls_per_s_1": ..., ...}

Target: scaling >= 1.7 on this 2-core machine.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import worker_flows  # noqa: E402
from engine import Engine, Status  # noqa: E402

EXECUTIONS, CALLS = 400, 60


def measure(tmp, processes):
    path = os.path.join(tmp, f"store-{processes}")
    with Engine(path, durability="async") as eng:
        ids = [eng.start(worker_flows.flow, {"calls": CALLS}).id for _ in range(EXECUTIONS)]
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", str(processes), "--path", path,
         "--durability", "async", "--flows", "worker_flows"],
        env=dict(os.environ, PYTHONPATH=HERE), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        with Engine(path, durability="async") as eng:
            time.sleep(1.0)
            while eng._store.queue_depth() or any(
                    eng._store.lease(i) is not None for i in ids[::10]) or \
                    eng.get(ids[-1]).status != Status.ENDED_SUCCESS:
                time.sleep(0.5)                    # poll rarely: this process shares the cores
            records = [eng._store.get_execution(i) for i in ids]
            assert all(r["status"] == Status.ENDED_SUCCESS.value for r in records)
            # from the first savepoint of any execution to the last execution's end
            first = min(eng.savepoints(i)[0].created_at.timestamp() for i in ids)
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(timeout=60)
    span = max(r["updated_at"] for r in records) - first
    return len(records) * CALLS / span, len(records) / span


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        calls_1, runs_1 = measure(tmp, 1)
        calls_2, runs_2 = measure(tmp, 2)
    result = {"calls_per_s_1": round(calls_1), "calls_per_s_2": round(calls_2),
              "executions_per_s_1": round(runs_1, 1), "executions_per_s_2": round(runs_2, 1),
              "scaling": round(calls_2 / calls_1, 2)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"workers, CPython {sys.version.split()[0]}: {EXECUTIONS} executions x {CALLS} "
          f"Flow-API calls, connector {worker_flows.WORK_NS / 1000:.0f} us of CPU work")
    print(f"  1 worker : {calls_1:9.0f} calls/s  {runs_1:7.1f} executions/s")
    print(f"  2 workers: {calls_2:9.0f} calls/s  {runs_2:7.1f} executions/s")
    print(f"  scaling  : {calls_2 / calls_1:.2f}   (target >= 1.7)")


if __name__ == "__main__":
    main()
