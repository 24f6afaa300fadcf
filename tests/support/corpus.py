"""Flows covering the Python constructs the frame core must save and restore.

Every flow calls ``sp(value)`` at its capture points.  ``sp`` captures the chain of frames
from the flow's root down to itself and returns ``value`` -- both when it runs fresh and
when its frame is restored (the restored capture call returns whatever was sent in, and
``sp`` still returns its own argument).  Each flow returns a value that records what it
observed, so a run that was captured, killed and restored must return exactly what an
uninterrupted run returns.
"""
import functools

from driving import first_two, send_counts, the_rest
from engine import _frames

ROOT = _frames.Root()
HOOK = None     # set by the harness: called with each fresh snapshot


def sp(value=None):
    got = _frames.capture(ROOT)
    if type(got) is tuple and HOOK is not None:
        HOOK(got)
    return value


# --- helper chains 1..50 deep: distinct functions, generated once -----------------------

_CHAIN_TEMPLATE = '''
def chain_{i}(acc):
    mark = {i} * 3
    acc.append(sp(mark))
    return chain_{j}(acc) + mark
'''
for _i in range(1, 51):   # defines chain_1 .. chain_50 (used below)
    exec(_CHAIN_TEMPLATE.format(i=_i, j=_i - 1))


def chain_0(acc):
    acc.append(sp("bottom"))
    return len(acc)


def flow_chain_1():
    acc = []
    return chain_1(acc), acc  # noqa: F821 (made by exec above)


def flow_chain_5():
    acc = []
    return chain_5(acc), acc  # noqa: F821


def flow_chain_50():
    acc = []
    return chain_50(acc), acc  # noqa: F821


# --- recursion ---------------------------------------------------------------------------

def fib(n):
    if n < 2:
        return sp(n)
    return fib(n - 1) + fib(n - 2)


def flow_recursion():
    return [fib(5), fib(3)]


# --- loops -------------------------------------------------------------------------------

def flow_for_kinds():
    out = []
    for x in [1, 2]:
        out.append(sp(x))
    for x in (3, 4):
        out.append(sp(x))
    for x in range(5, 7):
        out.append(sp(x))
    for k, v in {"a": 1, "b": 2}.items():
        out.append(sp((k, v)))
    for i, x in enumerate("xy"):
        out.append(sp((i, x)))
    for a, b in zip([1, 2], "pq"):
        out.append(sp((a, b)))
    for ch in "hi":
        out.append(sp(ch))
    return out


def flow_nested_loops():
    out = []
    for i in range(3):
        for j in range(i):
            out.append(sp(i * 10 + j))
    return out


def flow_while():
    out = []
    i = 0
    while i < 10:
        i += 1
        if i % 2:
            sp(i)
            continue
        if i > 6:
            out.append(sp("break"))
            break
        out.append(i)
    else:
        out.append("no-break")
    n = 0
    while n < 2:
        n += 1
        out.append(sp(n))
    else:
        out.append(sp("else"))
    return out


# --- exceptions --------------------------------------------------------------------------

def flow_try_blocks():
    out = []
    for fail in (False, True):
        try:
            out.append(sp("try"))
            if fail:
                raise ValueError("boom")
        except ValueError as e:
            out.append(sp(("except", str(e))))
        else:
            out.append(sp("else"))
        finally:
            out.append(sp("finally"))
    return out


def reraiser():
    try:
        raise KeyError("k")
    except KeyError:
        sp("in-except")
        raise


def flow_bare_raise():
    try:
        reraiser()
    except KeyError as e:
        return ["caught", repr(e)]
    return ["not caught"]


def raises_after(x):
    sp(x)
    raise LookupError(f"after {x}")


def flow_raise_caught_outer():
    out = []
    try:
        raises_after(1)
    except LookupError as e:
        out.append(str(e))
    try:
        try:
            raises_after(2)
        finally:
            out.append(sp("outer-finally"))
    except LookupError as e:
        out.append(str(e))
    return out


def flow_exc_info():
    import sys
    out = []
    try:
        raise TypeError("handled")
    except TypeError:
        sp("in-handler")
        out.append(repr(sys.exc_info()[1]))
        try:
            raise IndexError("inner")
        except IndexError:
            sp("nested-handler")
            out.append(repr(sys.exc_info()[1]))
        out.append(repr(sys.exc_info()[1]))
    out.append(repr(sys.exc_info()[1]))
    return out


def flow_stopiteration():
    def stop():
        sp("before-stop")
        raise StopIteration("done")
    try:
        stop()
    except StopIteration as e:
        return ["stopiteration", str(e)]
    return ["no exception"]


# --- with --------------------------------------------------------------------------------

class Manager:
    def __init__(self, name, log, swallow=False):
        self.name = name
        self.log = log
        self.swallow = swallow

    def __enter__(self):
        self.log.append("enter " + self.name)
        return self.name

    def __exit__(self, et, ev, tb):
        self.log.append(f"exit {self.name} {et.__name__ if et else None}")
        return self.swallow


def flow_with():
    log = []
    with Manager("one", log) as a:
        log.append(sp(a))
    with Manager("two", log) as b, Manager("three", log) as c:
        log.append(sp(b + c))
    with Manager("swallow", log, swallow=True):
        log.append(sp("inside"))
        raise RuntimeError("swallowed")
    log.append(sp("after"))
    return log


# --- closures, comprehensions, lambdas -----------------------------------------------------

def flow_closures():
    count = 0
    seen = []

    def bump(step):
        nonlocal count
        count += step
        seen.append(sp(count))
        return count

    bump(1)
    bump(10)
    square = lambda x: sp(x) * x  # noqa: E731
    return count, seen, square(7)


def flow_comprehensions():
    xs = [sp(i) * 2 for i in range(3)]
    d = {k: sp(k + "!") for k in "ab"}
    s = {sp(i % 2) for i in range(3)}
    g = sum(x for x in [1, 2, 3])
    return xs, d, sorted(s), g


# --- calls -------------------------------------------------------------------------------

def with_defaults(a, b=2, *rest, key="k", **extra):
    sp((a, b, rest, key, sorted(extra)))
    return [a, b, list(rest), key, sorted(extra.items())]


def flow_call_shapes():
    out = [with_defaults(1)]
    out.append(with_defaults(1, 3, 4, 5, key="z", q=1))
    args = (7, 8, 9)
    kw = {"key": "kw", "r": 2}
    out.append(with_defaults(*args, **kw))
    out.append(with_defaults(*[0], w=3))
    return out


class Account:
    rate = 2

    def __init__(self, balance):
        self.balance = balance

    def deposit(self, amount):
        self.balance += sp(amount)
        return self.balance

    @classmethod
    def interest(cls, amount):
        return sp(amount) * cls.rate

    @staticmethod
    def fee(amount):
        return sp(amount) - 1


def flow_methods():
    acct = Account(10)
    out = [acct.deposit(5), Account.interest(3), Account.fee(4), acct.interest(1)]
    bound = acct.deposit
    out.append(bound(1))
    return out, acct.balance


# --- expressions ---------------------------------------------------------------------------

def flow_expressions():
    x = 5
    s = f"x={sp(x)} y={x + 1:03d} z={sp('z')!r}"
    cmp = 1 < sp(2) < 3 < sp(x)
    short = (0 and sp("never")) or sp("or") and sp("and")
    nested = [x, (x, {"k": sp(x) + x}), len(str(sp(x * 2)))]
    return s, cmp, short, nested


def flow_print_len():
    # calls to builtins specialise into PRECALL_* forms; the capture sits between them
    items = [3, 1, 2]
    total = len(items) + len(str(sp(len(items))))
    return total, sorted(items), max(items, key=lambda v: -v)


# --- already specialised code ----------------------------------------------------------------

def hot(i, capture):
    a = i * 2
    b = [a, i]
    if capture:
        b.append(sp(len(b)))
    return a + len(b) + abs(-i)


def flow_specialised():
    total = 0
    for i in range(60):
        total += hot(i, i in (55, 59))
    return total


def flow_locals_kinds():
    unbound_later = 1
    del unbound_later
    n = None
    e = b"bytes"
    f = 1.5
    out = sp((n, e, f))
    try:
        unbound_later  # noqa: F821
    except NameError as err:
        out = (out, "unbound", type(err).__name__)
    return out


def flow_partial_arg():
    # functools.partial of a plain function is fine as a *value*; only C code *between*
    # flow frames is refused
    add = functools.partial(lambda a, b: a + b, 10)
    return add(sp(5))


# --- generators ------------------------------------------------------------------------------

def pages(n):
    # calls the Flow-API for each page, as a paging API client would
    for i in range(n):
        yield sp(("page", i))
    return "all pages"


def flow_gen_pages():
    out = []
    for page in pages(3):
        out.append(page)
    return out


def level2(tag):
    first = yield sp((tag, "l2 start"))
    yield (first, sp((tag, "l2 end")))
    return f"{tag} l2 result"


def level1(tag):
    sent = yield sp((tag, "l1"))
    inner = yield from level2(tag)
    second = yield from level2(tag + "'")
    return [sent, inner, second, sp((tag, "l1 return"))]


def top():
    result = yield from level1("a")
    yield ("level1 returned", result)


def flow_gen_yield_from():
    return send_counts(top())


def flow_gen_expression():
    out = []
    for doubled in (sp(i) * 2 for i in range(3)):
        out.append(doubled)
    total = sum(i for i in range(4))          # C code consuming it: no Flow-API inside
    return out, total


def counter(start):
    n = start
    while True:
        step = yield n
        n += 1 if step is None else step


def flow_gen_held_across_calls():
    rows = counter(10)
    out = [next(rows)]
    for i in range(5):
        out.append(sp(i))
        out.append(next(rows))
    out.append(rows.send(100))
    out.append(rows.gi_frame.f_locals["n"])
    return out


def reader(n):
    for i in range(n):
        yield sp(("row", i))
    return "reader done"


def flow_gen_between_helpers():
    gen = reader(5)
    alias = gen
    head = first_two(gen)
    middle = sp("between helpers")
    tail = the_rest(alias)
    return head, middle, tail, alias is gen, next(gen, "exhausted")


def flow_gen_next_until_stop():
    rows = reader(2)
    out = [next(rows), sp("after first"), next(rows)]
    try:
        next(rows)
    except StopIteration as stop:
        out.append(("stop", stop.value))
    out.append(next(rows, "default"))
    return out


def accumulator(log):
    total = 0
    try:
        while True:
            try:
                value = yield total
                total += sp(value)
            except ValueError as e:
                total -= 100
                log.append(sp(("thrown", str(e))))
    finally:
        log.append(("accumulator finally", total))


def flow_gen_send_throw():
    log = []
    acc = accumulator(log)
    out = [next(acc), acc.send(5), acc.send(7), acc.throw(ValueError("bad")), acc.send(1)]
    acc.close()
    return out, log


def closable(log):
    try:
        yield "one"
        yield "two"
    finally:
        log.append(sp("finally ran"))


def flow_gen_closed_after_restore():
    log = []
    gen = closable(log)
    log.append(next(gen))
    log.append(sp("holding a suspended generator"))
    gen.close()
    gen.close()                       # closing again runs nothing
    log.append(gen.gi_frame is None)
    return log


def flow_gen_values():
    created = reader(2)               # not started
    finished = counter(0)
    finished.close()
    mid = counter(1)
    next(mid)
    next(mid)
    box = {"mid": mid, "list": [mid, mid]}

    def bump():
        return next(mid)              # mid in a cell
    held = sp("holding generators")
    return [held, bump(), next(box["mid"]), box["list"][0] is mid, box["list"][1] is mid,
            next(created), next(finished, "finished"), created.gi_frame.f_locals["i"],
            mid.gi_frame.f_locals["n"]]


def handling():
    import sys
    try:
        raise KeyError("in generator")
    except KeyError:
        yield repr(sys.exc_info()[1])
        sp("generator handling")
        yield repr(sys.exc_info()[1])
    yield repr(sys.exc_info()[1])


def flow_gen_exc_info():
    import sys
    out = []
    try:
        raise TypeError("in flow")
    except TypeError:
        for seen in handling():
            out.append(seen)
            out.append(repr(sys.exc_info()[1]))
    return out


FLOWS = sorted(name for name in dir() if name.startswith("flow_"))
