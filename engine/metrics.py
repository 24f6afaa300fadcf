"""What a worker pool shows a scaler: Prometheus metrics (`engine worker --metrics-port`).

Each worker reports its figures to the store every second (engine.workers); the pool's
supervisor serves them at /metrics, read from those reports at each scrape: per worker
its busy fraction, executions running and parked, Flow-API calls per second; for the
pool the same summed, the queue depth, and a histogram of savepoint commit latency.
Only this pool's own workers count (a scaler scrapes each pod for its own load; `engine
stats` shows the workers of every host); the queue depth is the store's, shared.
prometheus-client is an extra: pip install 'savepoint-engine[metrics]'.
"""
import os
from bisect import bisect_left

from engine.errors import EngineError

# upper bounds (seconds) of the commit-latency buckets; one more counts what lies above
COMMIT_BUCKETS = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                  0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


class Latencies:
    """A histogram of savepoint commit latencies, in COMMIT_BUCKETS: one bisect and two
    additions per observation, each of which may stand for ``weight`` commits (the
    runtime times a sample).  Threads may race on an increment now and then: metrics,
    not accounts."""
    __slots__ = ("counts", "total")

    def __init__(self):
        self.counts = [0] * (len(COMMIT_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds, weight=1):
        self.counts[bisect_left(COMMIT_BUCKETS, seconds)] += weight
        self.total += seconds * weight


def serve(store, port, host="0.0.0.0"):
    """Serve the metrics of the pool this process supervises over HTTP on ``port`` (a
    thread of this process); returns the server (its shutdown() stops it)."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise EngineError("metrics need prometheus-client: pip install "
                          "'savepoint-engine[metrics]'") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_PoolCollector(store))
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise EngineError(f"cannot serve metrics on {host}:{port}: {e}") from None
    return server


class _PoolCollector:
    """Reads the reports of this process's workers at each scrape."""

    def __init__(self, store):
        self.store = store
        self.supervisor = os.getpid()

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
        from engine import workers          # here: multiprocessing costs every import
        stats = workers.stats(self.store, supervisor=self.supervisor)
        gauges = {
            "busy_fraction": ("engine_worker_busy_fraction",
                              "share of the worker's threads' time spent running flows"),
            "running": ("engine_worker_executions_running", "executions on a thread now"),
            "parked": ("engine_worker_executions_parked",
                       "waiting executions parked in memory now"),
            "calls_per_s": ("engine_worker_flow_api_calls_per_second",
                            "Flow-API calls per second over the last report"),
        }
        for key, (name, text) in gauges.items():
            family = GaugeMetricFamily(name, text, labels=["pid", "index"])
            for worker in stats["workers"]:
                family.add_metric([str(worker["pid"]), str(worker["index"])],
                                  worker.get(key) or 0)
            yield family
        reports = stats["workers"]
        yield GaugeMetricFamily("engine_workers", "live worker processes", len(reports))
        yield GaugeMetricFamily(
            "engine_busy_fraction", "the workers' mean busy fraction",
            sum(w.get("busy_fraction") or 0 for w in reports) / len(reports) if reports else 0)
        for key, name, text in (("running", "engine_executions_running",
                                 "executions on a thread, all workers"),
                                ("parked", "engine_executions_parked",
                                 "executions parked in memory, all workers"),
                                ("calls_per_s", "engine_flow_api_calls_per_second",
                                 "Flow-API calls per second, all workers")):
            yield GaugeMetricFamily(name, text, sum(w.get(key) or 0 for w in reports))
        yield GaugeMetricFamily("engine_queue_depth", "executions due and not running",
                                stats["queue_depth"])
        counts = [0] * (len(COMMIT_BUCKETS) + 1)
        total = 0.0
        for worker in reports:
            for i, n in enumerate((worker.get("commit_counts") or [])[:len(counts)]):
                counts[i] += n
            total += worker.get("commit_seconds") or 0.0
        cumulative, buckets = 0, []
        for bound, n in zip((*map(str, COMMIT_BUCKETS), "+Inf"), counts):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("engine_savepoint_commit_seconds",
                                    "how long savepoint commits took (live workers)",
                                    buckets=buckets, sum_value=total)
