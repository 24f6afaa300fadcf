"""A flow is killed with SIGKILL in the middle of a loop and a new process continues it
from its captured frames -- at the next instruction, with every variable as it was.

    python examples/frames_demo.py

This shows the frame core and the savepoint codec: the frames travel between the two
processes as a savepoint record (msgpack) plus the pinned code it refers to.  Until the
LMDB store lands, they are kept in a temporary file; the product keeps them in ./.engine.
"""
import os
import signal
import subprocess
import sys
import tempfile

from engine import _codec, _frames

root = _frames.Root()
trust = _codec.Trust([__name__])


def save(path, frames):
    record, codes = _codec.encode_snapshot(frames, trust=trust)
    data = _codec.encode_value([record, [_codec.encode_code(code) for code in codes]])
    with open(path + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)
    return len(record)


def load(path):
    with open(path, "rb") as fh:
        record, pinned = _codec.decode_value(fh.read())
    codes = {}
    for blob in pinned:
        code = _codec.decode_code(blob)
        codes[_codec.fingerprint(code)] = code
    return _codec.decode_snapshot(record, codes, trust=trust)


def savepoint(label):
    """What a Flow-API call does: capture the flow's frames (here: into a file)."""
    frames = _frames.capture(root)
    if type(frames) is tuple:
        size = save(os.environ["DEMO_SNAPSHOT"], frames)
        print(f"  [pid {os.getpid()}] savepoint '{label}': {len(frames)} frames, "
              f"{size} bytes, innermost at line {frames[-1].line}")
        if label == os.environ.get("DEMO_KILL_AT"):
            print(f"  [pid {os.getpid()}] SIGKILL")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return label


def fetch(batch):
    rows = [batch * 10 + i for i in range(3)]
    savepoint(f"fetched-{batch}")
    return rows


def handler(batches):
    total = 0
    seen = []
    for batch in range(batches):
        rows = fetch(batch)
        total += sum(rows)
        seen.append(batch)
    return {"total": total, "batches": seen, "pid": os.getpid()}


def child(mode):
    if mode == "run":
        print(f"  [pid {os.getpid()}] running handler(4)")
        print("  result:", _frames.run(root, handler, 4))
    else:
        frames = load(os.environ["DEMO_SNAPSHOT"])
        print(f"  [pid {os.getpid()}] restoring {len(frames)} frames: "
              + " -> ".join(f.code.co_name for f in frames))
        os.environ["DEMO_KILL_AT"] = ""
        print("  result:", _frames.resume(root, frames, None))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, DEMO_SNAPSHOT=os.path.join(tmp, "snapshot"),
                   DEMO_KILL_AT="fetched-2")
        print("1. a worker runs the flow and is killed at the third savepoint")
        first = subprocess.run([sys.executable, __file__, "--child", "run"], env=env)
        print(f"   worker exit status: {first.returncode} (SIGKILL is {-signal.SIGKILL})")
        print("2. a new process restores the last savepoint and continues")
        second = subprocess.run([sys.executable, __file__, "--child", "resume"], env=env)
        print("3. for comparison, a run that is not interrupted")
        env["DEMO_KILL_AT"] = ""
        third = subprocess.run([sys.executable, __file__, "--child", "run"], env=env)
        return second.returncode or third.returncode


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        sys.exit(main())
