"""Schedules: start a flow at each tick -- every N seconds, or at the times of a 5-field
cron expression (UTC) -- exactly once per tick across every process and machine.

A schedule is a setting ("schedule:NAME").  Each worker's ticker (tick_until_stopped)
looks at them and starts, for each, its latest tick that has come, by an idempotent start
whose id names the schedule and the tick: of the workers racing to start a tick, one
creates its execution and the others find it (the tick and the start are one commit).
Only the latest tick is started, so a pool that was down catches up with one start, not
one per tick it missed.
"""
import dataclasses
import datetime
import logging
import math
import re
import time
from typing import Any

from engine.errors import StoreUnavailable
from engine.flows import flow_name

log = logging.getLogger("engine.schedules")

PREFIX = "schedule:"
TICK_LOOK_SECONDS = 0.2      # how often a ticker looks, at most (and at each tick's time)
# a schedule's name: what an execution id (engine.lifecycle) takes, with room for the tick
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A schedule: ``flow`` started at each tick with ``inputs``; ``every`` seconds
    (from ``since``, the time it was made) or ``cron``."""
    name: str
    flow: str
    every: float | None
    cron: str | None
    inputs: Any
    since: float

    def latest_tick(self, now: float) -> float | None:
        """The UNIX time of its latest tick at or before ``now`` (after ``since``), or
        None if none has come yet."""
        if self.every is not None:
            count = math.floor((now - self.since) / self.every)
            return None if count < 1 else self.since + count * self.every
        from croniter import croniter
        # cron ticks are whole minutes: the latest before the next second is <= now
        after = datetime.datetime.fromtimestamp(math.floor(now) + 1, datetime.timezone.utc)
        tick = croniter(self.cron, after).get_prev(float)
        return tick if tick > self.since else None

    def next_tick(self, now: float) -> float:
        """The UNIX time of its first tick after ``now``."""
        if self.every is not None:
            return self.since + (math.floor((now - self.since) / self.every) + 1) * self.every
        from croniter import croniter
        moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        return croniter(self.cron, moment).get_next(float)

    def execution_id(self, tick: float) -> str:
        """The id of the execution that tick starts (the same in every process)."""
        moment = datetime.datetime.fromtimestamp(tick, datetime.timezone.utc)
        return f"{self.name}@{moment:%Y%m%dT%H%M%S}"


def check_name(name):
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"schedule name {name!r} is not allowed: 1 to 64 characters, "
                         f"letters, digits and . _ : -, starting with a letter or digit")


def new_schedule(name, flow, every, cron, inputs, now=None) -> Schedule:
    """A Schedule from what eng.schedule was given; ValueError naming what is wrong."""
    check_name(name)
    if (every is None) == (cron is None):
        raise ValueError("schedule takes one of every=SECONDS or cron=EXPRESSION")
    if every is not None and (isinstance(every, bool) or
                              not isinstance(every, (int, float)) or
                              not 1 <= every < float("inf")):
        raise ValueError(f"schedule every= takes a number of seconds >= 1, not {every!r}")
    if cron is not None:
        from croniter import croniter
        if not isinstance(cron, str) or len(cron.split()) != 5 or \
                not croniter.is_valid(cron):
            raise ValueError(f"schedule cron= takes a 5-field cron expression "
                             f"(minute hour day month weekday), not {cron!r}")
    return Schedule(name, flow_name(flow), None if every is None else float(every),
                    cron, inputs, time.time() if now is None else now)


def from_setting(name, value) -> Schedule:
    return Schedule(name=name[len(PREFIX):], **value)


def to_setting(schedule: Schedule) -> tuple[str, dict]:
    value = dataclasses.asdict(schedule)
    del value["name"]
    return PREFIX + schedule.name, value


def tick_until_stopped(eng):
    """A worker's ticker: start each schedule's latest tick that has come (once: the
    start is idempotent), until the engine stops."""
    started = {}                 # schedule name -> the latest tick started from here
    while True:
        now = time.time()
        wait = TICK_LOOK_SECONDS
        try:
            for schedule in eng.schedules():
                tick = schedule.latest_tick(now)
                if tick is not None and started.get(schedule.name) != (schedule, tick):
                    eng.start(schedule.flow, schedule.inputs,
                              id=schedule.execution_id(tick))
                    started[schedule.name] = (schedule, tick)
                wait = min(wait, schedule.next_tick(now) - time.time())
        except StoreUnavailable as e:       # the ticker outlives its store's outages
            log.warning("schedules: %s", e)
        except Exception:
            log.exception("schedules: a tick failed")
        if eng.wait_for_stop(max(wait, 0.001)):
            return
