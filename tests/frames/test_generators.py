"""Generators in saved chains and as saved values: how each driver is recorded, the same
generator object before and after a restore, what a restored generator does (yield,
send, throw, return through yield from, close, its frame and exception state), leaving a
flow without running generators' finally blocks, and validation of generator frames."""
import gc
import sys
import traceback
import types

import pytest

import carrier
from engine import CorruptSavepoint, _codec, _frames
from snapshots import root, take, taken

EVENTS = []          # what generators' finally blocks did (module level: survives copies)


def leave_here():
    """Capture, then leave the flow as the runtime does (no handler runs on the way out):
    the frames come back in the Unwind, the generators in them finished."""
    got = _frames.capture(root)
    if type(got) is tuple:
        raise _frames.Unwind(got, _frames.strip_handlers(root))
    return got


def left(flow, *args):
    with pytest.raises(_frames.Unwind) as info:
        _frames.run(root, flow, *args)
    return info.value.args[0]


# --- how the driver of a generator is recorded ----------------------------------------------

def pages(saved):
    yield take(saved)
    yield take(saved)
    return "pages done"


def by_for(saved):
    return [page for page in pages(saved)]


def by_next(saved):
    gen = pages(saved)
    return next(gen), gen.send("sent"), next(gen, "default")


def by_yield_from(saved):
    def outer():
        result = yield from pages(saved)
        yield result
    return [item for item in iter_all(outer())]


def iter_all(gen):
    for item in gen:
        yield item


def by_throw_and_close(saved):
    log = []

    def catching():
        try:
            yield "first"
        except KeyError:
            yield take(saved)
        finally:
            log.append(take(saved))
    gen = catching()
    next(gen)
    return gen.throw(KeyError("k")), gen.close(), log


@pytest.mark.parametrize("flow, chains", [
    (by_for, [[None, None, "for", None]] * 2),       # by_for, <listcomp>, pages, take
    (by_next, [[None, "next", None]] * 2),
    (by_yield_from, [[None, None, "for", "for", "yield from", None]] * 2),
    (by_throw_and_close, [[None, "next", None], [None, "close", None]]),
])
def test_each_driver_is_recorded_with_the_generator(flow, chains):
    _, snaps = taken(flow)
    assert [[f.via for f in snap] for snap in snaps] == chains
    for snap in snaps:
        for frame in snap:
            assert (frame.gen is None) == (frame.via is None)
            if frame.gen is not None:
                assert frame.gen.gi_code is frame.code


def test_next_records_its_default():
    _, snaps = taken(by_next)
    assert snaps[1][1].default is _frames.EMPTY      # gen.send("sent")
    _, snaps = taken(lambda saved: next(pages(saved), ["the default"]))
    assert snaps[0][1].via == "next" and snaps[0][1].default == ["the default"]


@pytest.mark.parametrize("flow", [by_for, by_next, by_yield_from, by_throw_and_close])
def test_every_capture_resumes_to_the_uninterrupted_result(flow):
    want, snaps = taken(flow)
    for snap in snaps:
        assert _frames.resume(root, snap, "fresh") == want


# --- the same generator object ------------------------------------------------------------------

def holder(saved):
    gen = pages(saved)
    alias = gen
    box = [gen]
    first = next(gen)
    return gen, alias, box, first, [page for page in gen]


def test_the_generator_the_flow_holds_is_the_one_restored():
    _, snaps = taken(holder)
    snap = snaps[0]                      # inside next(gen): gen is in the chain
    flow_frame, gen_frame = snap[0], snap[1]
    names = flow_frame.code.co_varnames
    gen = flow_frame.locals[names.index("gen")]
    assert gen_frame.gen is gen
    assert flow_frame.locals[names.index("alias")] is gen
    assert flow_frame.locals[names.index("box")][0] is gen
    returned = _frames.resume(root, snap, "restored")
    assert returned[0] is gen and returned[1] is gen and returned[2][0] is gen
    assert returned[3] == "restored" and returned[4] == ["fresh"]
    assert gen.gi_frame is None          # finished, as the uninterrupted run left it


def test_the_iterator_slot_of_a_for_loop_holds_the_restored_generator():
    _, snaps = taken(by_for)
    listcomp, gen_frame = snaps[0][1], snaps[0][2]
    assert listcomp.stack[-1] is gen_frame.gen


# --- what a restored generator does ------------------------------------------------------------

def frame_inspector(saved):
    def gen():
        local = "visible"
        seen = yield take(saved)
        yield (local, seen, sys._getframe().f_back.f_code.co_name)
    g = gen()
    first = next(g)
    locals_seen = g.gi_frame.f_locals["local"]
    return first, g.send("sent"), locals_seen, g.gi_running, g.__qualname__


def test_a_restored_generator_shows_its_frame_and_is_driven_by_its_caller():
    want, snaps = taken(frame_inspector)
    got = _frames.resume(root, snaps[0], "fresh")
    assert got == want
    assert got[2] == "visible" and got[1] == ("visible", "sent", "frame_inspector")


def raising_after(saved):
    def gen():
        yield take(saved)
        raise StopIteration("inside")       # PEP 479: a RuntimeError out of the generator
    try:
        return [item for item in iter_all(gen())]
    except RuntimeError as e:
        return repr(e), repr(e.__cause__)


def test_pep_479_still_applies_to_a_restored_generator():
    want, snaps = taken(raising_after)
    assert _frames.resume(root, snaps[0], "fresh") == want
    assert want == ("RuntimeError('generator raised StopIteration')",
                    "StopIteration('inside')")


def failing(saved):
    def gen():
        yield take(saved)
        raise ValueError("from the generator")
    for _ in gen():
        pass


def test_traceback_runs_through_the_restored_generator():
    saved = []
    with pytest.raises(ValueError):
        _frames.run(root, failing, saved)
    with pytest.raises(ValueError) as info:
        _frames.resume(root, carrier.loads(saved[0]), "fresh")
    names = [entry.name for entry in traceback.extract_tb(info.value.__traceback__)]
    assert names[-2:] == ["failing", "gen"]


def test_settrace_sees_the_restored_generator_called():
    _, snaps = taken(by_for)
    events = []

    def tracer(frame, event, arg):
        if frame.f_code.co_name in ("pages", "<listcomp>"):
            events.append((event, frame.f_code.co_name))
        return tracer
    sys.settrace(tracer)
    try:
        _frames.resume(root, snaps[0], "fresh")
    finally:
        sys.settrace(None)
    assert events[0] == ("call", "pages")
    assert ("return", "<listcomp>") in events


# --- in memory: the generator object itself is put back ----------------------------------------

def paging_and_leaving(log):
    def gen():
        try:
            for i in range(3):
                yield leave_here()
        finally:
            log.append("finally")
    out = []
    for page in gen():
        out.append(page)
    return out, log


def test_frames_left_in_memory_resume_into_the_same_generator():
    log = []
    snap = left(paging_and_leaving, log)
    gen = snap[1].gen
    assert gen.gi_frame is None and log == []      # unwound: finished, no finally run
    pages_seen = 0
    while True:
        try:
            result = _frames.resume(root, snap, f"page {pages_seen}")
            break
        except _frames.Unwind as unwind:
            assert unwind.args[0][1].gen is gen   # the same object each time
            snap = unwind.args[0]
            pages_seen += 1
    assert result == (["page 0", "page 1", "page 2"], ["finally"])


def suspended_pages(make):
    gen = make([])
    next(gen)
    return gen


def test_a_generator_that_ran_since_its_snapshot_is_refused():
    _, snaps = taken(holder)
    snap = snaps[0]
    _frames.resume(root, snap, "first")            # runs the generator to its end: finished
    assert _frames.resume(root, snap, "again")[3] == "again"   # finished: can be put back
    gen = snap[1].gen
    same_code = types.FunctionType(snap[1].code, pages.__globals__)
    suspended = _frames.run(root, suspended_pages, same_code)
    forged = snap[:1] + (_frames.Frame(snap[1].func, snap[1].code, snap[1].offset,
                                       snap[1].locals, snap[1].stack, None, suspended,
                                       "next"),) + snap[2:]
    with pytest.raises(ValueError, match="has run since"):
        _frames.resume(root, forged, None)
    assert gen.gi_frame is None


def unwinding_inside(saved):
    gen = pages(saved)
    return next(gen), gen


def test_unwind_through_a_restored_chain_leaves_the_waiting_generator_finished():
    _, snaps = taken(unwinding_inside)
    snap = snaps[0]
    with pytest.raises(_frames.Unwind):
        _frames.resume(root, snap, _frames.Unwind(), throw=True)
    assert snap[1].gen.gi_frame is None
    got, gen = _frames.resume(root, snap, "resumed")     # it can be put back again
    assert got == "resumed" and gen is snap[1].gen


# --- leaving a flow runs no generator's finally ------------------------------------------------

def guarded():
    try:
        yield 1
        yield 2
    finally:
        EVENTS.append("guarded finally")


def holds_suspended_and_leaves(carry):
    gen = guarded()
    next(gen)
    try:
        got = _frames.capture(root)
        if type(got) is tuple:        # leave as the runtime does when it unloads a flow:
            raise _frames.Unwind(got if carry else None, _frames.strip_handlers(root))
    finally:
        EVENTS.append("flow finally")
    return gen


def test_generators_dropped_while_a_flow_is_left_run_nothing():
    EVENTS.clear()
    left(holds_suspended_and_leaves, False)
    gc.collect()
    assert EVENTS == []
    gen = guarded()                 # outside a leaving flow, dropping one closes it
    next(gen)
    del gen
    assert EVENTS == ["guarded finally"]


def test_abandoned_frames_drop_their_generators_without_running_them():
    EVENTS.clear()
    snap = left(holds_suspended_and_leaves, True)    # kept in memory (a parked flow)
    _frames.abandon(snap)
    del snap
    gc.collect()
    assert EVENTS == []


def holds_suspended(saved):
    gen = guarded()
    next(gen)
    take(saved)
    return next(gen)


def test_a_record_found_damaged_drops_its_generators_without_running_them():
    EVENTS.clear()
    saved = []
    _frames.run(root, holds_suspended, saved)
    EVENTS.clear()
    record, codes = carrier.record_and_codes(saved[0])
    trust = _codec.Trust([__name__])
    snap = _codec.decode_snapshot(record, codes, trust=trust)
    assert _frames.resume(root, snap, None) == 2 and EVENTS == []
    damaged = record[:-1] + b"\xc1"             # the result, after every frame, is junk
    head = damaged[:damaged.index(b"\xcf") + 1]
    from forging import forge_checksum
    body = damaged[len(head) + 8:]
    with pytest.raises(CorruptSavepoint):
        _codec.decode_snapshot(head + forge_checksum(head, body) + body, codes, trust=trust)
    gc.collect()
    assert EVENTS == []


# --- generators as values ---------------------------------------------------------------------

def kept(saved):
    created = guarded()
    suspended = guarded()
    next(suspended)
    finished = guarded()
    for _ in finished:
        pass
    renamed = guarded()
    renamed.__name__, renamed.__qualname__ = "other", "elsewhere.other"
    both = [suspended, suspended]
    take(saved)
    return created, suspended, finished, renamed, both


def test_created_suspended_and_finished_generators_round_trip():
    EVENTS.clear()
    _, snaps = taken(kept)
    EVENTS.clear()
    created, suspended, finished, renamed, both = _frames.resume(root, snaps[0], None)
    assert created.gi_frame.f_lasti == 0 and created.gi_frame.f_lineno == \
        guarded.__code__.co_firstlineno
    assert suspended.gi_frame.f_locals == {} and both[0] is suspended and both[1] is suspended
    assert finished.gi_frame is None and list(finished) == []
    assert (renamed.__name__, renamed.__qualname__) == ("other", "elsewhere.other")
    assert next(suspended) == 2 and next(created) == 1
    suspended.close()
    assert EVENTS == ["guarded finally"]


def test_inspection_shows_generators_without_building_them():
    saved = []
    _frames.run(root, kept, saved)
    record, codes = carrier.record_and_codes(saved[0])
    frames, _ = _codec.decode_savepoint(record, codes, inspect=True)
    names = frames[0].code.co_varnames
    suspended = frames[0].locals[names.index("suspended")]
    assert type(suspended) is _codec.Unbuilt and suspended.kind == "generator"
    assert suspended.state["line"] == guarded.__code__.co_firstlineno + 2


# --- validation ----------------------------------------------------------------------------

def replace(snap, index, **changes):
    f = snap[index]
    fields = dict(func=f.func, code=f.code, offset=f.offset, locals=f.locals, stack=f.stack,
                  exc=f.exc, gen=f.gen, via=f.via, default=f.default)
    fields.update(changes)
    return snap[:index] + (_frames.Frame(**fields),) + snap[index + 1:]


def chain_of(flow):
    return taken(flow)[1][0]


def test_a_generator_frame_must_say_how_it_is_driven():
    snap = chain_of(by_for)
    with pytest.raises(ValueError, match="via must be one of"):
        _frames.resume(root, replace(snap, 2, via="map"))
    with pytest.raises(ValueError, match="not a call site"):
        _frames.resume(root, replace(snap, 2, via="next"))     # the listcomp waits in FOR_ITER
    with pytest.raises(ValueError, match="only next"):
        _frames.resume(root, replace(snap, 2, default=1))
    with pytest.raises(ValueError, match="no via or default"):
        _frames.resume(root, replace(snap, 3, via="for"))


def holder_pages(saved):
    yield 1


def test_a_generator_frame_needs_its_own_generator():
    snap = chain_of(by_for)
    with pytest.raises(ValueError, match="must be a generator"):
        _frames.resume(root, replace(snap, 2, gen=iter([1])))
    with pytest.raises(ValueError, match="does not run the code"):
        _frames.resume(root, replace(snap, 2, gen=guarded()))
    called = chain_of(by_next)
    with pytest.raises(ValueError, match="needs its generator object"):
        _frames.resume(root, replace(called, 1, gen=None, via=None))
    with pytest.raises(ValueError, match="does not run the code"):
        _frames.resume(root, replace(called, 1, gen=_frames.run(root, suspended_pages,
                                                                 holder_pages)))
    with pytest.raises(ValueError, match="outermost"):
        _frames.resume(root, snap[2:])
    with pytest.raises(ValueError, match="twice"):
        _frames.resume(root, called[:2] + (called[1],) + called[2:])


def test_the_loop_must_drive_the_generator_of_the_next_frame():
    snap = chain_of(by_for)
    stack = list(snap[1].stack)
    stack[-1] = iter([1, 2])
    with pytest.raises(ValueError, match="does not drive the generator"):
        _frames.resume(root, replace(snap, 1, stack=tuple(stack)))
    stack[-1] = 5
    with pytest.raises(ValueError, match="an iterator"):
        _frames.resume(root, replace(snap, 1, stack=tuple(stack)))


def test_a_generator_frame_at_a_yield_is_not_a_chain_frame():
    snap = chain_of(by_for)
    yield_offset = next(i.offset for i in __import__("dis").get_instructions(pages)
                        if i.opname == "YIELD_VALUE")
    with pytest.raises(ValueError, match="not a call site"):
        _frames.resume(root, replace(snap, 2, offset=yield_offset))
    assert _frames.resume(root, snap, "fine") == ["fine", "fresh"]
