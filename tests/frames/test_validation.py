"""Everything a snapshot holds is validated before it reaches the interpreter: a bad
offset, stack depth, slot count or slot kind is an exception, never a crash."""
import gc
import os
import sys
import types

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import carrier
from engine import _frames

root = _frames.Root()


def take():
    got = _frames.capture(root)
    # keep the state as it stood here: a snapshot refers to the live objects
    return ("fresh", carrier.loads(carrier.dumps(got))) \
        if type(got) is tuple else got


class Guard:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def shapes(n):
    total = 0
    cell = n

    def read():
        return cell
    with Guard():
        for i in range(n):
            try:
                raise KeyError(i)
            except KeyError:
                got = [take() if i == 0 else 0 for _ in [0]][0]
                if type(got) is tuple:
                    return got[1]
                total += i + read() + (got if isinstance(got, int) else 0)
    return total


def snapshot():
    return _frames.run(root, shapes, 2)


def frame_of(snap, name):
    return next(i for i, f in enumerate(snap) if f.code.co_name == name)


def replace(snap, index, **changes):
    f = snap[index]
    fields = dict(func=f.func, code=f.code, offset=f.offset, locals=f.locals, stack=f.stack,
                  exc=f.exc)
    fields.update(changes)
    return snap[:index] + (_frames.Frame(**fields),) + snap[index + 1:]


def test_a_valid_snapshot_resumes():
    snap = snapshot()
    assert [f.code.co_name for f in snap] == ["shapes", "<listcomp>", "take"]
    assert _frames.resume(root, snap, 5) == (0 + 2 + 5) + (1 + 2 + 0)


def kinds_of_stack(snap):
    index = frame_of(snap, "shapes")
    return index, [type(v).__name__ for v in snap[index].stack]


def test_the_stack_holds_what_the_static_table_says():
    snap = snapshot()
    index, kinds = kinds_of_stack(snap)
    # with-exit, for-iterator, previous exception saved by the `except` (None)
    assert kinds == ["method", "range_iterator", "NoneType"]
    assert isinstance(snap[index].exc, KeyError)
    assert len(snap[index].stack) == _frames.stack_table(shapes.__code__)[snap[index].offset]


@pytest.mark.parametrize("offset", [-2, 1, 0, 10**6])
def test_offset_that_is_not_a_call_site(offset):
    snap = snapshot()
    with pytest.raises(ValueError):
        _frames.resume(root, replace(snap, 0, offset=offset))
    assert _frames.resume(root, snap, 0) == 5


def test_stack_depth_that_disagrees_with_the_table():
    snap = snapshot()
    with pytest.raises(ValueError, match="value stack"):
        _frames.resume(root, replace(snap, 0, stack=snap[0].stack[:-1]))
    with pytest.raises(ValueError, match="value stack"):
        _frames.resume(root, replace(snap, 0, stack=snap[0].stack + (1,)))


def test_wrong_number_of_local_slots():
    snap = snapshot()
    with pytest.raises(ValueError, match="local slots"):
        _frames.resume(root, replace(snap, 0, locals=snap[0].locals[:-1]))


def test_cell_slot_without_a_cell():
    snap = snapshot()
    names = shapes.__code__.co_varnames + shapes.__code__.co_cellvars
    slot = list(names).index("cell")
    bad = list(snap[0].locals)
    bad[slot] = 3
    with pytest.raises(ValueError, match="must hold a cell"):
        _frames.resume(root, replace(snap, 0, locals=tuple(bad)))


@pytest.mark.parametrize("position, value, message", [
    (1, 7, "an iterator"),
    (1, _frames.EMPTY, "empty slot"),
    (0, _frames.EMPTY, "empty slot"),
])
def test_stack_items_of_the_wrong_kind(position, value, message):
    snap = snapshot()
    stack = list(snap[0].stack)
    stack[position] = value
    with pytest.raises(ValueError, match=message):
        _frames.resume(root, replace(snap, 0, stack=tuple(stack)))


def test_exception_slots_hold_exceptions():
    snap = snapshot()
    stack = list(snap[0].stack)
    stack[2] = "not an exception"
    with pytest.raises(ValueError, match="exception or None"):
        _frames.resume(root, replace(snap, 0, stack=tuple(stack)))
    with pytest.raises(ValueError, match="handled exception"):
        _frames.resume(root, replace(snap, 0, exc=42))


def test_list_slot_of_a_comprehension_holds_a_list():
    snap = snapshot()
    index = frame_of(snap, "<listcomp>")
    stack = list(snap[index].stack)
    assert isinstance(stack[0], list)
    stack[0] = (1, 2)
    with pytest.raises(ValueError, match="a list"):
        _frames.resume(root, replace(snap, index, stack=tuple(stack)))


def gen():
    yield 1


def test_functions_and_code_objects_are_checked():
    snap = snapshot()
    with pytest.raises(TypeError, match="function"):
        _frames.resume(root, replace(snap, 0, func=len))
    with pytest.raises(TypeError, match="code object"):
        _frames.resume(root, replace(snap, 0, code="code"))
    with pytest.raises(ValueError, match="generator"):
        _frames.resume(root, replace(snap, 0, code=gen.__code__))
    other = compile("x = 1", "<module>", "exec")
    with pytest.raises(ValueError, match="module-level"):
        _frames.resume(root, replace(snap, 0, code=other))
    with pytest.raises(TypeError, match="not a Frame"):
        _frames.resume(root, (snap[0], "frame"))
    with pytest.raises(ValueError, match="at least one"):
        _frames.resume(root, ())


def test_code_that_differs_from_the_snapshot_is_refused_not_run():
    snap = snapshot()

    def elsewhere(n):
        return [n, n, n, n, n]
    with pytest.raises(ValueError):
        _frames.resume(root, replace(snap, 0, code=elsewhere.__code__))


# --- fuzz: mutated snapshots never crash the interpreter --------------------------------------

POOL = [None, 0, 1, -1, "s", b"b", 1.5, (), [], {}, set(), _frames.EMPTY, KeyError("k"),
        ValueError, types.CellType(3), iter([1, 2]), iter(()), range(2), print, Guard()]
values = st.sampled_from(POOL).map(lambda v: iter([1]) if type(v).__name__ == "list_iterator"
                                   else v)


@settings(max_examples=int(os.environ.get("FRAMES_FUZZ_EXAMPLES", 400)), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def resume_a_mutated_snapshot(data):
    snap = carrier.loads(carrier.dumps(snapshot()))
    index = data.draw(st.integers(0, len(snap) - 1))
    f = snap[index]
    code_len = len(f.code.co_code)
    offset = data.draw(st.one_of(st.just(f.offset), st.integers(-4, code_len + 4)))
    stack = list(f.stack)
    locals_ = list(f.locals)
    for _ in range(data.draw(st.integers(0, 3))):
        target = data.draw(st.sampled_from(["stack", "locals", "grow", "shrink"]))
        if target == "stack" and stack:
            stack[data.draw(st.integers(0, len(stack) - 1))] = data.draw(values)
        elif target == "locals" and locals_:
            locals_[data.draw(st.integers(0, len(locals_) - 1))] = data.draw(values)
        elif target == "grow":
            stack.append(data.draw(values))
        elif stack:
            stack.pop()
    mutated = replace(snap, index, offset=offset, stack=tuple(stack), locals=tuple(locals_),
                      exc=data.draw(st.sampled_from([f.exc, None, KeyError("x"), 5])))
    try:
        _frames.resume(root, mutated, data.draw(values))
    except Exception:
        pass


def test_mutated_snapshots_raise_or_run_but_never_crash():
    resume_a_mutated_snapshot()
    gc.collect()    # a damaged heap would show here


def test_every_code_object_of_a_broad_slice_of_the_stdlib_is_analysed():
    import argparse, asyncio, dataclasses, email.parser, http.client, inspect  # noqa
    import json, pathlib, typing, unittest, xml.dom.minidom, zipfile  # noqa

    seen, failures = set(), []

    def visit(code):
        if id(code) in seen:
            return
        seen.add(id(code))
        try:
            _frames.stack_table(code)
        except ValueError as e:
            failures.append(str(e))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                visit(const)

    for module in list(sys.modules.values()):
        for value in list(vars(module).values()):
            func = getattr(value, "__func__", value)
            if isinstance(func, types.FunctionType):
                visit(func.__code__)
            elif isinstance(value, type):
                for member in vars(value).values():
                    member = getattr(member, "__func__", member)
                    if isinstance(member, types.FunctionType):
                        visit(member.__code__)
    assert len(seen) > 3000
    assert failures == []


def test_a_frame_built_from_junk_reports_no_line_instead_of_crashing():
    frame = _frames.Frame(len, "not code", 3, (), ())
    assert frame.line is None
    with pytest.raises(TypeError):
        _frames.stack_table("not code")
