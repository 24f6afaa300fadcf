"""Workloads of benchmarks/bench_concurrency.py, importable by worker processes (and by
the benchmark's own child process)."""
import time


def calls(system, this, inputs):
    """``inputs["calls"]`` calls of ``inputs["connector"]``: each one is a savepoint."""
    name = inputs["connector"]
    for _ in range(inputs["calls"]):
        this.connect(name)
    return inputs["calls"]


def sleeper(system, this, inputs):
    """Sleeps, then reports how late it woke to the "woke" connector.  The wake time is
    taken just before this.sleep computes its own, so the lateness is over-estimated by
    the microseconds between the two -- never under-estimated."""
    seconds = inputs["seconds"]
    asleep_at = time.time()
    this.sleep(seconds)
    awake_at = time.time()
    this.connect("woke", late=awake_at - (asleep_at + seconds))
    return None


def constant():
    """A connector with no work of its own: what is measured is the engine's part."""
    return 1


def register(eng):
    """Connectors the worker processes need (engine worker --flows concurrency_flows)."""
    eng.add_connector("const", constant)
