"""Worker pools under load: real `engine worker` processes, SIGKILLed, SIGSTOPped and
SIGTERMed, sharing one store (each test runs on LMDB and on PostgreSQL: the store_path
fixture)."""
import collections
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import rt_flows
from engine import Engine, Status
from engine.workers import START_ATTEMPTS
from waiting import wait_for
from locations import SUPPORT



def start_pool(path, log, processes, *, durability="async", lease_seconds=30.0,
               concurrency=None):
    env = dict(os.environ, CHAOS_LOG=str(log), PYTHONPATH=SUPPORT)
    more = [] if concurrency is None else ["--concurrency", str(concurrency)]
    # the pool logs a line per execution: into a file, not a pipe nobody reads until
    # the end (a full pipe would block the workers' logging)
    output = open(f"{log}.pool-output", "w+")
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", str(processes), "--path", str(path),
         "--durability", durability, "--lease-seconds", str(lease_seconds),
         "--flows", "rt_flows", "chaos_connectors", *more],
        env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    pool.output = output
    return pool


def workers_of(supervisor):
    """Live worker pids: children of the supervisor that run the engine."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == supervisor.pid and fields[0] not in ("Z", "X"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if b"spawn_main" in fh.read():       # not the resource tracker
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def stop(pool):
    """SIGTERM the pool; its output once it exited cleanly."""
    pool.send_signal(signal.SIGTERM)
    pool.wait(timeout=60)
    pool.output.seek(0)
    output = pool.output.read()
    pool.output.close()
    assert pool.returncode == 0, output[-5000:]
    return output


def no_overlaps(log, skip=lambda start, end, pid: False):
    """No execution ever ran on two threads or processes at once: its calls' intervals,
    from different threads, never overlap."""
    calls = collections.defaultdict(list)
    for line in log.read_text().splitlines():
        execution, step, pid, thread, start, end = line.split()
        if not skip(int(start), int(end), int(pid)):
            calls[execution].append((int(start), int(end), (int(pid), int(thread))))
    for execution, spans in calls.items():
        spans.sort()
        for (s1, e1, t1), (s2, e2, t2) in zip(spans, spans[1:]):
            assert t1 == t2 or s2 >= e1, f"{execution} ran on {t1} and {t2} at once"
    return calls


def test_chaos_killing_workers_loses_nothing_and_never_runs_one_twice(tmp_path, store_path):
    # 3 workers x 16 threads, a SIGKILL every 0.5-1 s for 30 s
    path, log = store_path, tmp_path / "calls"
    # the crash corpus's constructs flow, run once uninterrupted for its output (on LMDB,
    # whichever store is under test)
    with Engine(tmp_path / "reference", durability="async") as eng:
        eng.add_connector("effect", rt_flows.effect_recorder(tmp_path / "reference-effects"))
        constructs_output = eng.execute(rt_flows.constructs, {"n": 4}).output
    with Engine(path, durability="sync") as eng:
        slow = [eng.start(rt_flows.chaos_flow, {"steps": 16, "seed": i}).id
                for i in range(150)]
        corpus = [eng.start(rt_flows.constructs, {"n": 4}).id for _ in range(50)]
    pool = start_pool(path, log, 3, durability="sync", lease_seconds=5, concurrency=16)
    kills = 0
    try:
        assert wait_for(lambda: len(workers_of(pool)) == 3, 30)
        end = time.time() + 30
        rng = random.Random(7)
        with Engine(path, durability="sync") as eng:
            while time.time() < end:                # a kill every 0.5-1 s for 30 s
                time.sleep(rng.uniform(0.5, 1.0))
                victims = workers_of(pool)
                if victims:
                    os.kill(rng.choice(victims), signal.SIGKILL)
                    kills += 1
            assert wait_for(lambda: all(eng.get(i).status == Status.ENDED_SUCCESS
                                        for i in slow + corpus), 120)
            for n, exec_id in enumerate(slow):
                assert eng.get(exec_id).output == sum(n * 10 + step for step in range(16))
            for exec_id in corpus:
                assert eng.get(exec_id).output == constructs_output
            for exec_id in slow + corpus:
                # sync durability: no committed savepoint was lost -- the seqs run on
                seqs = [sp.seq for sp in eng.savepoints(exec_id)]
                assert seqs == list(range(1, len(seqs) + 1))
    finally:
        stop(pool)
    assert kills >= 25
    calls = no_overlaps(log)
    assert len(calls) == 150


def test_sigterm_stops_the_pool_cleanly_and_nothing_stays_claimed(tmp_path, store_path):
    path, log = store_path, tmp_path / "calls"
    with Engine(path, durability="async") as eng:
        ids = [eng.start(rt_flows.chaos_flow, {"steps": 30, "seed": i}).id for i in range(6)]
    pool = start_pool(path, log, 2)
    assert wait_for(lambda: log.exists() and len(log.read_text().splitlines()) > 10, 60)
    stop(pool)
    with Engine(path, durability="async") as eng:
        statuses = {eng.get(i).status for i in ids}
        assert Status.RUNNING not in statuses
        assert all(eng._store.lease(i) is None for i in ids)
        assert any(eng.get(i).status == Status.QUEUED for i in ids)
        eng.add_connector("slow", rt_flows.slow_recorder(str(log), 0.0))
        eng.run()
        assert {eng.get(i).status for i in ids} == {Status.ENDED_SUCCESS}
        assert [eng.get(i).output for i in ids] == [
            sum(n * 10 + s for s in range(30)) for n in range(6)]
    no_overlaps(log)


def test_a_hung_worker_loses_its_execution_when_the_lease_expires(tmp_path, store_path):
    path, log = store_path, tmp_path / "calls"
    with Engine(path, durability="async") as eng:
        exec_id = eng.start(rt_flows.chaos_flow, {"steps": 60, "seed": 1}).id
    pool = start_pool(path, log, 2, lease_seconds=1.0)
    try:
        assert wait_for(lambda: log.exists() and log.read_text(), 60)
        with Engine(path, durability="async") as eng:
            holder = eng._store.lease(exec_id).owner.pid
            os.kill(holder, signal.SIGSTOP)                 # hung
            stopped = time.time_ns()
            assert wait_for(lambda: (eng._store.lease(exec_id) is not None and
                                     eng._store.lease(exec_id).owner.pid != holder), 30)
            woken = time.time_ns()
            os.kill(holder, signal.SIGCONT)                 # it wakes up and must back off
            assert wait_for(lambda: eng.get(exec_id).status == Status.ENDED_SUCCESS, 60)
            assert eng.get(exec_id).output == sum(10 + s for s in range(60))
    finally:
        stop(pool)
    spans = [line.split() for line in log.read_text().splitlines()]
    # after waking up, the hung worker started nothing more for it
    assert not [s for s in spans if int(s[2]) == holder and int(s[3]) > woken]
    # the one call it was in the middle of when it hung straddles the hang; every
    # other call of the execution ran in one process at a time
    no_overlaps(log, skip=lambda start, end, pid: pid == holder and start < stopped < end)


def test_a_running_pool_picks_up_a_restore_from_outside_and_reports_stats(tmp_path,
                                                                          store_path):
    path, log = store_path, tmp_path / "calls"
    with Engine(path, durability="async") as eng:
        exec_id = eng.start(rt_flows.chaos_flow, {"steps": 3, "seed": 2}).id
    pool = start_pool(path, log, 2)
    try:
        with Engine(path, durability="async") as eng:
            assert wait_for(lambda: eng.get(exec_id).status == Status.ENDED_SUCCESS, 60)
            first = eng.savepoints(exec_id)[0]
            eng.restore(exec_id, first.id)
            assert wait_for(lambda: eng.get(exec_id).status == Status.ENDED_SUCCESS and
                            eng.get(exec_id).restore_count == 1, 60)
            assert eng.get(exec_id).output == sum(20 + s for s in range(3))
            assert wait_for(lambda: len(eng.stats()["workers"]) == 2, 10)
            stats = eng.stats()
            assert stats["queue_depth"] == 0
            assert {"pid", "busy_fraction", "calls_per_s", "executions_per_s"} <= \
                set(stats["workers"][0])
    finally:
        stop(pool)


def test_a_closure_connector_cannot_be_sent_to_workers(store_path):
    with Engine(store_path, durability="async") as eng:
        eng.add_connector("inline", lambda: 1)
        with pytest.raises(ValueError, match="cannot be sent to worker processes"):
            eng.work(processes=1)


@pytest.mark.parametrize("processes", [0, "2", None, 1.5])
def test_a_pool_size_that_is_not_a_whole_number_of_processes_is_refused(tmp_path,
                                                                        processes):
    with Engine(tmp_path / "store", durability="async") as eng:
        with pytest.raises(ValueError, match="processes must be a whole number >= 1"):
            eng.work(processes=processes)


def test_workers_killed_while_they_start_do_not_make_the_pool_give_up(tmp_path, store_path):
    # as many SIGKILLs as START_ATTEMPTS, each while the worker is still starting: not
    # the worker's fault (an operator, a chaos test, the OOM killer), so the pool goes on
    output = open(tmp_path / "pool-output", "w+")
    pool = subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", "1", "--path", store_path,
         "--flows", "slow_start"], env=dict(os.environ, PYTHONPATH=SUPPORT),
        stdout=output, stderr=subprocess.STDOUT, text=True)
    pool.output = output
    try:
        killed = []
        for _ in range(START_ATTEMPTS):
            assert wait_for(lambda: [p for p in workers_of(pool) if p not in killed], 30)
            [victim] = [p for p in workers_of(pool) if p not in killed]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        # the pool says it starts another after the last one too (giving up, it would not)
        assert wait_for(lambda: output.seek(0) == 0 and output.read().count(
            "died (exit status -9); starting another") == START_ATTEMPTS, 30)
    finally:
        said = stop(pool)
    assert "giving up" not in said


def test_a_script_without_a_main_guard_starts_nothing_again_in_its_workers(tmp_path):
    """eng.start + eng.work() at a script's top level: spawn runs the script again in
    each worker it starts.  There the Engine is refused (the worker fails to start, and
    the pool gives up) -- the flow is not started once more per worker."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "unguarded.py").write_text(
        "from engine import Engine\n"
        "import rt_flows\n"
        "eng = Engine('store', durability='async')\n"
        "eng.start(rt_flows.sleeper, {'seconds': 0})\n"
        "eng.work(processes=1)\n")
    proc = subprocess.run([sys.executable, "unguarded.py"], cwd=work, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=SUPPORT))
    assert proc.returncode == 1
    assert "failed to start" in proc.stderr and "giving up" in proc.stderr
    assert "put its top-level code under `if __name__ == \"__main__\":`" in proc.stderr
    with Engine(work / "store") as eng:
        assert len(eng.executions()) == 1
