"""Workload of benchmarks/bench_pg_wake.py, importable by the worker processes."""
import time


def now():
    return time.time()


def stamp(system, this, inputs):
    """Returns when the worker got to its first Flow-API call."""
    return this.connect("now")


def register(eng):
    eng.add_connector("now", now)
