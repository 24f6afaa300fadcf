"""Group commit: sync savepoints per second with 1 thread, and with 32 threads each
committing savepoints of its own execution (their commits share transactions and fsyncs),
and the ratio.  Also what bounds it on this machine: an fdatasync of one page of the
store's file system, alone (a sync commit flushes twice: its pages, then its meta page),
and a handoff between two Python threads (every writer whose savepoint a group commits
must be woken once, and take the GIL).

    python benchmarks/bench_group_commit.py            # table
    python benchmarks/bench_group_commit.py --json     # {"savepoints_per_s_1": ..., ...}

Target: group_commit_speedup (32 threads / 1) >= 8.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

from engine import _frames
from engine.store import Store

root = _frames.Root()
THREADS = 32
SECONDS = 2.0


def holder():
    return _frames.capture(root)


def rate(store, threads, seconds=SECONDS):
    """Savepoints per second that ``threads`` threads commit, each to its own execution."""
    record = os.urandom(500)
    codes = [holder.__code__]
    meta = {"kind": "implicit", "name": None, "line": 12, "action": "connect",
            "command": "this.connect('db')", "created_at": 0.0}
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def committer(k):
        execution = {"id": f"t{threads}-{k}", "flow": "bench:flow", "status": "RUNNING",
                     "due": None, "created_at": 0.0, "updated_at": 0.0, "restore_count": 0}
        store.put_execution(execution)
        store.commit_savepoint(execution, meta, record, codes)     # pins: the slow path
        start.wait()
        while not stop.is_set():
            execution["updated_at"] = time.time()
            store.commit_savepoint(execution, meta, record, codes)
            counts[k] += 1

    workers = [threading.Thread(target=committer, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    done = sum(counts)
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join()
    return done / elapsed


def fdatasync_us(directory, runs=200):
    """Median microseconds of writing one 4 KiB page and fdatasync()ing it."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        page = os.urandom(4096)
        samples = []
        for i in range(runs):
            t0 = time.perf_counter_ns()
            os.pwrite(fd, page, (i % 16) * 4096)
            os.fdatasync(fd)
            samples.append(time.perf_counter_ns() - t0)
        return statistics.median(samples) / 1000
    finally:
        os.close(fd)
        os.unlink(path)


def handoff_us(rounds=2000):
    """Median microseconds for one thread to wake another (lock ping-pong, GIL and all)."""
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()

    def other():
        for _ in range(rounds):
            ping.acquire()
            pong.release()

    thread = threading.Thread(target=other)
    thread.start()
    t0 = time.perf_counter()
    for _ in range(rounds):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - t0
    thread.join()
    return elapsed / rounds / 2 * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        with Store(os.path.join(tmp, "store"), durability="sync", map_size=1 << 30) as store:
            one, many = [], []
            for _ in range(3):                   # alternate, so noise hits both alike
                one.append(rate(store, 1))
                many.append(rate(store, THREADS))
        fsync = fdatasync_us(tmp)
    handoff = handoff_us()
    one, many = statistics.median(one), statistics.median(many)
    result = {"savepoints_per_s_1": round(one), f"savepoints_per_s_{THREADS}": round(many),
              "group_commit_speedup": round(many / one, 1),
              "commit_sync_us_1": round(1e6 / one, 1), "fdatasync_us": round(fsync, 1),
              "thread_handoff_us": round(handoff, 1)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"group commit, CPython {sys.version.split()[0]}: sync savepoints (500-byte "
          f"records), each thread its own execution")
    print(f"  1 thread  : {one:9.0f} savepoints/s  ({1e6 / one:.0f} us each)")
    print(f"  {THREADS} threads: {many:9.0f} savepoints/s")
    print(f"  speedup   : {many / one:.1f}   (target >= 8)")
    print(f"  one page written + fdatasync alone: {fsync:.0f} us (a sync commit flushes "
          f"twice)")
    print(f"  one thread waking another: {handoff:.0f} us (each writer in a group is woken "
          f"once)")


if __name__ == "__main__":
    main()
