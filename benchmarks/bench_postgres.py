"""The PostgreSQL store (issue 14): what a Flow-API call costs beside the bare commit it
is built on, how fast claims go, and how executions/s scale with worker processes.  The
benchmark starts its own PostgreSQL cluster (tests/support/pgcluster.py: the pgserver
wheel's binaries, or $ENGINE_TEST_PG_BIN) with fsync ON -- synchronous commits are
measured -- on TCP 127.0.0.1, and removes it at the end.  Every ratio compares against a
baseline measured in the same run.

- call_sync_us, call_async_us: median microseconds of one Flow-API call (a constant
  connector) with its savepoint, at depth 1, in Engine(url, durability="sync"/"async")
  (as benchmarks/bench_engine.py times it: engine_flows.timed_calls).
- bare_commit_sync_us, bare_commit_async_us: one INSERT of the same bytes (the size of
  that savepoint's stored value) into a table shaped as the savepoints table, and its
  commit, on one psycopg connection with the same settings (autocommit: the INSERT is
  its own transaction; async: synchronous_commit off).  Engine calls and bare inserts run
  in alternating rounds, so the disk's fsync noise hits both alike.
  call_sync_ratio, call_async_ratio: the call over its bare commit.
- claim_per_s: claims per second by 4 processes competing for one queue of QUEUED
  executions (each claim followed by the release of its lease, as a worker does when an
  execution ends, so the leases table stays the size it has in use); claim_per_s_1: one
  process alone, beside it.
- scaling_1_to_4: executions/s of `engine worker -n 4` over `-n 1` (--concurrency 1,
  async), executions of SCALING_CALLS calls to a connector doing 5 ms of blocking I/O
  (time.sleep), started once every worker of the pool reports (so their start-up is
  left out); measured from the first savepoint to the last execution's end.  One execution at a time per worker, so that 4 of them
  are not short of this machine's 2 cores (with --concurrency 4 they are, and the
  ratio is ~2.4): the figure says whether workers hold each other up in the database.

    python benchmarks/bench_postgres.py                # table (~1.5 min)
    python benchmarks/bench_postgres.py --json         # {"call_sync_us": ..., ...}
    python benchmarks/bench_postgres.py --quick        # smaller sizes, to try it
    python benchmarks/bench_postgres.py --only call,claim,scaling

Targets: call_sync_ratio <= 1.3; call_async_ratio <= 1.3; scaling_1_to_4 >= 3.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from time import perf_counter_ns

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchkit  # noqa: E402
import concurrency_flows  # noqa: E402
import engine_flows  # noqa: E402
import psycopg  # noqa: E402
from engine import Engine, Status  # noqa: E402
from engine.store import Owner, Store  # noqa: E402

PARTS = ("call", "claim", "scaling")
SIZES = {   # full run, and --quick
    "call_rounds": (40, 6), "call_calls": (50, 50),
    "claim_executions": (6000, 1000),
    "scaling_executions": (400, 100),
}
CLAIM_PROCESSES = 4
SCALING_CALLS = 10
SCALING_CONCURRENCY = 1     # one execution at a time per worker: the processes wait on
                            # I/O, not on this machine's 2 cores -- what is measured is
                            # whether they get in each other's way in the database
SCHEMA = "savepoint_engine"  # PostgresStore's default
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_TIMEOUT", 600))
SECRET = "bench_postgres signing key"   # every process of the benchmark shares it

TARGETS = {"call_sync_ratio": "<= 1.3", "call_async_ratio": "<= 1.3",
           "scaling_1_to_4": ">= 3"}


# -- call cost beside a bare commit -------------------------------------------------------
BARE_TABLE = ('CREATE TABLE bare (exec_id text COLLATE "C" NOT NULL, seq bigint NOT NULL, '
              'value bytea NOT NULL, PRIMARY KEY (exec_id, seq))')


def call_and_bare(url, durability, rounds, calls):
    """(median call us, median bare commit us, savepoint bytes), in alternating rounds."""
    options = "-c synchronous_commit=off" if durability == "async" else ""
    ours, bare = [], []
    with Engine(url, durability=durability) as eng, \
            psycopg.connect(url, autocommit=True, options=options) as conn:
        conn.execute(BARE_TABLE)
        eng.add_connector("const", concurrency_flows.constant)
        for r in range(rounds):
            engine_flows.TIMINGS.clear()
            ex = eng.execute(engine_flows.timed_calls, {"depth": 1, "calls": calls})
            if ex.status != Status.ENDED_SUCCESS:
                raise RuntimeError(f"the timed flow ended {ex.status}: {ex.error}")
            ours += engine_flows.TIMINGS[3:]              # past the first call's pinning
            size = conn.execute(f"SELECT length(value) FROM {SCHEMA}.savepoints WHERE "
                                f"exec_id = %s ORDER BY seq DESC LIMIT 1",
                                (ex.id,)).fetchone()[0]
            value = os.urandom(size)
            for i in range(calls):
                t0 = perf_counter_ns()
                conn.execute("INSERT INTO bare VALUES (%s, %s, %s)", (ex.id, i, value))
                bare.append(perf_counter_ns() - t0)
    return statistics.median(ours) / 1000, statistics.median(bare) / 1000, size


def call_costs(cluster, size):
    result = {}
    for durability in ("sync", "async"):
        url = cluster.create_database(f"calls_{durability}")
        call, bare, nbytes = call_and_bare(url, durability, size["call_rounds"],
                                           size["call_calls"])
        result.update({f"call_{durability}_us": round(call, 1),
                       f"bare_commit_{durability}_us": round(bare, 1),
                       f"call_{durability}_ratio": round(call / bare, 2)})
    result["savepoint_bytes"] = nbytes
    return result


# -- claims ---------------------------------------------------------------------------------
def claim_child(url, start_at):
    """In a process of its own: claim (and release) until the queue is empty, from
    ``start_at`` (a UNIX time) on; prints {"claims", "end"}."""
    with Store(url, durability="async") as store:
        owner = Owner.current("bench")
        store.next_due()                            # connected and warm before the start
        time.sleep(max(0.0, start_at - time.time()))
        claims = 0
        while True:
            exec_id = store.claim(owner, lease_seconds=600)
            if exec_id is None:
                break
            store.release(exec_id, owner)
            claims += 1
    print(json.dumps({"claims": claims, "end": time.time()}))


def claim_rate(cluster, processes, executions):
    url = cluster.create_database(f"claims_{processes}")
    with Store(url, durability="async") as store:
        for i in range(executions):
            store.put_execution({"id": f"c{i:06d}", "flow": "m:f", "status": "QUEUED",
                                 "due": 0.0})
    start_at = time.time() + 3.0                    # all processes started by then
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_postgres; "
            "bench_postgres.claim_child(sys.argv[2], float(sys.argv[3]))")
    children = [subprocess.Popen([sys.executable, "-c", code, HERE, url, repr(start_at)],
                                 stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=RUN_TIMEOUT)
        if child.returncode != 0:
            raise RuntimeError(f"a claiming process exited {child.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    claimed = sum(r["claims"] for r in reports)
    if claimed != executions:
        raise RuntimeError(f"{claimed} claims of {executions} executions")
    return claimed / (max(r["end"] for r in reports) - start_at)


def claims(cluster, size):
    n = size["claim_executions"]
    rate_1 = claim_rate(cluster, 1, n)
    rate_4 = claim_rate(cluster, CLAIM_PROCESSES, n)
    return {"claim_per_s_1": round(rate_1), "claim_per_s": round(rate_4)}


# -- scaling_1_to_4 -------------------------------------------------------------------------
def pool_rate(cluster, processes, executions):
    """Executions/s of ``processes`` workers, from the first savepoint to the last end."""
    url = cluster.create_database(f"pool_{processes}")
    Store(url, durability="async").close()       # the schema, before the workers open it
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", str(processes), "--path", url,
         "--durability", "async", "--concurrency", str(SCALING_CONCURRENCY),
         "--flows", "postgres_flows"],
        env=dict(os.environ, PYTHONPATH=HERE), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        with Engine(url, durability="async") as eng:
            # every worker up and looking for work before there is any: their start-up,
            # staggered on a busy machine, is not in the rate
            while len(eng.stats()["workers"]) < processes:
                if pool.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {processes} workers did not start")
                time.sleep(0.2)
            ids = [eng.start(concurrency_flows.calls, {"calls": SCALING_CALLS,
                                                       "connector": "io"}).id
                   for _ in range(executions)]
        with psycopg.connect(url, autocommit=True) as conn:
            # done: nothing queued, nothing leased (cheap to ask, unlike every head)
            while conn.execute(f"SELECT (SELECT count(*) FROM {SCHEMA}.queue) + "
                               f"(SELECT count(*) FROM {SCHEMA}.leases)").fetchone()[0]:
                if pool.poll() is not None:
                    raise RuntimeError(f"the worker pool exited ({pool.returncode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{processes} workers: not done after "
                                       f"{RUN_TIMEOUT:.0f} s")
                time.sleep(0.5)                 # poll rarely: this process shares the cores
    finally:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()
    with Engine(url, durability="async") as eng:
        ended = [eng.get(i) for i in ids]
        if any(e.status != Status.ENDED_SUCCESS for e in ended):
            raise RuntimeError("not every execution ended successfully")
        first = min(eng.savepoint(i, 1).created_at for i in ids)
        last = max(e.updated_at for e in ended)
    return executions / (last - first).total_seconds()


def scaling(cluster, size):
    n = size["scaling_executions"]
    rate_1 = pool_rate(cluster, 1, n)
    rate_4 = pool_rate(cluster, 4, n)
    return {"executions_per_s_1": round(rate_1, 1), "executions_per_s_4": round(rate_4, 1),
            "scaling_1_to_4": round(rate_4 / rate_1, 2)}


def measure(size, parts, args):
    """The parts asked for, on a cluster of their own."""
    os.environ["ENGINE_SECRET_KEY"] = SECRET
    cluster = benchkit.pgcluster().Cluster(fsync=True)
    try:
        return benchkit.run_parts(parts, (("call", call_costs), ("claim", claims),
                                          ("scaling", scaling)), cluster, size)
    finally:
        cluster.stop()


def report(result, size, quick):
    line = benchkit.table(result, TARGETS)
    benchkit.print_header("PostgreSQL store (fsync on)", result, PARTS, quick)
    if "call_sync_us" in result:
        print(f" one Flow-API call at depth 1 beside a bare INSERT of its "
              f"{result['savepoint_bytes']} bytes and commit, medians of "
              f"{size['call_rounds']} x {size['call_calls']}:")
        line("call, sync", "call_sync_us", "us")
        line("bare commit, sync", "bare_commit_sync_us", "us")
        line("call_sync_ratio", "call_sync_ratio", "x")
        line("call, async", "call_async_us", "us")
        line("bare commit, async (synchronous_commit off)", "bare_commit_async_us", "us")
        line("call_async_ratio", "call_async_ratio", "x")
    if "claim_per_s" in result:
        print(f" claims (each then released), {size['claim_executions']:,} queued:")
        line("1 process", "claim_per_s_1", "/s")
        line(f"{CLAIM_PROCESSES} processes (claim_per_s)", "claim_per_s", "/s")
    if "scaling_1_to_4" in result:
        print(f" worker pool, {size['scaling_executions']} executions x {SCALING_CALLS} "
              f"calls of 5 ms I/O, async, --concurrency {SCALING_CONCURRENCY}:")
        line("1 worker process", "executions_per_s_1", "/s")
        line("4 worker processes", "executions_per_s_4", "/s")
        line("scaling_1_to_4", "scaling_1_to_4", "x")


def main(argv=None):
    benchkit.main(__doc__, PARTS, SIZES, measure, report, argv)


if __name__ == "__main__":
    main()
