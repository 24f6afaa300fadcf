"""Several hosts on one PostgreSQL store: worker pools (real `engine worker` processes,
each pool in a process group of its own) presenting different host ids
($ENGINE_HOST_ID).  A host's pool killed whole is resumed by the other once its leases
run out; each pool's metrics show its own workers, `engine stats` every host's.

The hosts are told apart by the host id alone, not by network namespaces: a namespace
separates the network, not the pids or the boot id a lease names its owner by, and
creating one needs privileges (CAP_SYS_ADMIN) a CI container does not have."""
import collections
import json
import os
import signal
import subprocess
import sys

import host_flows
from engine import Engine, Status
from engine.store import Store
from locations import SUPPORT
from scraping import free_port, scrape
from waiting import wait_for

EXECUTIONS, STEPS = 240, 6
LEASE_SECONDS = 3.0


def start_pool(url, host, processes, directory, *, metrics_port=None):
    """`engine worker` presenting ``host``, in a session (and process group) of its own."""
    more = [] if metrics_port is None else ["--metrics-port", str(metrics_port),
                                            "--metrics-host", "127.0.0.1"]
    env = dict(os.environ, PYTHONPATH=SUPPORT, ENGINE_HOST_ID=host,
               HOSTS_EFFECTS=str(directory / "effects"))
    output = open(directory / f"{host}.output", "w+")
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", str(processes), "--path", url,
         "--durability", "sync", "--lease-seconds", str(LEASE_SECONDS),
         "--concurrency", "8", "--flows", "host_flows", *more],
        env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    pool.output = output
    return pool


def output_of(pool):
    pool.output.seek(0)
    return pool.output.read()[-5000:]


def stop(pool):
    """SIGTERM the pool; it must exit cleanly."""
    pool.send_signal(signal.SIGTERM)
    pool.wait(timeout=60)
    assert pool.returncode == 0, output_of(pool)
    pool.output.close()


def kill_host(pool):
    """SIGKILL every process of the pool: the supervisor, its workers, their helpers."""
    os.killpg(pool.pid, signal.SIGKILL)
    pool.wait(timeout=30)
    pool.output.close()


def test_a_host_killed_whole_is_resumed_by_another_after_its_leases_run_out(pg_url,
                                                                            tmp_path):
    (tmp_path / "effects").mkdir()
    with Engine(pg_url, durability="sync") as eng:
        ids = [eng.start(host_flows.hops, {"steps": STEPS, "seed": n}).id
               for n in range(EXECUTIONS)]
    store = Store(pg_url, durability="sync")
    host_a = start_pool(pg_url, "host-a", 2, tmp_path)
    host_b = start_pool(pg_url, "host-b", 2, tmp_path)
    try:
        def done_by(host):
            return sum(1 for e in host_flows.effects(tmp_path / "effects") if e[2] == host)
        # mid-run: both hosts at work, a good part still to do
        assert wait_for(lambda: done_by("host-a") >= 150 and done_by("host-b") >= 1, 120), \
            output_of(host_a)
        kill_host(host_a)
        # what host-a held when it died: only when its leases run out may host-b go on
        held = {}
        for exec_id in ids:
            lease = store.lease(exec_id)
            if lease is not None and lease.owner.host == "host-a":
                held[exec_id] = lease.expires
        assert held, "host-a held nothing when it was killed"
        with Engine(pg_url, durability="sync") as eng:
            assert wait_for(lambda: all(eng.get(i).status == Status.ENDED_SUCCESS
                                        for i in ids), 180), output_of(host_b)
            for n, exec_id in enumerate(ids):
                assert eng.get(exec_id).output == host_flows.hops_total(n, STEPS)
                # sync durability: no committed savepoint was lost -- the seqs run on
                seqs = [sp.seq for sp in eng.savepoints(exec_id)]
                assert seqs == list(range(1, len(seqs) + 1))
    finally:
        if host_a.poll() is None:
            kill_host(host_a)
        stop(host_b)
        store.close()

    calls = collections.defaultdict(list)
    for execution, step, host, pid, thread, start, end in host_flows.effects(
            tmp_path / "effects"):
        calls[execution].append((start, end, step, host, (host, pid, thread)))
    assert set(calls) == set(ids)
    for execution, spans in calls.items():
        spans.sort()
        # nothing ran twice at once: calls from different threads never overlap
        for (s1, e1, _, _, t1), (s2, _, _, _, t2) in zip(spans, spans[1:]):
            assert t1 == t2 or s2 >= e1, f"{execution} ran on {t1} and {t2} at once"
        by_a = [step for _, _, step, host, _ in spans if host == "host-a"]
        by_b = [(start, step) for start, _, step, host, _ in spans if host == "host-b"]
        if execution in held and by_b:
            # host-b went on only once host-a's lease ran out ...
            assert min(by_b)[0] >= held[execution] * 1e9, (execution, held[execution])
            # ... from host-a's last savepoint: at most host-a's last call (done, its
            # savepoint not committed yet) ran again
            assert not by_a or min(step for _, step in by_b) >= max(by_a)
        elif execution in held:             # host-a had made every call: host-b ended it
            assert max(by_a) == STEPS - 1
        # every step ran; again only the one a kill interrupted before its savepoint
        steps = collections.Counter(step for _, _, step, _, _ in spans)
        assert set(steps) == set(range(STEPS))
        assert sum(steps.values()) - STEPS <= (1 if execution in held else 0), steps
    assert sum(1 for spans in calls.values() for s in spans if s[3] == "host-a") >= 150


def test_each_pool_serves_its_own_workers_metrics_and_stats_show_every_host(pg_url,
                                                                            tmp_path):
    (tmp_path / "effects").mkdir()
    with Engine(pg_url, durability="async") as eng:
        for n in range(4):
            eng.start(host_flows.hops, {"steps": 1000, "seed": n})
    port = free_port()
    host_a = start_pool(pg_url, "host-a", 1, tmp_path, metrics_port=port)
    host_b = start_pool(pg_url, "host-b", 2, tmp_path)
    try:
        with Engine(pg_url, durability="async") as eng:
            def hosts():
                return collections.Counter(w["host"] for w in eng.stats()["workers"])
            # this process is a third host: it sees both pools' workers by their reports
            assert wait_for(lambda: hosts() == {"host-a": 1, "host-b": 2}, 60), \
                output_of(host_b)
            # host-a's endpoint: its one worker, busy with the executions it runs
            assert wait_for(lambda: scrape(port).get("engine_workers") == 1 and
                            scrape(port).get("engine_flow_api_calls_per_second", 0) > 0, 60)
            samples = scrape(port)
            assert samples["engine_workers"] == 1
            shown = json.loads(subprocess.run(
                [sys.executable, "-m", "engine", "stats", "--json", "--path", pg_url],
                capture_output=True, text=True, check=True, timeout=60).stdout)
            assert sorted(w["host"] for w in shown["workers"]) == [
                "host-a", "host-b", "host-b"]
            assert samples["engine_worker_busy_fraction"] == samples["engine_busy_fraction"]
            assert samples["engine_savepoint_commit_seconds_count"] > 0
            # host-b dies whole: it stops reporting, and is taken for gone soon after
            kill_host(host_b)
            assert wait_for(lambda: hosts() == {"host-a": 1}, 30)
            assert scrape(port)["engine_workers"] == 1
    finally:
        if host_b.poll() is None:
            kill_host(host_b)
        stop(host_a)
