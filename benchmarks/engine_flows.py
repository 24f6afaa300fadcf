"""Flows for benchmarks/bench_engine.py (a module of its own, so that fresh processes
can import them)."""
from time import perf_counter_ns

TIMINGS = []     # outside the flows' locals, so the savepoints do not carry them


def standard_values():
    """The standard state of the benchmarks: three ints, a float, a 200-char str, a
    100-int list, a 10-key dict, 64 bytes, a list of 5 small dicts, None."""
    return (7, 1 << 40, -12345, 0.6180339887, "savepoint " * 20, list(range(100)),
            {f"key{i}": i * 3 for i in range(10)}, bytes(range(64)),
            [{"id": i, "name": f"row-{i}", "ok": i % 2 == 0} for i in range(5)], None)


def timed_calls(system, this, inputs):
    # the standard state, as 10 locals of the handler
    a, b, c, ratio, text, numbers, table, blob, rows, nothing = standard_values()
    return deeper(this, inputs["depth"] - 1, inputs["calls"])


def deeper(this, depth, calls):
    if depth:
        return deeper(this, depth - 1, calls)
    for _ in range(calls):
        t0 = perf_counter_ns()
        this.connect("const")
        TIMINGS.append(perf_counter_ns() - t0)
    return len(TIMINGS)


def history(system, this, inputs):
    for i in range(inputs["k"]):
        this.connect("const")
    this.sleep(10 ** 9)                  # unloaded: waits for the benchmark to wake it
    this.connect("mark")                 # the next instruction after the resume
    return inputs["k"]
