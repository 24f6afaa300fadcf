"""eng.schedule: one start per tick across a pool of workers, one catch-up start after the
pool was down; the API, the cron ticks and bad input.  On LMDB and on PostgreSQL
(store_path)."""
import datetime
import math
import os
import signal
import subprocess
import sys
import time

import pytest

import schedule_flows
from engine import Engine, Status
from engine.schedules import Schedule
from locations import SUPPORT
from waiting import wait_for


def start_pool(path, output):
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "-n", "3", "--path", path,
         "--durability", "async", "--flows", "schedule_flows"],
        env=dict(os.environ, PYTHONPATH=SUPPORT), stdout=output, stderr=subprocess.STDOUT)


def stop(pool):
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(60) == 0


def ticks(eng, name):
    """The tick (UNIX seconds) of every execution the schedule started, in order."""
    found = []
    for ex in eng.executions():
        prefix, _, stamp = ex.id.partition("@")
        if prefix == name:
            moment = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%S")
            found.append(int(moment.replace(tzinfo=datetime.timezone.utc).timestamp()))
    return sorted(found)


def test_every_second_on_three_workers_starts_each_tick_once_and_catches_up_once(
        store_path, tmp_path):
    output = open(tmp_path / "pool-output", "w")
    with Engine(store_path, durability="async") as eng:
        eng.schedule("beat", schedule_flows.ticked, every=1, inputs={"n": 1})
        pool = start_pool(store_path, output)
        try:
            assert wait_for(lambda: ticks(eng, "beat"), 60)        # the pool is up
            first = ticks(eng, "beat")[-1]
            time.sleep(5)
            during = [t for t in ticks(eng, "beat") if t > first]
        finally:
            stop(pool)
        assert 4 <= len(during) <= 6, during
        # one execution per tick, and no tick missed while the pool ran
        assert during == list(range(first + 1, first + 1 + len(during)))
        last = ticks(eng, "beat")[-1]
        time.sleep(3)                                  # the pool is down
        restarted = time.time()
        pool = start_pool(store_path, output)
        try:
            assert wait_for(lambda: ticks(eng, "beat")[-1] > last, 60)
        finally:
            stop(pool)
        after = [t for t in ticks(eng, "beat") if t > last]
        # the ticks missed while it was down: one start, the latest of them -- a tick
        # after restarted - 1 (the ticker looks after the restart); ticks() reads whole
        # seconds from the ids, and the ticks fall where the schedule was made (.since),
        # not on whole seconds
        assert after[0] >= math.floor(restarted) - 1 and after[0] - last >= 3
        assert after == list(range(after[0], after[0] + len(after)))
        # each ran with the schedule's inputs (one started as the pool stopped may wait)
        assert all(ex.output == {"n": 1} if ex.status == Status.ENDED_SUCCESS else
                   ex.status == Status.QUEUED for ex in eng.executions())


def test_schedules_are_listed_replaced_and_deleted(store_path):
    with Engine(store_path, durability="async") as eng:
        eng.schedule("a", schedule_flows.ticked, every=60)
        eng.schedule("b", "schedule_flows:ticked", cron="*/5 * * * *", inputs=[1])
        eng.schedule("a", schedule_flows.ticked, every=30)      # replaces it
        found = eng.schedules()
        assert [(s.name, s.flow, s.every, s.cron, s.inputs) for s in found] == [
            ("a", "schedule_flows:ticked", 30.0, None, None),
            ("b", "schedule_flows:ticked", None, "*/5 * * * *", [1])]
        eng.unschedule("a")
        assert [s.name for s in eng.schedules()] == ["b"]
        with pytest.raises(KeyError, match="no schedule named 'a'"):
            eng.unschedule("a")


@pytest.mark.parametrize("name, every, cron, error", [
    ("", 1, None, "schedule name"), ("a b", 1, None, "schedule name"),
    ("x", None, None, "one of every"), ("x", 1, "* * * * *", "one of every"),
    ("x", 0.5, None, "every="), ("x", True, None, "every="),
    ("x", None, "* * * *", "cron="), ("x", None, "61 * * * *", "cron="),
    ("x", None, "* * * * * *", "cron=")])
def test_bad_schedules_are_refused(store_path, name, every, cron, error):
    with Engine(store_path, durability="async") as eng:
        with pytest.raises(ValueError, match=error):
            eng.schedule(name, schedule_flows.ticked, every=every, cron=cron)
        assert eng.schedules() == []


def at(text):
    return datetime.datetime.fromisoformat(text + "+00:00").timestamp()


def test_cron_ticks_are_utc_minutes_and_the_latest_is_the_one_started():
    five = Schedule("c", "m:f", None, "*/5 * * * *", None, since=at("2026-12-01T00:00:30"))
    assert five.latest_tick(at("2026-12-01T00:04:59")) is None     # none since it was made
    assert five.latest_tick(at("2026-12-01T00:05:00")) == at("2026-12-01T00:05:00")
    assert five.latest_tick(at("2026-12-01T00:17:10.5")) == at("2026-12-01T00:15:00")
    assert five.next_tick(at("2026-12-01T00:17:10")) == at("2026-12-01T00:20:00")
    assert five.execution_id(at("2026-12-01T00:15:00")) == "c@20261201T001500"
    every = Schedule("e", "m:f", 2.0, None, None, since=100.5)
    assert every.latest_tick(102.4) is None and every.latest_tick(102.5) == 102.5
    assert every.latest_tick(109.0) == 108.5 and every.next_tick(109.0) == 110.5
