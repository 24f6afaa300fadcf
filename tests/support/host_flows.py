"""Flows for tests/workers/test_hosts.py: worker pools presenting different host ids on one
PostgreSQL store.  Each Flow-API call's effect is recorded -- which call, on which host,
process and thread, from when to when -- in a file per process under $HOSTS_EFFECTS."""
import os
import threading
import time

IO_SECONDS = 0.02


def hops(system, this, inputs):
    """Several Flow-API calls: a connector call per step, a log line, and a short sleep
    half-way (parked in memory, lease held)."""
    total = 0
    for step in range(inputs["steps"]):
        total += this.connect("effect", call=f"{this.id}:{step}", value=inputs["seed"] * 10
                              + step)
        if step == inputs["steps"] // 2:
            this.log(f"half-way at {total}")
            this.sleep(0.1)
    return total


def hops_total(seed, steps):
    """What hops returns."""
    return sum(seed * 10 + step for step in range(steps))


def effect(call, value):
    """Waits IO_SECONDS (blocking I/O), then records the call: "call host pid thread
    start end" (ns)."""
    start = time.time_ns()
    time.sleep(IO_SECONDS)
    end = time.time_ns()
    path = os.path.join(os.environ["HOSTS_EFFECTS"], f"{os.getpid()}")
    with open(path, "a") as fh:
        fh.write(f"{call} {os.environ.get('ENGINE_HOST_ID', '-')} {os.getpid()} "
                 f"{threading.get_ident()} {start} {end}\n")
    return value


def register(eng):
    eng.add_connector("effect", effect)


def effects(directory):
    """Every recorded effect: [(execution, step, host, pid, thread, start, end)]."""
    found = []
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as fh:
            for line in fh:
                call, host, pid, thread, start, end = line.split()
                execution, _, step = call.rpartition(":")
                found.append((execution, int(step), host, int(pid), int(thread),
                              int(start), int(end)))
    return found
