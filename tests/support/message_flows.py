"""Flows for test_idempotent_start.py, test_messages.py and test_retries.py: a flow that
waits for an approval message, one that receives with a timeout, one that connects to a
connector failing a given number of times."""
import json
import sys
import time


def noop(system, this, inputs):
    return inputs


def approval(system, this, inputs):
    this.log("waiting for approval")
    value = this.receive("approval")
    this.log("approved", value)
    return value


def receives_many(system, this, inputs):
    got = []
    for _ in range(inputs["count"]):
        got.append(this.receive(inputs.get("topic", "t")))
    return got


def receives_with_timeout(system, this, inputs):
    return this.receive("never", timeout=inputs["timeout"])


def start_many(path, ids, ready_file):
    """A process racing another at start(id=...): wait for the go file, start every id,
    print {id: created_at}."""
    from engine import Engine
    with Engine(path, durability="async") as eng:
        while not __import__("os").path.exists(ready_file):
            time.sleep(0.001)
        seen = {i: eng.start(noop, {"id": i}, id=i).created_at.timestamp() for i in ids}
    print(json.dumps(seen))




def refused_receive_and_sleep(system, this, inputs):
    """Calls whose savepoints are refused (a lock in the locals), the errors caught; then
    the lock goes and the flow receives and sleeps for real."""
    from engine import SavepointError
    import threading
    refused = []
    lock = threading.Lock()
    for call in (lambda: this.receive("t"), lambda: this.sleep(0.01),
                 lambda: this.receive("t", timeout=5)):
        try:
            call()
        except SavepointError:
            refused.append("refused")
    del lock
    this.log("state after", this.receive("t", timeout=0))
    return refused


def hang_once(marker):
    """A connector that, the first time (while ``marker`` does not exist), makes the
    marker and hangs: the test SIGKILLs the process there."""
    import os
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(600)
    return "went on"


def receive_then_hang(system, this, inputs):
    got = this.receive("approval")
    this.connect("hang", marker=inputs["marker"])
    again = this.receive("approval", timeout=0)
    return [got, again]


def hang_then_receive(system, this, inputs):
    this.connect("hang", marker=inputs["marker"])
    return this.receive("approval", timeout=0)


def flaky(counter, failures):
    """Fails the first ``failures`` calls (counted in the file ``counter``, across
    processes), then answers."""
    import os
    calls = os.path.getsize(counter) + 1 if os.path.exists(counter) else 1
    with open(counter, "a") as f:
        f.write("x")
    if calls <= failures:
        raise ConnectionError(f"call {calls} failed")
    return f"answered at call {calls}"


def calls_flaky(system, this, inputs):
    try:
        return this.connect("flaky", **inputs)
    except ConnectionError as e:
        return f"gave up: {e}"


def register(eng):
    import os
    eng.add_connector("hang", hang_once)
    eng.add_connector("flaky", flaky, retries=3,
                      backoff=float(os.environ.get("FLAKY_BACKOFF", "0.05")))


def work(path, until="idle"):
    """A worker process: runs what is runnable until idle (or, "stopped", until killed,
    holding waiting executions in memory)."""
    from engine import Engine
    with Engine(path, durability="sync",
                sleep_max_seconds=0.3 if until == "idle" else 60) as eng:
        register(eng)
        eng.run(until)


if __name__ == "__main__":
    if sys.argv[1] == "work":
        work(*sys.argv[2:])
    else:
        start_many(sys.argv[1], sys.argv[3].split(","), sys.argv[2])
