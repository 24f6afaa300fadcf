"""Flows for tests/test_store_faults.py: module-level, so that the subprocesses the tests
run import them by this module's name."""
import os


def counter(system, this, inputs):
    """A few savepoints: a log line and a named dump each step."""
    total = 0
    for i in range(inputs.get("steps", 3)):
        total += i
        this.log(f"step {i}")
        this.save_dump(f"step-{i}")
    return total


def filler(system, this, inputs):
    """``steps`` savepoints that hold ``size`` fresh random bytes each (a local): enough of
    them fill a small disk.  Returns the number of steps done."""
    done = 0
    for i in range(inputs.get("steps", 100)):
        blob = os.urandom(inputs.get("size", 100_000))
        this.save_dump()
        done += 1
    del blob
    return done


def fill_device(directory):
    """Fill the device holding ``directory`` with a file called "filler", to the last
    block it will give."""
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            block = b"x" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                pass
    finally:
        os.close(fd)
