"""Flows for the runtime tests.  Every flow is a plain `handler(system, this, inputs)`;
`effect` is a connector that records each call it serves, so a test can check that work
before a savepoint is never done twice."""
import json as jsonlib
import os
import signal
import sqlite3
import threading
import urllib.error
import urllib.request
from time import time_ns

from driving import first_two, send_counts, the_rest


def seed_example(system, this, inputs):
    # the page's example: fetch, save a named savepoint, then upload
    data = this.connect("database", fetch="SELECT * FROM data")["result"]
    this.save_dump("with-fetched-data")
    response = this.connect("remote-api", method="post", path="/upload", json=data)
    return {"uploaded": len(data), "status": response}


def straight_line(system, this, inputs):
    a = this.connect("effect", tag="a")
    b = this.connect("effect", tag="b")
    return [a, b]


def helper(this, depth, acc):
    if depth == 0:
        acc.append(this.connect("effect", tag=f"leaf{len(acc)}"))
        return acc
    return helper(this, depth - 1, acc)


def constructs(system, this, inputs):
    n = inputs.get("n", 3) if inputs else 3
    out = []
    for i in range(n):
        try:
            if i == 1:
                raise ValueError(i)
            out.append(this.connect("effect", tag=f"loop{i}"))
        except ValueError:
            out.append(this.connect("effect", tag=f"except{i}"))
        finally:
            this.log("finally", i)
    squares = [this.connect("effect", tag=f"comp{x}") for x in range(2)]
    total = 0

    def add(x):
        nonlocal total
        total += x
        return this.connect("effect", tag=f"closure{x}")
    add(5)
    helper(this, 3, out)
    while total < 8:
        total += 1
        if total % 2:
            continue
        out.append(this.connect("effect", tag=f"while{total}"))
    this.set_output("total", total)
    return {"out": out, "squares": squares, "total": total}


def looping_dump(system, this, inputs):
    this.connect("effect", tag="start")
    sid = this.save_dump("again")
    if this.restore_count < inputs["loads"]:
        this.load_dump("again")
    return {"sid": sid, "restores": this.restore_count}


def restore_loop(system, this, inputs):
    this.save_dump("forever")
    this.load_dump("forever")


def sleeper(system, this, inputs):
    before = this.connect("effect", tag="before")
    this.sleep(inputs["seconds"])
    after = this.connect("effect", tag="after")
    return [before, after]


def child_flow(system, this, inputs):
    if inputs.get("fail"):
        raise RuntimeError("child failed on purpose")
    return inputs["x"] * 2


def parent_flow(system, this, inputs):
    doubled = this.flow(child_flow, x=21)
    handles = [this.flow(child_flow, {"x": i}, wait=False) for i in range(3)]
    results = this.wait_for(*handles)
    try:
        this.flow(child_flow, fail=True)
    except Exception as e:
        failure = str(e)
    return {"doubled": doubled, "results": results, "failure": failure}


def broken(system, this, inputs):
    this.connect("effect", tag="one")
    raise LookupError("no such thing")


def unencodable(system, this, inputs):
    first = this.connect("effect", tag="first")
    fh = open(__file__)
    try:
        this.connect("effect", tag="with-file")
    except Exception as e:
        problem = f"{type(e).__name__}: {e}"
    fh.close()
    del fh
    return {"problem": problem, "first": first}


def in_sorted_key(system, this, inputs):
    try:
        sorted([2, 1], key=lambda v: this.connect("effect", tag=str(v)))
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def db_reader(path, reads_log):
    def database(fetch):
        with open(reads_log, "a") as fh:
            fh.write("read\n")
        con = sqlite3.connect(path)
        try:
            return {"result": [list(row) for row in con.execute(fetch)]}
        finally:
            con.close()
    return database


def uploader(base_url):
    def remote_api(method="get", path="/", json=None):
        body = (jsonlib.dumps(json) if json is not None else "").encode()
        request = urllib.request.Request(base_url + path, data=body, method=method.upper())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"upload failed with HTTP {e.code}") from None
    return remote_api


def effect_recorder(log_path, kill_at=None):
    """The `effect` connector: records each call; with kill_at, this process SIGKILLs
    itself on its kill_at-th call, before doing anything (the call then never happened)."""
    calls = 0

    def effect(tag):
        nonlocal calls
        calls += 1
        if kill_at is not None and calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(log_path, "a") as fh:
            fh.write(tag + "\n")
        return tag.upper()
    return effect


def api_tour(system, this, inputs):
    counter = system.setting("counter")
    counter.set((counter.get() or 0) + 1)
    this.set_output("stage", "set")
    this.sleep_until(__import__("time").time() + 0.01)
    this.set_timeout(60)
    this.clear_timeout()
    if inputs.get("fail"):
        this.error("failed on request")
    return this.success({"id": this.id, "inputs": this.inputs, "count": counter.get()})


async def async_flow(system, this, inputs):
    """Not a flow: test_runtime checks that start refuses it."""
    return inputs


def misuses_the_flow_api(system, this, inputs):
    """One Flow-API call given an argument of the wrong kind (inputs: call, arg)."""
    getattr(this, inputs["call"])(inputs["arg"])
    return "not refused"


def fails_through_a_child(system, this, inputs):
    return this.flow(api_tour, {"fail": True})


def times_out(system, this, inputs):
    this.set_timeout(0.05)
    __import__("time").sleep(0.1)
    this.connect("effect", tag="too-late")
    return "finished"


def long_runner(system, this, inputs):
    this.save_dump("start")
    for i in range(inputs["rounds"]):
        this.connect("effect", tag=f"round{i}")
        __import__("time").sleep(0.02)
    return this.restore_count


def computes_long(system, this, inputs):
    this.connect("effect", tag="begin")
    deadline = __import__("time").time() + inputs["seconds"]
    while __import__("time").time() < deadline:      # no Flow-API call for a while
        pass
    this.connect("effect", tag="end")
    return "done"


def chaos_flow(system, this, inputs):
    total = 0
    for step in range(inputs["steps"]):
        total += this.connect("slow", execution=this.id, step=step, value=inputs["seed"])
    return total


def slow_recorder(log_path, seconds=0.02):
    """The `slow` connector: takes a while (CPU work, holding the GIL), and records
    (execution, step, pid, thread, start, end) when it is done."""
    def slow(execution, step, value):
        start = time_ns()
        deadline = start + int(seconds * 1e9)
        while time_ns() < deadline:
            pass
        end = time_ns()
        with open(log_path, "a") as fh:
            fh.write(f"{execution} {step} {os.getpid()} {threading.get_ident()} {start} "
                     f"{end}\n")
        return value * 10 + step
    return slow


def register_chaos(eng):
    eng.add_connector("slow", slow_recorder(os.environ["CHAOS_LOG"]))
    eng.add_connector("effect", effect_recorder(os.environ["CHAOS_LOG"] + ".effects"))


# --- generators that call the Flow-API, and generators held across calls ----------------------

def api_pages(this, n, kind="page"):
    # a paging client: one connector call per page
    for i in range(n):
        yield this.connect("effect", tag=f"{kind}{i}")
    return "pages done"


def gen_paging(system, this, inputs):
    out = []
    for page in api_pages(this, 3):
        out.append(page)
    out.append([page for page in api_pages(this, 2, "listed")])
    return out


def gen_level2(this, tag):
    sent = yield this.connect("effect", tag=f"{tag}-l2a")
    yield this.connect("effect", tag=f"{tag}-l2b-{sent}")
    return f"{tag} l2 result"


def gen_level1(this, tag):
    sent = yield this.connect("effect", tag=f"{tag}-l1")
    inner = yield from gen_level2(this, tag)
    this.log("level 2 returned", inner)
    return [sent, inner, this.connect("effect", tag=f"{tag}-l1-end")]


def gen_yield_from(system, this, inputs):
    def top():
        result = yield from gen_level1(this, "a")
        yield ("level 1 returned", result)
    return send_counts(top())


def gen_expression(system, this, inputs):
    out = []
    for tagged in (this.connect("effect", tag=f"expr{i}") for i in range(3)):
        out.append(tagged)
    return out


def gen_held(system, this, inputs):
    rows = api_pages(this, 6)
    out = [next(rows)]
    for i in range(5):
        out.append(this.connect("effect", tag=f"between{i}"))
        out.append(next(rows))
    out.append(next(rows, "no more rows"))
    return out


def gen_helpers(system, this, inputs):
    rows = api_pages(this, 5)
    same = rows
    head = first_two(rows)
    middle = this.connect("effect", tag="middle")
    tail = the_rest(same)
    return {"head": head, "middle": middle, "tail": tail, "same": same is rows}


def gen_accumulator(this):
    total = 0
    while True:
        try:
            value = yield total
            total += len(this.connect("effect", tag=f"add{value}"))
        except ValueError as e:
            total -= 100
            this.connect("effect", tag=f"thrown-{e}")


def gen_send_throw(system, this, inputs):
    acc = gen_accumulator(this)
    return [next(acc), acc.send(1), acc.send(22), acc.throw(ValueError("bad")), acc.send(333)]


def gen_closable(this, log):
    try:
        yield "one"
        yield "two"
    finally:
        log.append(this.connect("effect", tag="gen-finally"))


def gen_close_after_restore(system, this, inputs):
    log = []
    gen = gen_closable(this, log)
    log.append(next(gen))
    log.append(this.connect("effect", tag="holding"))
    if inputs and inputs.get("seconds"):
        this.sleep(inputs["seconds"])       # long enough to unload: the flow is left
    log.append(next(gen))
    gen.close()
    gen.close()                             # a closed generator runs nothing more
    return log


def gen_marking(path):
    try:
        yield "one"
        yield "two"
    finally:
        with open(path, "a") as fh:        # not through the Flow-API: seen even if dropped
            fh.write("gen-finally\n")


def gen_parked(system, this, inputs):
    gen = gen_marking(inputs["marker"])
    first = next(gen)
    this.connect("effect", tag="parking")
    this.sleep(inputs["seconds"])           # parked in memory; ended from outside meanwhile
    return [first, next(gen)]


def gen_sleeping(system, this, inputs):
    def pages():
        for i in range(2):
            this.sleep(inputs["seconds"])   # inside the generator: parked or unloaded
            yield this.connect("effect", tag=f"slept{i}")
    return [page for page in pages()]
