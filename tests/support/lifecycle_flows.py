"""Flows for test_lifecycle.py: timeouts while computing or inside a connector, sleepers,
parents with children."""
import threading
import time

entered = threading.Event()      # the block connector was called
release = threading.Event()      # ... and may return


def computes(system, this, inputs):
    this.set_timeout(inputs["timeout"])
    deadline = time.time() + inputs["seconds"]
    rounds = 0
    while time.time() < deadline:      # no Flow-API call for a long while
        rounds += 1
    this.log("computed", rounds)
    return "finished"


def blocks(system, this, inputs):
    this.set_timeout(inputs["timeout"])
    got = this.connect("block")
    this.log("after the connector", got)
    return "finished"


def block():
    entered.set()
    release.wait(60)
    return "released"


def sleeps(system, this, inputs):
    if inputs.get("timeout"):
        this.set_timeout(inputs["timeout"])
    this.sleep(inputs["seconds"])
    this.log("woke")
    return "woke"


def parent(system, this, inputs):
    kids = [this.flow(sleeps, {"seconds": inputs["seconds"]}, wait=False) for _ in range(2)]
    return this.wait_for(*kids)


def logs(system, this, inputs):
    this.log("first", 1)
    this.log("second")
    return this.save_dump("here")


def loads_by_seq(system, this, inputs):
    this.log("start")                         # savepoint 1
    first = this.save_dump()                  # savepoint 2
    if this.restore_count < 2:
        this.load_dump(2 if this.restore_count == 0 else first, by="id")
    return this.restore_count


def register(eng):
    eng.add_connector("block", block)
