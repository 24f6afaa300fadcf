"""Subprocess side of the crash tests: run a corpus flow, die by SIGKILL at a capture,
or restore a snapshot that another process left behind.

    crashrun.py run FLOW K OUT           run fresh; at capture K save it to OUT and SIGKILL
    crashrun.py resume FLOW IN K OUT     restore IN; at the K-th new capture save and SIGKILL
    crashrun.py every FLOW DIR           run fresh, saving every capture as DIR/<k>.snap,
                                         then SIGKILL
    crashrun.py each FLOW DIR            restore every DIR/<k>.snap and run it to the end

A run that reaches the flow's end writes the result to OUT + ".result" (or
DIR/<k>.result) with pickle and exits 0.
"""
import os
import pickle
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402
import carrier  # noqa: E402
from engine import _frames  # noqa: E402


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def write(path, data):
    with open(path + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)


def kill_at(k, out):
    seen = 0

    def hook(snapshot):
        nonlocal seen
        seen += 1
        if seen == k:
            write(out, carrier.dumps(snapshot))
            die()
    return hook


def main(argv):
    mode, flow = argv[0], getattr(corpus, argv[1])
    if mode == "run":
        k, out = int(argv[2]), argv[3]
        corpus.HOOK = kill_at(k, out)
        result = _frames.run(corpus.ROOT, flow)
        write(out + ".result", pickle.dumps(result))
    elif mode == "resume":
        src, k, out = argv[2], int(argv[3]), argv[4]
        with open(src, "rb") as fh:
            snapshot = carrier.loads(fh.read())
        corpus.HOOK = kill_at(k, out)
        result = _frames.resume(corpus.ROOT, snapshot, None)
        write(out + ".result", pickle.dumps(result))
    elif mode == "every":
        directory = argv[2]
        count = 0

        def hook(snapshot):
            nonlocal count
            count += 1
            write(os.path.join(directory, f"{count}.snap"), carrier.dumps(snapshot))
        corpus.HOOK = hook
        _frames.run(corpus.ROOT, flow)
        die()
    elif mode == "each":
        directory = argv[2]
        names = sorted((n for n in os.listdir(directory) if n.endswith(".snap")),
                       key=lambda n: int(n.split(".")[0]))
        for name in names:
            with open(os.path.join(directory, name), "rb") as fh:
                snapshot = carrier.loads(fh.read())
            result = _frames.resume(corpus.ROOT, snapshot, None)
            write(os.path.join(directory, name[:-5] + ".result"), pickle.dumps(result))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
