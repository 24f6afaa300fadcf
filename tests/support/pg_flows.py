"""Flows of the PostgreSQL wake-up and outage tests, importable by their subprocesses."""
import time


def pause(step, value, seconds=0.05):
    """A connector waiting on I/O for a while."""
    time.sleep(seconds)
    return value * 10 + step


def steps(system, this, inputs):
    """Several Flow-API calls; returns sum(seed * 10 + step)."""
    total = 0
    for step in range(inputs["steps"]):
        total += this.connect("pause", step=step, value=inputs["seed"],
                              seconds=inputs.get("seconds", 0.05))
    return total


def stamp(system, this, inputs):
    """Returns when it got to its first Flow-API call."""
    return this.connect("now")


def napper(system, this, inputs):
    """Sleeps, then returns when it woke."""
    this.sleep(inputs["seconds"])
    return this.connect("now")


def register(eng):
    eng.add_connector("pause", pause)
    eng.add_connector("now", time.time)


def gated(system, this, inputs):
    """Three steps; the test's "step" connector holds the second one."""
    first = this.connect("step", tag="a")
    second = this.connect("step", tag="gate")
    return [first, second, this.connect("step", tag="b")]
