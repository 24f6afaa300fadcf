"""In-process behaviour of restored frames: the logical chain (f_back, tracebacks,
tracers), exception state, values and exceptions sent into the innermost call, and
abandoning pending frames."""
import os
import sys
import traceback

import pytest

import carrier
from engine import _frames
from snapshots import root, take, taken


def run_and_capture(flow, *args):
    """The snapshots a run of ``flow`` took, rebuilt from their bytes."""
    _, snaps = taken(flow, *args)
    assert len(snaps) >= 1
    return snaps


# --- values and exceptions into the innermost call ------------------------------------------

def adder(saved, base):
    got = take(saved)
    return base + (got if isinstance(got, int) else 0)


def flow_value(saved):
    return adder(saved, 1) * 10


def test_resume_sends_value_into_innermost_call_and_returns_root_result():
    snapshot = run_and_capture(flow_value)[0]
    assert [f.code.co_name for f in snapshot] == ["flow_value", "adder", "take"]
    assert _frames.resume(root, snapshot, 41) == 420
    # a snapshot can be resumed again: it is data, not live state
    assert _frames.resume(root, snapshot, 1) == 20


def catcher(saved):
    try:
        take(saved)
    except KeyError as e:
        return ("caught", e.args[0])
    return ("no error",)


def test_throw_raises_at_the_innermost_call_and_restored_frames_handle_it():
    snapshot = run_and_capture(catcher)[0]
    assert _frames.resume(root, snapshot, KeyError("x"), throw=True) == ("caught", "x")
    with pytest.raises(TypeError, match="exception instance"):
        _frames.resume(root, snapshot, "not an exception", throw=True)


def stopper(saved):
    take(saved)
    raise StopIteration("escapes")


def test_stopiteration_escaping_a_restored_frame_is_not_turned_into_runtimeerror():
    saved = []
    with pytest.raises(StopIteration):
        _frames.run(root, stopper, saved)
    with pytest.raises(StopIteration, match="escapes"):
        _frames.resume(root, carrier.loads(saved[0]), None)


# --- the logical chain --------------------------------------------------------------------

def chain_inner(saved):
    take(saved)
    names = []
    frame = sys._getframe()
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def chain_outer(saved):
    return chain_inner(saved)


def test_getframe_and_f_back_show_the_logical_chain():
    snapshot = run_and_capture(chain_outer)[0]
    names = _frames.resume(root, snapshot, None)
    here = sys._getframe().f_code.co_name
    assert names[:3] == ["chain_inner", "chain_outer", here]


def failing_inner(saved):
    if take(saved) == "fail":
        raise ValueError("after restore")
    return 0


def failing_outer(saved):
    return failing_inner(saved) + 1


def test_traceback_lists_restored_frames_outermost_first():
    snapshot = run_and_capture(failing_outer)[0]
    with pytest.raises(ValueError) as info:
        _frames.resume(root, snapshot, "fail")
    names = [entry.name for entry in traceback.extract_tb(info.value.__traceback__)]
    assert names[-2:] == ["failing_outer", "failing_inner"]
    lines = [entry.line for entry in traceback.extract_tb(info.value.__traceback__)]
    assert lines[-2:] == ["return failing_inner(saved) + 1", 'raise ValueError("after restore")']


def traced_inner(saved):
    take(saved)
    x = 1
    return x + 1


def traced_outer(saved):
    y = traced_inner(saved)
    return y * 2


def test_settrace_sees_call_line_and_return_events_of_restored_frames():
    snapshot = run_and_capture(traced_outer)[0]
    events = []

    def tracer(frame, event, arg):
        if frame.f_code.co_name in ("traced_inner", "traced_outer", "take"):
            events.append((event, frame.f_code.co_name))
        return tracer

    sys.settrace(tracer)
    try:
        result = _frames.resume(root, snapshot, None)
    finally:
        sys.settrace(None)
    assert result == 4
    assert ("call", "take") in events
    assert ("call", "traced_inner") in events and ("call", "traced_outer") in events
    assert ("line", "traced_inner") in events and ("line", "traced_outer") in events
    assert events[-1] == ("return", "traced_outer")
    assert events.index(("call", "traced_inner")) < events.index(("return", "traced_inner"))


def handler_frame(saved):
    try:
        raise OSError("being handled")
    except OSError:
        take(saved)
        seen = repr(sys.exc_info()[1])
        try:
            raise
        except OSError as again:
            return seen, repr(again)


def test_exc_info_and_bare_raise_in_an_except_block_active_at_capture():
    snapshot = run_and_capture(handler_frame)[0]
    assert snapshot[-2].exc is not None
    assert _frames.resume(root, snapshot, None) == (
        "OSError('being handled')", "OSError('being handled')")


def inner_handled(saved):
    return repr(sys.exc_info()[1]), take(saved), repr(sys.exc_info()[1])


def outer_handling(saved):
    try:
        raise LookupError("outer")
    except LookupError:
        return inner_handled(saved)


def test_callee_sees_the_exception_its_restored_caller_is_handling():
    snapshot = run_and_capture(outer_handling)[0]
    assert _frames.resume(root, snapshot, "resumed") == (
        "LookupError('outer')", "resumed", "LookupError('outer')")


# --- captures inside restored chains ----------------------------------------------------------

def recapture_inner(saved, log):
    log.append(take(saved))
    log.append(take(saved))
    return log


def recapture_outer(saved):
    log = []
    return recapture_inner(saved, log), take(saved)


def test_capture_again_and_again_inside_restored_chains():
    saved = []
    _frames.run(root, recapture_outer, saved)
    assert len(saved) == 3
    first = carrier.loads(saved[0])
    # Resuming the first capture takes the second and third inside a restored chain; they
    # land in the restored flow's own `saved` list.
    assert _frames.resume(root, first, "r1") == (["r1", "fresh"], "fresh")
    second, third = map(carrier.loads, first[0].locals[0])
    assert [f.code.co_name for f in second] == ["recapture_outer", "recapture_inner", "take"]
    assert [f.code.co_name for f in third] == ["recapture_outer", "take"]
    assert _frames.resume(root, second, "r2") == (["r1", "r2"], "fresh")
    fourth = carrier.loads(second[0].locals[0][-1])
    assert _frames.resume(root, fourth, "r3") == (["r1", "r2"], "r3")
    assert _frames.resume(root, third, "r4") == (["r1", "fresh"], "r4")


# --- abandoning pending frames -------------------------------------------------------------------

def unwinding_inner(saved, log):
    try:
        if take(saved) == "unwind":
            raise _frames.Unwind()
    finally:
        log.append("inner finally")


def unwinding_outer(saved, log):
    try:
        unwinding_inner(saved, log)
    finally:
        log.append("outer finally")
    return log


def test_unwind_abandons_pending_restored_frames_without_running_their_finally():
    saved, log = [], []
    _frames.run(root, unwinding_outer, saved, log)
    assert log == ["inner finally", "outer finally"]
    saved = [carrier.loads(data) for data in saved]
    log = saved[0][0].locals[1]   # the restored flow's own log (a copy)
    assert log == []
    with pytest.raises(_frames.Unwind):
        _frames.resume(root, saved[0], "unwind")
    # the innermost restored frame was running and unwound; its parent was still pending
    assert log == ["inner finally"]
    import gc
    gc.collect()
    assert log == ["inner finally"]
    # the same snapshot still resumes normally afterwards
    assert _frames.resume(root, saved[0], "go") is log
    assert log == ["inner finally", "inner finally", "outer finally"]


def test_a_snapshot_dropped_during_validation_runs_nothing():
    saved, log = [], []
    _frames.run(root, unwinding_outer, saved, log)
    good = carrier.loads(saved[0])
    log = good[0].locals[1]
    bad = good[:-1] + (_frames.Frame(good[-1].func, good[-1].code, 0, good[-1].locals,
                                     good[-1].stack),)
    with pytest.raises(ValueError, match="not a call site"):
        _frames.resume(root, bad, None)
    import gc
    gc.collect()
    assert log == []


def test_root_is_released_after_an_error_and_cannot_run_twice_at_once():
    saved = []

    def nested(saved):
        return _frames.run(root, flow_value, saved)

    with pytest.raises(RuntimeError, match="already running"):
        _frames.run(root, nested, saved)
    assert not root.active


def stripped_inner(saved, log):
    try:
        keep = _frames.strip_handlers(root)
        raise _frames.Unwind(keep)
    finally:
        log.append("inner finally")


def stripped_outer(saved, log):
    try:
        with open(os.devnull) as fh:   # noqa: F841
            stripped_inner(saved, log)
    except BaseException:
        log.append("caught")
    finally:
        log.append("outer finally")
    return "returned"


def test_strip_handlers_lets_unwind_leave_without_running_finally_except_or_with():
    log = []
    with pytest.raises(_frames.Unwind):
        _frames.run(root, stripped_outer, [], log)
    assert log == []
    # the functions themselves keep their handlers
    with pytest.raises(RuntimeError, match="inside the flow"):
        _frames.strip_handlers(root)
    assert stripped_outer([], log) == "returned"
    assert log == ["inner finally", "caught", "outer finally"]
