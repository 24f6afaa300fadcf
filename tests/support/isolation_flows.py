"""Flows for tests/test_isolation.py: module-level, so that any process resumes them."""


def steps(system, this, inputs):
    """A savepoint per step (this.log), a named one after them ("after-steps"), one more
    at the end: with n=3, savepoints 1-3 are the steps, 4 is "after-steps", 5 the end."""
    done = []
    for i in range(inputs.get("n", 3)):
        this.log("step", i)
        done.append(i)
    this.save_dump("after-steps")
    this.log("end")
    return len(done)


def crashing(system, this, inputs):
    """Savepoints 1 and 2, then the "die" connector: where it ends the process, the
    execution record is older than its newest savepoint (it still says RUNNING)."""
    this.log("one")
    this.log("two")
    this.connect("die")
    this.log("three")
    return "survived"


def waiting(system, this, inputs):
    """Sleeps an hour: WAITING (unloaded past sleep_max_seconds), due in an hour."""
    this.log("going to sleep")
    this.sleep(3600)
    return "woke"


def big(system, this, inputs):
    """Holds a list big enough to be stored as a chunk, across two savepoints."""
    rows = list(range(5000))
    this.log("holding", len(rows))
    this.log("still holding")
    return len(rows)
