"""Flows for the tests of editing a savepoint's locals, diffing two savepoints and the
console on one (tests/runtime/test_edit.py, tests/cli/test_edit_cli.py,
tests/ui/test_edit_page.py): the seeds' example with a path computed wrongly, locals in
outer frames, cells closures share, a value two locals share, a loop."""


def seed_wrong_path(system, this, inputs):
    # the seeds' example with a twist: the upload path is computed wrongly
    data = this.connect("database", fetch="SELECT * FROM data")["result"]
    path = "/" + "up" + "lode"
    this.save_dump("with-fetched-data")
    response = this.connect("remote-api", method="post", path=path, json=data)
    return {"uploaded": len(data), "status": response}


def wrong_limit(system, this, inputs):
    limit = inputs.get("limit", -1) if inputs else -1     # a wrong value
    label = "limit"
    this.save_dump("checked")
    if limit < 0:
        raise ValueError(f"{label} must be >= 0, not {limit}")
    return {"limit": limit, "label": label}


def summing(system, this, inputs):
    rows = [1, 2, 3]
    total = helper(this, rows)
    this.save_dump("summed")
    return {"total": total, "rows": rows}


def helper(this, rows):
    counted = note(this, len(rows))
    return sum(rows) + 0 * counted


def note(this, n):
    this.save_dump("noted")
    return n


def closure(system, this, inputs):
    limit = 10

    def over(value):
        return value > limit
    this.save_dump("closure")
    return {"limit": limit, "over_5": over(5)}


def counter(system, this, inputs):
    count = 0

    def bump():
        nonlocal count
        count += 1
        this.save_dump("bumped")
        return count
    first = bump()
    return {"first": first, "count": count}


def sharing(system, this, inputs):
    a = [1, 2]
    b = a
    this.save_dump("shared")
    a.append(3)
    return {"a": a, "b": b, "same": a is b}


def looping(system, this, inputs):
    total = 0
    for i in range(4):
        total += i * 10
        this.log(f"at {i}")
    return total


class Left:
    def step(self, this):
        return Right().step(this)


class Right:
    def step(self, this):
        this.save_dump("stepped")
        return "stepped"


def stepping(system, this, inputs):
    return Left().step(this)
