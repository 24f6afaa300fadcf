"""A flow holding generators in every state the savepoint format knows -- not started,
suspended inside a `yield from`, finished, shared by two names -- with two more in its
chain (driven by a for loop and by `yield from`), for the codec's tests and its long fuzz.
Every generator here is finite: a resumed mutation of the record cannot loop forever."""
from engine import _frames

ROOT = _frames.Root()      # run and resume generators_flow under it


def counted():
    for i in range(3):
        yield i
    return "counted"


def delegating():
    got = yield from counted()
    yield got


def paged():
    for _ in range(2):
        yield _frames.capture(ROOT)


def chained():
    yield from paged()


def generators_flow():
    """The frames of a capture inside chained()/paged(); resumed, the second capture's."""
    created = counted()
    finished = counted()
    for _ in finished:
        pass
    suspended = delegating()
    next(suspended)
    shared = [suspended, created, finished]
    for got in chained():
        if type(got) is tuple:
            return got
    return shared
