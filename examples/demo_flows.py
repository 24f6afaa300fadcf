"""The demo's flow and connector: fetch rows, save a named savepoint, process each row
through a (pretend) remote API."""
import os
import signal

CALLS = os.environ.get("DEMO_CALLS", ".engine-demo-calls")


def remote_api(row):
    """A connector: each call is appended to a log, so repeats would show."""
    if os.environ.get("DEMO_KILL_AT") == row:
        print(f"    [pid {os.getpid()}] killed (SIGKILL) while calling remote-api for {row}",
              flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    with open(CALLS, "a") as fh:
        fh.write(f"{os.getpid()} {row}\n")
    return f"processed {row}"


def handler(system, this, inputs):
    rows = [f"row-{i}" for i in range(inputs["rows"])]
    this.save_dump("with-fetched-data")
    results = []
    for row in rows:
        results.append(this.connect("remote-api", row=row))
        this.log("done", row)
    return results


def register(eng):
    eng.add_connector("remote-api", remote_api)
