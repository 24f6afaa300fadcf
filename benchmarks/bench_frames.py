"""Capture and restore cost per frame, against a plain Python call measured in the same run.

Chains of depth 1, 5 and 20 of functions with ~10 locals each; the innermost calls the
frame core's capture directly (as a C-level Flow-API method would).  Every number is the
median of >= 10,000 individually timed runs, minus the timer's own median cost.

    python benchmarks/bench_frames.py            # table
    python benchmarks/bench_frames.py --json     # {"capture_us_per_frame": ..., ...}

capture_us_per_frame / restore_us_per_frame in --json are the depth-5 medians divided by 5.
Target: both <= 0.5 us.
"""
import argparse
import json
import statistics
import sys
from time import perf_counter_ns

from engine import _frames

RUNS = 12_000
DEPTHS = (1, 5, 20)
root = _frames.Root()

FRAME_LOCALS = """
    d = a + 1
    e = [a, b]
    f = "text"
    g = 2.5
    h = None
    i = (a, b)
    j = {"k": a}
    k = b * 2
"""
_SOURCE = []
for _name, _tail in (("capture_leaf", "    return timed_captures(c)\n"),
                     ("restore_leaf", "    return capture(root)\n"),
                     ("plain_leaf", "    return c\n")):
    _SOURCE.append(f"def {_name}_0(a, b, c):\n{FRAME_LOCALS}{_tail}")
    for _depth in range(1, 21):
        _SOURCE.append(f"def {_name}_{_depth}(a, b, c):\n{FRAME_LOCALS}"
                       f"    return {_name}_{_depth - 1}(a, b, c)\n")


def timed_captures(runs):
    # runs in the innermost frame of the chain: each capture walks the whole chain
    timings = []
    append = timings.append
    capture = _frames.capture
    for _ in range(runs):
        t0 = perf_counter_ns()
        capture(root)
        t1 = perf_counter_ns()
        append(t1 - t0)
    return timings


namespace = {"timed_captures": timed_captures, "capture": _frames.capture, "root": root}
exec(compile("\n".join(_SOURCE), __file__ + ":generated", "exec"), namespace)


def chain(kind, depth):
    # depth frames in all: the entry function plus depth - 1 below it, leaf included
    return namespace[f"{kind}_{depth - 1}"]


def timer_overhead():
    samples = []
    for _ in range(RUNS):
        t0 = perf_counter_ns()
        t1 = perf_counter_ns()
        samples.append(t1 - t0)
    return statistics.median(samples)


def median_ns(samples, overhead):
    return max(statistics.median(samples) - overhead, 0.0)


def time_calls(func, *args):
    samples = []
    for _ in range(RUNS):
        t0 = perf_counter_ns()
        func(*args)
        t1 = perf_counter_ns()
        samples.append(t1 - t0)
    return samples


def measure(depth, overhead):
    # capture: the timing loop sits below the chain's leaf, so each capture walks
    # depth + 1 frames; report the cost per frame walked, scaled to `depth` frames
    captures = _frames.run(root, chain("capture_leaf", depth), 1, 2, RUNS)
    capture_ns = median_ns(captures, overhead) * depth / (depth + 1)

    snapshot = _frames.run(root, chain("restore_leaf", depth), 1, 2, None)
    assert len(snapshot) == depth
    restore_ns = median_ns(time_calls(_frames.resume, root, snapshot, None), overhead)
    plain_ns = median_ns(time_calls(chain("plain_leaf", depth), 1, 2, None), overhead)
    return capture_ns, restore_ns, plain_ns


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    overhead = timer_overhead()
    rows = {depth: measure(depth, overhead) for depth in DEPTHS}
    capture5, restore5, _ = rows[5]
    if args.json:
        print(json.dumps({
            "capture_us_per_frame": round(capture5 / 5 / 1000, 4),
            "restore_us_per_frame": round(restore5 / 5 / 1000, 4),
            "plain_call_us_per_frame": round(rows[5][2] / 5 / 1000, 4),
            "runs": RUNS,
        }))
        return
    print(f"frame core, CPython {sys.version.split()[0]}, median of {RUNS} runs "
          f"(timer overhead {overhead:.0f} ns subtracted)")
    print(f"{'depth':>5} {'capture/frame':>14} {'restore/frame':>14} {'plain call/frame':>17}"
          f" {'capture/plain':>14} {'restore/plain':>14}")
    for depth, (cap, res, plain) in rows.items():
        print(f"{depth:>5} {cap / depth / 1000:>11.3f} us {res / depth / 1000:>11.3f} us "
              f"{plain / depth / 1000:>14.3f} us {cap / plain:>13.1f}x {res / plain:>13.1f}x")
    print("target: capture and restore <= 0.5 us per frame at depth 5")


if __name__ == "__main__":
    main()
