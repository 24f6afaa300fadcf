"""Claims when a process holds many leases (executions parked in its memory): claim,
next_due and renew_many with 0 and with 10,000 leases held by this live process, in one
run.  Claims must not cost O(leases): recovery reads /proc once per owner and looks only
at the leases that ran out.

    python benchmarks/bench_claims.py            # table
    python benchmarks/bench_claims.py --json     # {"claim_us_0": ..., ...}

Targets: claim and next_due with 10,000 leases held within 2x of with none.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from engine.store import Owner, Store

PARKED = 10_000


def timed_us(func, runs):
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        func()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def measure(store, parked):
    me, other = Owner.current("parked"), Owner.current("claimer")
    now = time.time()
    ids = [f"p{parked}-{i:05d}" for i in range(parked)]
    for exec_id in ids:
        store.put_execution({"id": exec_id, "status": "QUEUED", "due": now - 1})
    while store.claim_many(me, 1000, lease_seconds=3600):
        pass
    # a claim that finds nothing (the idle worker's case), and one that takes one
    empty = timed_us(lambda: store.claim(other), 200)
    due = timed_us(lambda: store.next_due(), 2000)

    def claim_one_queued():
        store.put_execution({"id": "q", "status": "QUEUED", "due": time.time() - 1})
        assert store.claim(other) == "q"
        store.release("q", other, {"id": "q", "status": "ENDED_SUCCESS", "due": None})
    taking = timed_us(claim_one_queued, 200)
    renew = timed_us(lambda: store.renew_many(ids, me, lease_seconds=3600), 5) if ids \
        else 0.0
    for exec_id in ids:
        store.delete_execution(exec_id)
    return {"claim_empty_us": empty, "next_due_us": due, "claim_put_release_us": taking,
            "renew_many_ms": renew / 1000}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        with Store(os.path.join(tmp, "store"), durability="async", map_size=1 << 30) as s:
            none, many = measure(s, 0), measure(s, PARKED)
    result = {}
    for key in none:
        result[f"{key}_0"] = round(none[key], 2)
        result[f"{key}_{PARKED}"] = round(many[key], 2)
    if args.json:
        print(json.dumps(result))
        return
    print(f"claims, CPython {sys.version.split()[0]}: with 0 and {PARKED} leases held by "
          f"this live process (medians)")
    print(f"{'':28} {'0 leases':>10} {f'{PARKED} leases':>14}")
    for key, unit in (("claim_empty_us", "us"), ("next_due_us", "us"),
                      ("claim_put_release_us", "us"), ("renew_many_ms", "ms")):
        print(f"{key:28} {none[key]:>7.1f} {unit} {many[key]:>11.1f} {unit}")
    print(f"renew_many renews all {PARKED} leases in one write transaction")


if __name__ == "__main__":
    main()
