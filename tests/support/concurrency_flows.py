"""Flows and connectors for the concurrency tests (tests/runtime/test_concurrency.py):
calls recorded with their thread and times, sleepers with a known wake time, a flow
restored while it sleeps, parents of sleeping children, a flow that raises SystemExit.

`io` waits like I/O (time.sleep releases the GIL) and records (execution, step, pid,
thread, start, end) of each call; `effect` records (tag, pid, time).  Both write to a
list in this process or, in a worker process, to files named by $CONCURRENCY_LOG."""
import os
import threading
import time

hold_entered = threading.Event()      # the hold connector was called
hold_release = threading.Event()      # ... and may return
exit_threads = []                     # the threads `exits` ran on


# -- connectors --------------------------------------------------------------------------

def to_file(path):
    """A sink that appends each record as one line of ``path`` (one write: O_APPEND keeps
    lines whole across threads and processes)."""
    def write(*fields):
        with open(path, "a") as fh:
            fh.write(" ".join(str(f) for f in fields) + "\n")
    return write


def read_lines(path):
    """The records to_file wrote, as tuples of strings."""
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [tuple(line.split()) for line in fh.read().splitlines()]


def io_connector(record, seconds=0.02):
    """The `io` connector: waits ``seconds`` (releasing the GIL), records the call; with
    ``fail_at`` equal to the step, raises instead of returning."""
    def io(execution, step, value, fail_at=None):
        start = time.monotonic_ns()
        time.sleep(seconds)
        end = time.monotonic_ns()
        record(execution, step, os.getpid(), threading.get_ident(), start, end)
        if step == fail_at:
            raise RuntimeError(f"io broke at step {step} of {value}")
        return value * 10 + step
    return io


def effect_connector(record):
    """The `effect` connector: records (tag, pid, time) and returns the tag in capitals."""
    def effect(tag):
        record(tag, os.getpid(), repr(time.time()))
        return tag.upper()
    return effect


def hold():
    """The `hold` connector: blocks until the test releases it."""
    hold_entered.set()
    hold_release.wait(60)
    return "held"


def register(eng):
    """Connectors of a worker process: into files named by $CONCURRENCY_LOG."""
    log = os.environ["CONCURRENCY_LOG"]
    eng.add_connector("io", io_connector(to_file(log), seconds=0.01))
    eng.add_connector("effect", effect_connector(to_file(log + ".effects")))


# -- flows -------------------------------------------------------------------------------

def io_calls(system, this, inputs):
    total = 0
    for step in range(inputs["calls"]):
        total += this.connect("io", execution=this.id, step=step, value=inputs["seed"],
                              fail_at=inputs.get("fail_at"))
    return total


def io_total(seed, calls):
    """What io_calls returns."""
    return sum(seed * 10 + step for step in range(calls))


def holds(system, this, inputs):
    return this.connect("hold")


def sleeps_until(system, this, inputs):
    """Sleeps until inputs["at"]; returns when it woke.  With "tag", an effect before
    and one after the sleep."""
    tag = inputs.get("tag")
    before = this.connect("effect", tag=f"{tag}-before") if tag else None
    this.sleep_until(inputs["at"])
    woke = time.time()
    after = this.connect("effect", tag=f"{tag}-after") if tag else None
    return {"n": inputs.get("n"), "woke": woke, "effects": [before, after]}


def sleeps(system, this, inputs):
    if inputs.get("timeout") is not None:
        this.set_timeout(inputs["timeout"])
    this.sleep(inputs["seconds"])
    return {"woke": time.time()}


def restorable(system, this, inputs):
    this.connect("effect", tag="a")
    this.save_dump("mark")
    this.connect("effect", tag="b")
    if this.restore_count == 0:
        this.sleep(30)
    this.connect("effect", tag="c")
    return this.restore_count


def child_sleeps(system, this, inputs):
    this.sleep(inputs["seconds"])
    return inputs["x"] * 2


def parent_of_sleepers(system, this, inputs):
    seconds = inputs["seconds"]
    first = this.flow(child_sleeps, x=1, seconds=seconds)
    kids = [this.flow(child_sleeps, {"x": x, "seconds": seconds}, wait=False)
            for x in range(2, 2 + inputs["kids"])]
    return [first, *this.wait_for(*kids)]


def exits(system, this, inputs):
    exit_threads.append(threading.current_thread().name)
    raise SystemExit(3)
