"""Connectors of benchmarks/bench_postgres.py's worker pools (engine worker --flows
postgres_flows); the flow is concurrency_flows.calls."""
import time

IO_SECONDS = 0.005


def io():
    """5 ms of blocking I/O (time.sleep releases the GIL, as a socket read does)."""
    time.sleep(IO_SECONDS)


def register(eng):
    eng.add_connector("io", io)
