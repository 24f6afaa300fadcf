"""Capture and restore cost per generator frame, against plain frames measured in the same run.

A flow frame iterates a chain of generators 1, 3 and 5 deep (each delegates to the next with
`yield from`; the innermost calls the frame core's capture directly), each with ~10
locals, as bench_frames.py's plain chains have.  For the same depth, a chain of plain
functions is measured the same way.  Every number is the median of >= 10,000
individually timed runs, minus the timer's own median cost.

  capture    one capture inside the innermost generator: walks the whole chain
  restore    resume() of the snapshot (the generators left finished, as a flow that is
             unloaded leaves them): puts each frame back and runs the chain to its end,
             as bench_frames.py's restore does
  run        the same chain run fresh, no capture (for scale: it also makes the generators
             and assigns the locals that restore puts back)

    python benchmarks/bench_generators.py            # table
    python benchmarks/bench_generators.py --json     # {"capture_us_per_gen_frame": ...}

The --json per-frame figures are the depth-5 medians divided by 5 (the flow frame
around the chain is in both kinds and counted in neither).
"""
import argparse
import json
import sys

from engine import _frames

# the same timing, the same ~10 locals a frame and the same root as bench_frames.py
from bench_frames import (FRAME_LOCALS, RUNS, median_ns, root, time_calls,
                          timed_captures, timer_overhead)

DEPTHS = (1, 3, 5)
_SOURCE = []
# generators: gen_<kind>_<n> delegates to gen_<kind>_<n-1>; gen_<kind>_0 is the leaf
_GEN_LEAVES = {"captures": "    yield timed_captures(c)\n",
               "restore": "    got = capture(root)\n"
                          "    if type(got) is tuple:\n"
                          "        raise Unwind(got, strip_handlers(root))\n"
                          "    yield got\n",
               "run": "    yield c\n"}
# plain functions: fn_<kind>_<n> calls fn_<kind>_<n-1>
_FN_LEAVES = {"captures": "    return timed_captures(c)\n",
              "restore": "    got = capture(root)\n"
                         "    if type(got) is tuple:\n"
                         "        raise Unwind(got, strip_handlers(root))\n"
                         "    return got\n",
              "run": "    return c\n"}
for _kind in _GEN_LEAVES:
    _SOURCE.append(f"def gen_{_kind}_0(a, b, c):\n{FRAME_LOCALS}{_GEN_LEAVES[_kind]}")
    _SOURCE.append(f"def fn_{_kind}_0(a, b, c):\n{FRAME_LOCALS}{_FN_LEAVES[_kind]}")
    for _depth in range(1, max(DEPTHS)):
        _SOURCE.append(f"def gen_{_kind}_{_depth}(a, b, c):\n{FRAME_LOCALS}"
                       f"    return (yield from gen_{_kind}_{_depth - 1}(a, b, c))\n")
        _SOURCE.append(f"def fn_{_kind}_{_depth}(a, b, c):\n{FRAME_LOCALS}"
                       f"    return fn_{_kind}_{_depth - 1}(a, b, c)\n")
    # the flow frame: iterates the generator chain, or calls the plain one
    _SOURCE.append(f"def drive_gen_{_kind}(depth, c):\n"
                   f"    out = None\n"
                   f"    for out in chains['gen_{_kind}_' + str(depth - 1)](1, 2, c):\n"
                   f"        pass\n"
                   f"    return out\n")
    _SOURCE.append(f"def drive_fn_{_kind}(depth, c):\n"
                   f"    return chains['fn_{_kind}_' + str(depth - 1)](1, 2, c)\n")


chains = {"timed_captures": timed_captures, "capture": _frames.capture, "root": root,
          "Unwind": _frames.Unwind, "strip_handlers": _frames.strip_handlers}
chains["chains"] = chains
exec(compile("\n".join(_SOURCE), __file__ + ":generated", "exec"), chains)


def left_snapshot(drive, depth):
    """The frames of a flow left at its capture (the runtime's unload): generators
    finished, ready to be put back by resume()."""
    try:
        _frames.run(root, drive, depth, None)
    except _frames.Unwind as unwind:
        return unwind.args[0]
    raise AssertionError("the flow did not leave")


def measure(prefix, depth, overhead):
    """(capture, restore, run) in ns for a chain of `depth` generators or functions."""
    drive = chains[f"drive_{prefix}_captures"]
    # the timing loop sits in the leaf: each capture walks the flow frame, the chain and
    # timed_captures itself; count the chain's share
    captures = drive_in_flow(drive, depth)
    capture_ns = median_ns(captures, overhead) * depth / (depth + 2)
    snapshot = left_snapshot(chains[f"drive_{prefix}_restore"], depth)
    assert len(snapshot) == depth + 1
    restore_ns = median_ns(time_calls(_frames.resume, root, snapshot, None), overhead)
    run_ns = median_ns(time_calls(_frames.run, root, chains[f"drive_{prefix}_run"], depth,
                                  None), overhead)
    return capture_ns, restore_ns, run_ns


def drive_in_flow(drive, depth):
    return _frames.run(root, drive, depth, RUNS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    overhead = timer_overhead()
    rows = {(prefix, depth): measure(prefix, depth, overhead)
            for depth in DEPTHS for prefix in ("gen", "fn")}
    gen5, fn5 = rows[("gen", 5)], rows[("fn", 5)]
    if args.json:
        print(json.dumps({
            "capture_us_per_gen_frame": round(gen5[0] / 5 / 1000, 4),
            "restore_us_per_gen_frame": round(gen5[1] / 5 / 1000, 4),
            "capture_us_per_plain_frame": round(fn5[0] / 5 / 1000, 4),
            "restore_us_per_plain_frame": round(fn5[1] / 5 / 1000, 4),
            "run_us_per_gen_frame": round(gen5[2] / 5 / 1000, 4),
            "run_us_per_plain_frame": round(fn5[2] / 5 / 1000, 4),
            "runs": RUNS,
        }))
        return
    print(f"generator frames vs plain frames, CPython {sys.version.split()[0]}, median of "
          f"{RUNS} runs (timer overhead {overhead:.0f} ns subtracted); per frame of the chain")
    print(f"{'depth':>5} {'kind':>10} {'capture':>11} {'restore':>11} {'run fresh':>11}"
          f" {'capture vs plain':>17} {'restore vs plain':>17}")
    for (prefix, depth), (cap, res, run) in sorted(rows.items(), key=lambda r: r[0][1]):
        plain_cap, plain_res, _ = rows[("fn", depth)]
        kind = "generator" if prefix == "gen" else "plain"
        print(f"{depth:>5} {kind:>10} {cap / depth / 1000:>8.3f} us {res / depth / 1000:>8.3f} us"
              f" {run / depth / 1000:>8.3f} us {cap / plain_cap:>16.2f}x"
              f" {res / plain_res:>16.2f}x")


if __name__ == "__main__":
    main()
