"""Subprocess side of the concurrency tests: another process on the same store.

    concurrency_run.py STORE LOG LEASE start FLOW INPUTS_JSON
        start it, print its id, then eng.run()
    concurrency_run.py STORE LOG LEASE serve EXEC_ID
        a worker (eng.run(until="stopped")) until that execution ended

Connectors as concurrency_flows.register makes them (LOG: $CONCURRENCY_LOG).  `serve`
prints "serving" once its worker thread runs."""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import concurrency_flows  # noqa: E402
from engine import Engine  # noqa: E402
from engine.types import ENDED  # noqa: E402


def main(argv):
    store, log, lease, mode, *rest = argv
    os.environ["CONCURRENCY_LOG"] = log
    with Engine(store, durability="async", lease_seconds=float(lease),
                concurrency=4) as eng:
        concurrency_flows.register(eng)
        if mode == "start":
            flow, inputs = getattr(concurrency_flows, rest[0]), json.loads(rest[1])
            print(eng.start(flow, inputs).id, flush=True)
            eng.run()
            return
        exec_id = rest[0]
        worker = threading.Thread(target=eng.run, kwargs={"until": "stopped"})
        worker.start()
        print("serving", flush=True)
        try:
            while eng.get(exec_id).status not in ENDED:
                time.sleep(0.02)
        finally:
            eng.stop()
            worker.join()


if __name__ == "__main__":
    main(sys.argv[1:])
