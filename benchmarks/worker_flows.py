"""Workload of benchmarks/bench_workers.py, importable by the worker processes."""
import os
from time import perf_counter_ns

WORK_NS = int(float(os.environ.get("BENCH_WORK_US", "50")) * 1000)


def spin(step):
    """A connector doing WORK_NS of CPU work, as a real one would do some."""
    deadline = perf_counter_ns() + WORK_NS
    while perf_counter_ns() < deadline:
        pass
    return step


def flow(system, this, inputs):
    total = 0
    for step in range(inputs["calls"]):
        total += this.connect("spin", step=step)
    return total


def register(eng):
    eng.add_connector("spin", spin)
