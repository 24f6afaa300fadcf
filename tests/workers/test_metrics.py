"""`engine worker --metrics-port`: a real pool serving Prometheus metrics over HTTP, read
as a scraper would while it runs and parks executions (on LMDB and on PostgreSQL)."""
import os
import signal
import socket
import subprocess
import sys

import concurrency_flows as flows
from engine import Engine
from locations import SUPPORT
from scraping import free_port, scrape
from waiting import wait_for


def test_a_pool_serves_its_metrics_while_it_runs_and_parks_executions(tmp_path, store_path):
    path, port = store_path, free_port()
    with Engine(path, durability="async") as eng:
        busy = [eng.start(flows.io_calls, {"calls": 200, "seed": i}).id for i in range(4)]
        asleep = [eng.start(flows.sleeps, {"seconds": 30}).id for _ in range(5)]
    output = open(tmp_path / "pool-output", "w")
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", "1", "--concurrency", "8",
         "--path", str(path), "--durability", "async", "--flows", "concurrency_flows",
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        env=dict(os.environ, PYTHONPATH=SUPPORT, CONCURRENCY_LOG=str(tmp_path / "log")),
        stdout=output, stderr=subprocess.STDOUT)
    try:
        # the sleepers parked, the others calling: the reports say so
        assert wait_for(lambda: scrape(port).get("engine_executions_parked") == 5 and
                        scrape(port).get("engine_flow_api_calls_per_second", 0) > 0, 60)
        samples = scrape(port)
        assert samples["engine_workers"] == 1
        assert samples["engine_worker_executions_parked"] == 5
        assert 0 < samples["engine_busy_fraction"] <= 1
        assert samples["engine_executions_running"] <= 8
        commits = samples["engine_savepoint_commit_seconds_count"]
        assert commits > 0 and samples["engine_savepoint_commit_seconds_sum"] > 0
        assert samples["engine_savepoint_commit_seconds_bucketle=+Inf"] == commits
        assert samples["engine_savepoint_commit_seconds_bucketle=1e-05"] <= commits
        assert samples["engine_queue_depth"] == 0          # all 9 taken: a free thread each
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(timeout=60)
        output.close()
    assert pool.returncode == 0, (tmp_path / "pool-output").read_text()[-3000:]
    assert scrape(port) == {}                              # stopped with the pool
    with Engine(path, durability="async") as eng:          # the sleepers: back in the store
        assert {eng.get(i).status.value for i in asleep} == {"WAITING"}
        assert all(eng.get(i).status.value in ("QUEUED", "ENDED_SUCCESS") for i in busy)


def test_a_port_in_use_is_one_line_and_a_bad_port_is_refused(store_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "engine", "worker", "-n", "1", "--path",
             store_path, "--metrics-port", str(port), "--metrics-host",
             "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"engine: cannot serve metrics on 127.0.0.1:{port}: [Errno 98] Address already "
        f"in use"]
    proc = subprocess.run([sys.executable, "-m", "engine", "worker", "--metrics-port",
                           "99999"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "must be a port number" in proc.stderr
