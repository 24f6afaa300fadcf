"""Subprocess side of the runtime crash tests.

    rt_run.py STORE EFFECTS start FLOW INPUTS_JSON [KILL_AT]   start and run; print the id
    rt_run.py STORE EFFECTS run [KILL_AT]                      run whatever is runnable
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rt_flows  # noqa: E402
from engine import Engine  # noqa: E402


def main(argv):
    store, effects, mode = argv[:3]
    rest = argv[3:]
    kill_at = None
    if mode == "start":
        flow, inputs = rest[0], json.loads(rest[1])
        kill_at = int(rest[2]) if len(rest) > 2 else None
    elif rest:
        kill_at = int(rest[0])
    with Engine(store, durability="async", sleep_max_seconds=0.2) as eng:
        eng.add_connector("effect", rt_flows.effect_recorder(effects, kill_at))
        if mode == "start":
            execution = eng.start(getattr(rt_flows, flow), inputs)
            print(execution.id, flush=True)
        eng.run()


if __name__ == "__main__":
    main(sys.argv[1:])
