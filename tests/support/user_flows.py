"""Flows for the tests of a new user's paths (test_user_paths.py).  The tests copy this
file as flows.py into a directory of their own and run the `engine` command there, so it
is found the way a user's flows.py is: from the current directory, not PYTHONPATH."""
import os
import time


def greet(system, this, inputs):
    name = inputs.get("name", "world")
    words = []
    for i in range(inputs.get("count", 2)):
        this.log("step", i)
        words.append(f"hello {name} {i}")
    this.save_dump("after-loop")
    if inputs.get("fail") and this.restore_count == 0:
        raise ValueError(f"asked to fail for {name}")
    return " / ".join(words)


def ticking(system, this, inputs):
    """Calls the tick connector every ``pause`` seconds, ``rounds`` times."""
    for i in range(inputs.get("rounds", 1000)):
        this.connect("tick", i=i)
        this.log("tick", i)
        time.sleep(inputs.get("pause", 0.02))
    return "ticked"


def sleeper(system, this, inputs):
    this.sleep(inputs["seconds"])
    this.connect("tick", i="woke")
    return "slept"


def parent(system, this, inputs):
    kids = [this.flow("flows:sleeper", {"seconds": inputs["seconds"]}, wait=False)
            for _ in range(2)]
    return this.wait_for(*kids)


def tick(i):
    """A connector: each call is a line in $TICKS, so the test sees what ran."""
    with open(os.environ["TICKS"], "a") as fh:
        fh.write(f"{i}\n")
    return i


def register(eng):
    eng.add_connector("tick", tick)
