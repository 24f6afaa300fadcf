"""PostgreSQL restarted (pg_ctl restart -m fast: every connection cut) in the middle of a
run of 200 executions by two real worker processes: every execution ends with the right
output and its savepoints in order, and no worker died -- each lost its connections,
connected again and went on."""
import os
import signal
import subprocess
import sys
import time

import pg_flows
from engine import Engine, Status
from locations import SUPPORT
from waiting import wait_for

EXECUTIONS, STEPS = 200, 5


def ended(eng):
    """How many executions ended well (looked at no more than 4 times a second: the
    workers share the cores)."""
    time.sleep(0.25)
    return sum(e.status == Status.ENDED_SUCCESS for e in eng.executions())


def test_a_server_restart_in_the_middle_of_a_run_loses_nothing(pg_url, pg_cluster,
                                                               tmp_path):
    with Engine(pg_url) as eng:
        ids = [eng.start(pg_flows.steps, {"steps": STEPS, "seed": n}).id
               for n in range(EXECUTIONS)]
    output = open(tmp_path / "pool-output", "w+")
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", "2", "--path", pg_url,
         "--concurrency", "8", "--flows", "pg_flows"],
        env=dict(os.environ, PYTHONPATH=SUPPORT), stdout=output,
        stderr=subprocess.STDOUT, text=True)
    try:
        with Engine(pg_url) as eng:
            assert wait_for(lambda: ended(eng) >= 20, 120)
            pg_cluster.restart()
            assert ended(eng) < EXECUTIONS                  # it was in the middle
            assert wait_for(lambda: ended(eng) == EXECUTIONS, 180)
            for n, exec_id in enumerate(ids):
                assert eng.get(exec_id).output == sum(n * 10 + s for s in range(STEPS))
                assert [sp.seq for sp in eng.savepoints(exec_id)] == \
                    list(range(1, STEPS + 1))
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(timeout=60)
        output.seek(0)
        log = output.read()
        output.close()
    assert pool.returncode == 0, log[-5000:]
    assert "lost the connection" in log                   # the restart cut them mid-run
    assert "died" not in log, log[-5000:]                  # and they went on
