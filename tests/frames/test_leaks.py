"""10,000 capture/restore cycles leave the number of live objects flat."""
import gc
import sys

from engine import _frames

root = _frames.Root()


def innermost(label):
    while True:
        try:
            got = _frames.capture(root)
        except KeyError as e:
            got = None if e.args[0] == label else e
        if got is not None:
            return got     # a fresh capture: hand the snapshot out


def middle(label):
    values = [label, {"k": label}, (1, 2.5)]
    for value in values[:1]:
        return innermost(value)


def outer(label):
    cell = label

    def read():
        return cell
    return middle(read())


def counts():
    gc.collect()
    return len(gc.get_objects()), sys.getallocatedblocks()


def cycle(snapshot, n, throw):
    for _ in range(n):
        if throw:
            snapshot = _frames.resume(root, snapshot, KeyError("x"), throw=True)
        else:
            snapshot = _frames.resume(root, snapshot, None)
    return snapshot


def check_flat(throw):
    snapshot = _frames.run(root, outer, "x")
    snapshot = cycle(snapshot, 1000, throw)   # warm caches and specialisation
    objects, blocks = counts()
    snapshot = cycle(snapshot, 10_000, throw)
    objects2, blocks2 = counts()
    assert [f.code.co_name for f in snapshot] == ["outer", "middle", "innermost"]
    assert objects2 - objects < 50, (objects, objects2)
    assert blocks2 - blocks < 200, (blocks, blocks2)


def test_capture_restore_cycles_do_not_leak():
    check_flat(throw=False)


def test_capture_restore_cycles_with_thrown_exceptions_do_not_leak():
    check_flat(throw=True)
