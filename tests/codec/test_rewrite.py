"""engine._codec.rewrite_locals: a savepoint record with some local slots holding new
values, every other value kept byte for byte, nothing decoded into objects."""
import threading
import types

import pytest
from hypothesis import HealthCheck, given, settings

import codec_values
from codec_values import same, values
from engine import CorruptSavepoint, SavepointError, _codec, _frames
from forging import tampered_records

root = _frames.Root()
TRUST = _codec.Trust([codec_values, __name__])


def holder(first, second):
    """A flow frame holding two values at a capture."""
    return _frames.capture(root)


def encoded(frames, chunks=None):
    record, codes = _codec.encode_snapshot(frames, trust=TRUST, chunks=chunks)
    return record, {_codec.fingerprint(c): c for c in codes}


def decoded(record, pinned, chunks=None):
    return _codec.decode_snapshot(record, pinned, trust=TRUST, chunks=chunks)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(values, values)
def test_rewriting_nothing_gives_the_same_bytes_and_chunks(first, second):
    chunks = {}
    record, _ = encoded(_frames.run(root, holder, first, second), chunks)
    again = {}
    assert _codec.rewrite_locals(record, {}, trust=TRUST, chunks=chunks,
                                 new_chunks=again) == record
    assert again == chunks


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(values, values, values)
def test_an_edited_slot_holds_the_new_value_and_the_other_keeps_its_own(first, second, new):
    record, pinned = encoded(_frames.run(root, holder, first, second))
    original = decoded(record, pinned)[0].locals
    try:
        rewritten = _codec.rewrite_locals(record, {(0, 0): new}, trust=TRUST)
    except SavepointError as e:
        assert "nested function" in str(e)       # encode_value's limit: no code table
        return
    first_out, second_out = decoded(rewritten, pinned)[0].locals
    assert same(new, first_out)
    assert same(original[1], second_out)


def test_a_value_shared_by_two_slots_is_rebound_in_one_only():
    shared = [1, 2]
    record, pinned = encoded(_frames.run(root, holder, shared, shared))
    first, second = decoded(_codec.rewrite_locals(record, {(0, 0): [9]}, trust=TRUST),
                            pinned)[0].locals
    assert first == [9] and second == [1, 2]
    new = ["one object"]
    first, second = decoded(_codec.rewrite_locals(record, {(0, 0): new, (0, 1): new},
                                                  trust=TRUST), pinned)[0].locals
    assert first == ["one object"] and first is second


def test_a_cell_gets_the_value_inside_so_its_closures_see_it():
    def outer():
        limit = 10

        def over(value):
            return value > limit
        return inner(over)

    def inner(check):
        return _frames.capture(root)

    frames = _frames.run(root, outer)
    names = [outer.__code__._varname_from_oparg(i) for i in range(len(frames[0].locals))]
    record, pinned = encoded(frames)
    limit = (0, names.index("limit"))
    rewritten = _codec.rewrite_locals(record, {limit: 3}, cells=[limit], trust=TRUST)
    outer_frame, inner_frame = decoded(rewritten, pinned)
    cell = outer_frame.locals[names.index("limit")]
    assert type(cell) is types.CellType and cell.cell_contents == 3
    check = inner_frame.locals[0]
    assert check.__closure__[0] is cell and check(5) is True


def test_big_values_stay_shared_chunks():
    big = list(range(50_000))
    chunks = {}
    record, pinned = encoded(_frames.run(root, holder, {"a": big, "b": big}, 0), chunks)
    again = {}
    rewritten = _codec.rewrite_locals(record, {(0, 1): "x" * 10_000}, trust=TRUST,
                                      chunks=chunks.get, new_chunks=again)
    assert len(rewritten) < 300 and set(chunks) <= set(again) and len(again) == 2
    first, second = decoded(rewritten, pinned, again)[0].locals
    assert first["a"] is first["b"] and first["a"] == big and second == "x" * 10_000


def test_refusals():
    record, _ = encoded(_frames.run(root, holder, 1, 2))
    with pytest.raises(SavepointError, match="lock"):
        _codec.rewrite_locals(record, {(0, 0): threading.Lock()}, trust=TRUST)
    with pytest.raises(IndexError, match="no local slot 5 in frame 0"):
        _codec.rewrite_locals(record, {(0, 5): 1}, trust=TRUST)
    with pytest.raises(IndexError, match="frame 3"):
        _codec.rewrite_locals(record, {(3, 0): 1}, trust=TRUST)
    with pytest.raises(IndexError, match="holds no cell"):
        _codec.rewrite_locals(record, {(0, 1): 1}, cells=[(0, 1)], trust=TRUST)
    damaged = record[:-3] + bytes([record[-3] ^ 0xFF]) + record[-2:]
    with pytest.raises(CorruptSavepoint):
        _codec.rewrite_locals(damaged, {(0, 0): 1}, trust=TRUST)


def test_mutated_bodies_with_a_fixed_up_checksum_are_refused_or_decode():
    # tampering that recomputes the checksum reaches the rewrite: it must raise, or give
    # a record the decoder reads as it reads the tampered one
    record, pinned = encoded(_frames.run(root, holder, [1, "a" * 40, {"k": (2, 3)}], 2))
    for forged in tampered_records(record, 2000, seed=4321):
        try:
            rewritten = _codec.rewrite_locals(forged, {}, trust=TRUST)
        except SavepointError:
            continue
        try:
            expected = decoded(forged, pinned)
        except SavepointError:
            continue                  # damage the rewrite cannot see (a value's content)
        assert same(decoded(rewritten, pinned)[0].locals, expected[0].locals)


def test_a_record_with_generators_is_rewritten_and_still_resumes():
    # generator frames in the chain and generators held as values are kept as they were
    import generator_states
    trust = _codec.Trust([codec_values, generator_states, __name__])
    frames = _frames.run(generator_states.ROOT, generator_states.generators_flow)
    record, codes = _codec.encode_snapshot(frames, trust=trust)
    pinned = {_codec.fingerprint(c): c for c in codes}
    assert _codec.rewrite_locals(record, {}, trust=trust) == record
    slot = frames[0].code.co_varnames.index("shared")
    rewritten = _codec.rewrite_locals(record, {(0, slot): "replaced"}, trust=trust)
    restored = _codec.decode_snapshot(rewritten, pinned, trust=trust)
    assert restored[0].locals[slot] == "replaced"
    assert [f.via for f in restored] == [None, "for", "yield from"]
    assert restored[1].gen is restored[0].stack[-1]
    assert type(_frames.resume(generator_states.ROOT, restored, None)) is tuple
