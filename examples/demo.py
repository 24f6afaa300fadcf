"""savepoint-engine demo: a flow is SIGKILLed in the middle of a loop; a new process
resumes it from its last savepoint, in the embedded store ./.engine.

    python examples/demo.py
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from engine import Engine  # noqa: E402

WORKER = f"""
import sys
sys.path.insert(0, {HERE!r})
import demo_flows
from engine import Engine
with Engine() as eng:
    demo_flows.register(eng)
    if sys.argv[1] == "start":
        ex = eng.start(demo_flows.handler, {{"rows": 5}})
        print(ex.id, flush=True)
    eng.run()
"""


def main():
    calls = os.path.abspath(".engine-demo-calls")
    if os.path.exists(calls):
        os.remove(calls)
    env = dict(os.environ, DEMO_CALLS=calls, DEMO_KILL_AT="row-3")
    print("1. a worker starts the flow; it dies (SIGKILL) in the middle of the loop")
    first = subprocess.run([sys.executable, "-c", WORKER, "start"], env=env,
                           capture_output=True, text=True)
    print(first.stdout.strip().splitlines()[-1])
    exec_id = first.stdout.split()[0]
    print(f"    worker exit status {first.returncode}")

    with Engine() as eng:
        ex = eng.get(exec_id)
        print(f"\n2. execution {ex.id[:12]}... is {ex.status}; its savepoints in {eng.path}:")
        print(f"    {'created at':<12} {'line':>4}  {'action':<10} command")
        for sp in eng.savepoints(exec_id):
            label = sp.kind + (f" '{sp.name}'" if sp.name else "")
            print(f"    {sp.created_at:%H:%M:%S.%f}"[:16] +
                  f" {sp.line:>4}  {sp.action:<10} {sp.command}   ({label}, {sp.size} B)")

    print("\n3. a new process sees the dead worker and resumes at the next instruction")
    env.pop("DEMO_KILL_AT")
    second = subprocess.run([sys.executable, "-c", WORKER, "run"], env=env,
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    with Engine() as eng:
        ex = eng.get(exec_id)
        print(f"    {ex.status}: {ex.output}")
    print("\n4. remote-api calls, by process -- each row once:")
    with open(calls) as fh:
        for line in fh:
            print("    pid", line.rstrip())
    return 0 if ex.status == "ENDED_SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())
