"""Many executions per process: threads for running flows, parked frames for waiting
ones, group commit for sync savepoints (issue 13).  Every ratio compares against a
baseline measured in the same run.

- io_speedup: Flow-API calls/s of one process (eng.run(), async durability) with
  concurrency 64 over concurrency 1; executions of 10 calls each to a connector that
  waits 20 ms in time.sleep (which releases the GIL, as blocking I/O does).  2,000
  executions at concurrency 64; the concurrency-1 baseline runs only 20 (2,000 would take
  400 s) -- its rate does not depend on how many run one after another.
- parked_kib_per_execution, parked_threads, wake_late_p99_ms: 10,000 executions that each
  this.sleep(30) in one process (async durability, concurrency 32, sleep_max_seconds 60:
  they park in memory), run by eng.run() in a child process of their own until all end.
  Memory: the growth of the process's anonymous resident memory (RssAnon: the heap and
  thread stacks, not the mmap'ed LMDB file) from before the run -- engine warmed up, its
  threads started, all 10,000 QUEUED -- to the moment all are parked, divided by the
  executions parked then.  parked_traced_kib_per_execution is the same growth counted by
  tracemalloc (Python allocations only), in a smaller sample (1,000; tracing slows the
  engine, so it is a run of its own, stopped once all are parked).  Threads: alive at
  that moment (/proc/self/status Threads; threading.active_count() beside it), counting
  the benchmark's own sampling thread.  Lateness: how long after its wake time each flow
  runs again (time.time() after the sleep returns minus time.time() before it minus 30).
  If the engine cannot park them all at once (the first wake before the last parks),
  parked_all is false and the memory is per execution parked at the peak.
- group_commit_speedup: sync savepoints/s (durability="sync", one per call of a constant
  connector) with 32 executions at once (concurrency 32) over 1 execution at a time
  (concurrency 1); both run executions of the same length, in alternating rounds so this
  machine's fsync noise hits both alike (medians).
- process_scaling: calls/s of a constant connector (async) with 2 worker processes over 1
  (engine worker -n N --concurrency 32), measured from the first savepoint to the last
  execution's end, so worker start-up is left out.
- call_async_us_depth1: one execution's Flow-API call cost (async, depth 1), measured as
  benchmarks/bench_engine.py measures it (its call_cost).

    python benchmarks/bench_concurrency.py                # table (~2 min on target)
    python benchmarks/bench_concurrency.py --json         # {"io_speedup": ..., ...}
    python benchmarks/bench_concurrency.py --quick        # smaller sizes, to try it
    python benchmarks/bench_concurrency.py --only io,group
    # BENCH_DIR: where the temporary stores go; BENCH_RUN_TIMEOUT: seconds one run may take

Targets: io_speedup >= 40; parked_kib_per_execution <= 8; parked_threads <= concurrency
+ 4; wake_late_p99_ms <= 50; group_commit_speedup >= 8; process_scaling >= 1.6;
call_async_us_depth1 <= 8.
"""
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchkit  # noqa: E402
import concurrency_flows  # noqa: E402
from engine import Engine, Status  # noqa: E402
from engine.store import Store  # noqa: E402

PARTS = ("io", "parked", "group", "process", "call")
SIZES = {   # full run, and --quick
    "io_calls": (10, 10), "io_executions_1": (20, 5), "io_executions_64": (2000, 200),
    "parked": (10_000, 1000), "parked_seconds": (30.0, 5.0), "parked_traced": (1000, 200),
    "group_rounds": (3, 1), "group_calls": (200, 50),
    "process_executions": (400, 100), "process_calls": (500, 50),
    "call_calls": (20_000, 5000),
}
IO_WAIT_SECONDS = 0.02
WORKER_CONCURRENCY = 32
POOL_MAP_BYTES = 256 << 20       # the 200,000 savepoints of a pool run take ~105 MB
PARKED_CONCURRENCY = 32          # the engine's default, said explicitly
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_TIMEOUT", 600))   # one eng.run() or pool run
PARKED_CHILD_TIMEOUT = 900.0     # the 10,000 sleepers: ~40 s on target, minutes if claims are slow

TARGETS = {"io_speedup": ">= 40", "parked_kib_per_execution": "<= 8",
           "parked_threads": f"<= {PARKED_CONCURRENCY + 4}", "wake_late_p99_ms": "<= 50",
           "group_commit_speedup": ">= 8", "process_scaling": ">= 1.6",
           "call_async_us_depth1": "<= 8"}


def timed_run(eng, timeout=RUN_TIMEOUT):
    """eng.run() until idle, stopped (and TimeoutError raised) past ``timeout``; its wall
    seconds."""
    timer = threading.Timer(timeout, eng.stop)
    timer.daemon = True
    t0 = time.perf_counter()
    timer.start()
    try:
        eng.run()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - t0
    if eng.stopping:
        raise TimeoutError(f"eng.run() still running after {timeout:.0f} s; stopped")
    return seconds


def run_calls(path, *, durability, concurrency, executions, calls, connector, func):
    """Start ``executions`` of concurrency_flows.calls, run them all; calls per second
    over eng.run()'s wall time (the starts are not timed)."""
    with Engine(path, durability=durability, concurrency=concurrency) as eng:
        eng.add_connector(connector, func)
        for _ in range(executions):
            eng.start(concurrency_flows.calls, {"calls": calls, "connector": connector})
        seconds = timed_run(eng)
        ended = len(eng.executions(status=Status.ENDED_SUCCESS))
        done = eng.counters().calls
    if ended != executions or done != executions * calls:
        raise RuntimeError(f"{ended} of {executions} executions ended, {done} calls of "
                           f"{executions * calls}")
    return done / seconds


# -- io_speedup ------------------------------------------------------------------------
def wait_io():
    time.sleep(IO_WAIT_SECONDS)


def io_rates(tmp, size):
    common = dict(durability="async", calls=size["io_calls"], connector="wait", func=wait_io)
    rate_1 = run_calls(os.path.join(tmp, "io-1"), concurrency=1,
                       executions=size["io_executions_1"], **common)
    rate_64 = run_calls(os.path.join(tmp, "io-64"), concurrency=64,
                        executions=size["io_executions_64"], **common)
    return {"io_calls_per_s_1": round(rate_1, 1), "io_calls_per_s_64": round(rate_64, 1),
            "io_speedup": round(rate_64 / rate_1, 1)}


# -- parked executions (in a child process: a clean heap and thread count) --------------
def proc_status():
    """(RssAnon KiB, Threads) of this process."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["RssAnon"][0]), int(fields["Threads"][0])


def parked_child(path, n, seconds, traced):
    """Run in a fresh process: warm the engine up, start ``n`` sleepers, run them, and
    print one JSON object of what was measured.  ``traced``: count with tracemalloc and
    stop once all are parked (memory only)."""
    import gc
    import tracemalloc

    lateness = []
    with Engine(path, durability="async", concurrency=PARKED_CONCURRENCY) as eng:
        eng.add_connector("woke", lambda late: lateness.append(late))
        eng.add_connector("wait", wait_io)
        # warm-up: every pool thread started, the sleep-park-wake path run once
        for _ in range(PARKED_CONCURRENCY * 2):
            eng.start(concurrency_flows.calls, {"calls": 2, "connector": "wait"})
        for _ in range(PARKED_CONCURRENCY):
            eng.start(concurrency_flows.sleeper, {"seconds": 0.05})
        eng.run()
        lateness.clear()

        t_start = time.perf_counter()
        for _ in range(n):
            eng.start(concurrency_flows.sleeper, {"seconds": seconds})
        start_seconds = time.perf_counter() - t_start

        peak = {"parked": 0}
        sampled = threading.Event()

        def sample():
            # polls the counters; keeps the figures of the moment the most were parked
            while not sampled.is_set():
                parked = eng.counters().parked
                if parked > peak["parked"]:
                    rss, threads = proc_status()
                    peak.update(parked=parked, rss_kib=rss, threads=threads,
                                python_threads=threading.active_count(),
                                traced=tracemalloc.get_traced_memory()[0] if traced else 0,
                                at=time.perf_counter() - t_run)
                    if parked == n:
                        sampled.set()
                        if traced:
                            eng.stop()        # the parked go back to the store: run ends
                        return
                sampled.wait(0.05)

        runs_before = eng.counters().executions
        gc.collect()
        if traced:
            tracemalloc.start()
        rss_before, threads_before = proc_status()
        traced_before = tracemalloc.get_traced_memory()[0] if traced else 0
        t_run = time.perf_counter()
        threading.Thread(target=sample, name="bench-sampler", daemon=True).start()
        eng.run()
        run_seconds = time.perf_counter() - t_run
        sampled.set()
        # an execution dropped from memory (its lease lost) and resumed from the store
        # counts twice
        runs = eng.counters().executions - runs_before
        if traced:
            tracemalloc.stop()
    parked = peak["parked"]
    result = {"n": n, "seconds": seconds, "parked_peak": parked, "parked_all": parked == n,
              "start_seconds": start_seconds, "run_seconds": run_seconds,
              "park_peak_at_seconds": peak.get("at"), "threads_before": threads_before,
              "runs": runs}
    if parked:
        result.update(kib_per_execution=(peak["rss_kib"] - rss_before) / parked,
                      traced_kib_per_execution=(peak["traced"] - traced_before) / 1024 / parked,
                      threads=peak["threads"], python_threads=peak["python_threads"])
    if not traced:
        if len(lateness) != n:
            raise RuntimeError(f"{len(lateness)} of {n} sleepers woke")
        lateness.sort()
        result.update(late_p50_ms=lateness[n // 2] * 1000,
                      late_p99_ms=lateness[n * 99 // 100] * 1000,
                      late_max_ms=lateness[-1] * 1000,
                      late_over_1s=sum(1 for late in lateness if late > 1.0),
                      early=sum(1 for late in lateness if late < 0))
    print(json.dumps(result))


def run_parked_child(tmp, n, seconds, traced, timeout):
    """parked_child in a fresh interpreter; its JSON, or {"error": why}."""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench_concurrency; "
            f"bench_concurrency.parked_child(sys.argv[1], {n}, {seconds}, {traced})")
    path = os.path.join(tmp, f"parked-{n}-{'traced' if traced else 'rss'}")
    try:
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{n} sleepers not done after {timeout:.0f} s (killed)"}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip()
                else f"exit code {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def parked(tmp, size, timeout):
    main = run_parked_child(tmp, size["parked"], size["parked_seconds"], False, timeout)
    traced = run_parked_child(tmp, size["parked_traced"], 55.0, True, timeout)
    result = {"parked_executions": size["parked"], "parked_sleep_seconds": size["parked_seconds"],
              "parked_concurrency": PARKED_CONCURRENCY}
    if "error" in main:
        result["parked_error"] = main["error"]
    else:
        result.update(
            parked_all=main["parked_all"], parked_peak=main["parked_peak"],
            parked_start_seconds=round(main["start_seconds"], 2),
            parked_peak_at_seconds=round(main["park_peak_at_seconds"] or 0, 2),
            parked_run_seconds=round(main["run_seconds"], 2),
            parked_kib_per_execution=round(main.get("kib_per_execution", float("nan")), 2),
            parked_threads=main.get("threads"),
            parked_python_threads=main.get("python_threads"),
            parked_threads_before=main["threads_before"],
            wake_late_p50_ms=round(main["late_p50_ms"], 2),
            wake_late_p99_ms=round(main["late_p99_ms"], 2),
            wake_late_max_ms=round(main["late_max_ms"], 2),
            wake_late_over_1s=main["late_over_1s"], woke_early=main["early"],
            parked_runs=main["runs"])
    if "error" in traced:
        result["parked_traced_error"] = traced["error"]
    else:
        result.update(
            parked_traced_executions=size["parked_traced"],
            parked_traced_all=traced["parked_all"],
            parked_traced_kib_per_execution=round(
                traced.get("traced_kib_per_execution", float("nan")), 2))
    return result


# -- group_commit_speedup --------------------------------------------------------------
def group_commit(tmp, size):
    rates_1, rates_32 = [], []
    calls = size["group_calls"]
    common = dict(durability="sync", calls=calls, connector="const",
                  func=concurrency_flows.constant)
    for r in range(size["group_rounds"]):
        # one at a time: 4 executions, so the timed run is not a single short one
        rates_1.append(run_calls(os.path.join(tmp, f"group-1-{r}"), concurrency=1,
                                 executions=4, **common))
        rates_32.append(run_calls(os.path.join(tmp, f"group-32-{r}"), concurrency=32,
                                  executions=32, **common))
    rate_1, rate_32 = statistics.median(rates_1), statistics.median(rates_32)
    return {"sync_savepoints_per_s_1": round(rate_1), "sync_savepoints_per_s_32": round(rate_32),
            "group_commit_speedup": round(rate_32 / rate_1, 2)}


# -- process_scaling -------------------------------------------------------------------
def pool_rate(tmp, processes, executions, calls):
    """Calls/s of ``processes`` workers, from the first savepoint to the last end."""
    path = os.path.join(tmp, f"pool-{processes}")
    # room for the whole workload up front: a growth of the map is a one-off pause, not
    # part of a rate (and allocated, with writemap: so only here, where it is needed)
    Store(path, durability="async", map_size=POOL_MAP_BYTES).close()
    with Engine(path, durability="async") as eng:
        ids = [eng.start(concurrency_flows.calls, {"calls": calls, "connector": "const"}).id
               for _ in range(executions)]
    log_path = os.path.join(tmp, f"pool-{processes}.log")   # a file: a pipe would fill up
    with open(log_path, "w") as log:
        pool = subprocess.Popen(
            [sys.executable, "-m", "engine", "worker", "-n", str(processes), "--path", path,
             "--durability", "async", "--concurrency", str(WORKER_CONCURRENCY),
             "--flows", "concurrency_flows"],
            env=dict(os.environ, PYTHONPATH=HERE), stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        with Engine(path, durability="async") as eng:
            while len(eng.executions(status=Status.ENDED_SUCCESS)) < executions:
                if pool.poll() is not None:
                    with open(log_path) as log:
                        tail = log.read().strip()[-500:]
                    raise RuntimeError(f"worker pool exited ({pool.returncode}): {tail}")
                if time.monotonic() > deadline:
                    statuses = collections.Counter(e.status.value for e in eng.executions())
                    with open(log_path) as log:
                        tail = log.read().strip()[-300:]
                    raise TimeoutError(f"{processes} workers: not done after "
                                       f"{RUN_TIMEOUT:.0f} s: {dict(statuses)}; log: {tail}")
                time.sleep(0.5)                 # poll rarely: this process shares the cores
            first = min(eng.savepoint(i, 1).created_at for i in ids)
            last = max(eng.get(i).updated_at for i in ids)
    finally:
        if pool.poll() is None:
            pool.send_signal(signal.SIGTERM)
            try:
                pool.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pool.kill()
                pool.wait()
    return executions * calls / (last - first).total_seconds()


def process_scaling(tmp, size):
    args = (size["process_executions"], size["process_calls"])
    rate_1 = pool_rate(tmp, 1, *args)
    rate_2 = pool_rate(tmp, 2, *args)
    return {"pool_calls_per_s_1": round(rate_1), "pool_calls_per_s_2": round(rate_2),
            "process_scaling": round(rate_2 / rate_1, 2)}


# -- call_async_us_depth1 --------------------------------------------------------------
def call_cost(tmp, size):
    import bench_engine
    us, _ = bench_engine.call_cost(tmp, "async", 1, size["call_calls"])
    return {"call_async_us_depth1": round(us, 2)}


def measure(size, parts, args):
    """The parts asked for, in a temporary directory."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        return benchkit.run_parts(
            parts, (("io", io_rates), ("group", group_commit), ("call", call_cost),
                    ("process", process_scaling),
                    ("parked", lambda tmp, size: parked(tmp, size, args.parked_timeout))),
            tmp, size)


def report(result, size, quick):
    line = benchkit.table(result, TARGETS)
    benchkit.print_header("concurrency", result, PARTS, quick)
    if "io_speedup" in result:
        print(f" I/O connector ({IO_WAIT_SECONDS * 1000:.0f} ms sleep), {size['io_calls']} "
              f"calls per execution, async:")
        line(f"concurrency 1  ({size['io_executions_1']} executions)", "io_calls_per_s_1",
             "calls/s")
        line(f"concurrency 64 ({size['io_executions_64']:,} executions)",
             "io_calls_per_s_64", "calls/s")
        line("io_speedup", "io_speedup", "x")
    if "group_commit_speedup" in result:
        print(f" sync savepoints, constant connector, {size['group_calls']} calls per "
              f"execution, median of {size['group_rounds']} rounds:")
        line("1 execution at a time (concurrency 1)", "sync_savepoints_per_s_1", "/s")
        line("32 at once (concurrency 32)", "sync_savepoints_per_s_32", "/s")
        line("group_commit_speedup", "group_commit_speedup", "x")
    if "process_scaling" in result:
        print(f" worker pool, constant connector, async, {size['process_executions']} "
              f"executions x {size['process_calls']} calls, --concurrency "
              f"{WORKER_CONCURRENCY}:")
        line("1 worker process", "pool_calls_per_s_1", "calls/s")
        line("2 worker processes", "pool_calls_per_s_2", "calls/s")
        line("process_scaling", "process_scaling", "x")
    if "call_async_us_depth1" in result:
        print(" one execution (as bench_engine):")
        line("Flow-API call, async, depth 1", "call_async_us_depth1", "us")
    if "parked_executions" in result:
        print(f" {result['parked_executions']:,} executions sleeping "
              f"{result['parked_sleep_seconds']:.0f} s, async, concurrency "
              f"{result['parked_concurrency']}:")
        if "parked_error" in result:
            print(f"  FAILED: {result['parked_error']}")
        else:
            if not result["parked_all"]:
                print(f"  NOT ALL PARKED AT ONCE: at most {result['parked_peak']:,} "
                      f"(the first woke before the last parked); figures at that peak")
            line("queued in (s)", "parked_start_seconds")
            line("most parked at (s into the run)", "parked_peak_at_seconds")
            line("run took (s)", "parked_run_seconds")
            line("RssAnon growth per parked execution", "parked_kib_per_execution", "KiB")
            line("threads (OS) while parked", "parked_threads", "",
                 f"[Python: {result['parked_python_threads']}, before the run: "
                 f"{result['parked_threads_before']}; one is the benchmark's sampler]")
            line("wake lateness p50", "wake_late_p50_ms", "ms")
            line("wake lateness p99", "wake_late_p99_ms", "ms")
            line("wake lateness max", "wake_late_max_ms", "ms")
            line("woke over 1 s late", "wake_late_over_1s")
            line("woke before their wake time", "woke_early")
            line("runs (> executions: some dropped, resumed)", "parked_runs")
        if "parked_traced_error" in result:
            print(f"  tracemalloc sample FAILED: {result['parked_traced_error']}")
        else:
            line(f"tracemalloc growth per parked ({result['parked_traced_executions']:,})",
                 "parked_traced_kib_per_execution", "KiB")


def main(argv=None):
    benchkit.main(__doc__, PARTS, SIZES, measure, report, argv, options=[
        (("--parked-timeout",), {"type": float, "default": PARKED_CHILD_TIMEOUT,
                                 "help": "seconds the 10,000-sleeper child may take "
                                         "before it is killed"})])


if __name__ == "__main__":
    main()
