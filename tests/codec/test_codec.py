"""The savepoint codec: exact round trips with sharing, damage detection, safety, errors."""
import collections
import io
import os
import threading
import types

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import codec_values
import generator_states
from codec_values import same, values
from engine import CorruptSavepoint, SavepointError, _codec, _frames
from locations import SUPPORT
from forging import forge_checksum, tampered_records

root = _frames.Root()
TRUST = _codec.Trust([codec_values, generator_states, __name__])
FUZZ_EXAMPLES = int(os.environ.get("CODEC_FUZZ_EXAMPLES", 10_000))


def holder(value):
    """A flow frame holding ``value`` in a local at a capture."""
    return _frames.capture(root)


def snapshot_of(value):
    return _frames.run(root, holder, value)


def round_trip(frames, trust=TRUST, externals=None):
    record, codes = _codec.encode_snapshot(frames, trust=trust, externals=externals)
    pinned = {}
    for code in codes:
        copy = _codec.decode_code(_codec.encode_code(code))
        pinned[_codec.fingerprint(copy)] = copy
    return _codec.decode_snapshot(record, pinned, trust=trust, externals=externals)


# --- round trips --------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(values)
def test_any_value_round_trips_equal_and_with_the_same_sharing(value):
    frames = snapshot_of(value)
    decoded = round_trip(frames)[0].locals[0]
    assert same(value, decoded)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(values)
def test_encode_value_round_trips_values_without_nested_functions(value):
    try:
        data = _codec.encode_value(value, trust=TRUST)
    except SavepointError as e:
        assert "nested function" in str(e)
        return
    assert same(value, _codec.decode_value(data, trust=TRUST))


@pytest.mark.parametrize("value", [
    0, -1, 2**63 - 1, -2**63, 2**64, -2**1000, float("nan"), float("-inf"), -0.0, 1e308,
    "", "é", "\udc80 lone surrogate", "x" * 100_000, b"", bytes(70_000), bytearray(b"x"),
    list(range(70_000)), {i: str(i) for i in range(20_000)},
])
def test_edge_values(value):
    assert same(value, _codec.decode_value(_codec.encode_value(value)))
    assert same(value, round_trip(snapshot_of(value))[0].locals[0])


def test_negative_zero_and_nan_keep_their_bits():
    import math
    decoded = _codec.decode_value(_codec.encode_value([-0.0, float("nan")]))
    assert math.copysign(1, decoded[0]) == -1 and math.isnan(decoded[1])


def test_self_referencing_list_and_dict():
    a = [1]
    a.append(a)
    d = {}
    d["me"] = d
    d["list"] = a
    out = round_trip(snapshot_of((a, d)))[0].locals[0]
    assert out[0][1] is out[0] and out[1]["me"] is out[1] and out[1]["list"] is out[0]


def test_cycle_through_an_instance_and_a_recursive_closure():
    item = codec_values.Item("x", [])
    item.tags.append(item)

    def countdown(n):
        return n if n <= 0 else countdown(n - 1)

    out = round_trip(snapshot_of((item, countdown)))[0].locals[0]
    assert out[0].tags[0] is out[0]
    assert out[1](5) == 0
    assert out[1].__closure__[0].cell_contents is out[1]


def test_objects_shared_between_frames_and_cells_stay_shared():
    shared = {"n": 1}

    def outer():
        box = shared
        count = 0

        def bump():
            nonlocal count
            count += 1
            return middle(box)
        return bump()

    def middle(same_box):
        return _frames.capture(root)

    frames = _frames.run(root, outer)
    out = round_trip(frames)
    outer_frame, bump_frame, middle_frame = out
    cells = [v for v in outer_frame.locals if isinstance(v, types.CellType)]
    box = next(c for c in cells if c.cell_contents is not shared and
               isinstance(c.cell_contents, dict))
    count = next(c for c in cells if c.cell_contents == 1)
    # one dict, seen by three frames: through outer's cell, bump's free variable, middle;
    # outer and bump share the very cells
    assert middle_frame.locals[0] is box.cell_contents
    assert any(box is v for v in bump_frame.locals) and any(count is v for v in bump_frame.locals)


def test_recursive_tuple_is_refused_clearly():
    holder_list = []
    t = (holder_list,)
    holder_list.append(t)
    with pytest.raises(SavepointError, match="contains itself"):
        _codec.encode_snapshot(snapshot_of(t), trust=TRUST)


def test_a_closure_held_by_what_its_own_cell_holds_round_trips():
    """The function is made before its closure is decoded, so its cell may hold a tuple
    or list that holds the function (the function reached first, as a plain local)."""
    def closure_in(kind):
        def inner():
            return box
        box = kind((inner, 1))
        return _frames.capture(root)

    for kind in (tuple, list):
        inner, box = round_trip(_frames.run(root, closure_in, kind))[0].locals[1:3]
        assert type(box.cell_contents) is kind and box.cell_contents[0] is inner
        assert inner() is box.cell_contents and inner.__closure__[0] is box


def test_a_tuple_reached_again_through_a_cell_is_refused_when_taken():
    """A tuple holding a closure whose cell holds a list holding the tuple: the tuple can
    be built only after the list, the list only after the tuple.  The savepoint is
    refused when taken -- never written and then found undecodable."""
    def tuple_first():
        pair = (lambda: holder, 1)
        holder = [pair]
        return _frames.capture(root)

    with pytest.raises(SavepointError, match="local 'pair'.*contains itself"):
        _codec.encode_snapshot(_frames.run(root, tuple_first), trust=TRUST)


def test_externals_are_references_rebound_on_restore():
    this, system = object(), object()
    frames = snapshot_of([this, system, this])
    out = round_trip(frames, externals={"this": this, "system": system})
    assert out[0].locals[0] == [this, system, this]
    record, codes = _codec.encode_snapshot(frames, externals={"this": this, "system": system})
    pinned = {_codec.fingerprint(c): c for c in codes}
    # another process: its own engine objects take their places
    other_this, other_system = object(), object()
    out = _codec.decode_snapshot(record, pinned,
                                 externals={"this": other_this, "system": other_system})
    assert out[0].locals[0] == [other_this, other_system, other_this]
    with pytest.raises(SavepointError, match="does not provide"):
        _codec.decode_snapshot(record, pinned, externals={})
    with pytest.raises(SavepointError, match="builtins.object"):
        _codec.encode_snapshot(frames, externals={"this": this})


# --- errors that say what to do -------------------------------------------------------------

def fetch_rows(path):
    fh = open(path, "rb")
    try:
        return _frames.capture(root)
    finally:
        fh.close()


def test_open_file_error_names_local_function_file_line_and_type(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"x")
    frames = _frames.run(root, fetch_rows, str(path))
    with pytest.raises(SavepointError) as info:
        _codec.encode_snapshot(frames)
    message = str(info.value)
    assert "local 'fh' in fetch_rows" in message
    assert f"test_codec.py:{fetch_rows.__code__.co_firstlineno + 3}" in message
    assert "an open file (_io.BufferedReader)" in message
    assert "close it before the Flow-API call" in message


async def async_gen():
    yield 1


@pytest.mark.parametrize("value, words", [
    (threading.Lock(), "a lock"),
    (async_gen(), "async generators cannot be saved (not yet)"),
    (io.StringIO(), "an open file"),
    (codec_values.Item("untrusted", []), "eng.trust(Item)"),
])
def test_unencodable_values_are_named(value, words):
    with pytest.raises(SavepointError) as info:
        _codec.encode_snapshot(snapshot_of(value))
    assert "local 'value' in holder" in str(info.value) and words in str(info.value)


def stack_holder():
    return [threading.Lock(), _frames.capture(root)]


def test_unencodable_stack_item_is_named():
    frames = _frames.run(root, stack_holder)[1]
    with pytest.raises(SavepointError, match="value-stack item 0 .* in stack_holder"):
        _codec.encode_snapshot(frames)


def test_a_failed_encode_leaves_the_encoder_usable():
    with pytest.raises(SavepointError):
        _codec.encode_snapshot(snapshot_of(threading.Lock()))
    assert round_trip(snapshot_of([1, 2]))[0].locals[0] == [1, 2]


# --- trust and safety -------------------------------------------------------------------------

def test_untrusted_instances_are_refused_when_decoding():
    frames = snapshot_of(codec_values.Item("x", [1]))
    record, codes = _codec.encode_snapshot(frames, trust=TRUST)
    pinned = {_codec.fingerprint(c): c for c in codes}
    with pytest.raises(SavepointError, match="not trusted"):
        _codec.decode_snapshot(record, pinned, trust=_codec.Trust([__name__]))
    assert _codec.decode_snapshot(record, pinned, trust=TRUST)[0].locals[0].name == "x"


def test_trust_takes_classes_modules_and_names():
    trust = _codec.Trust()
    trust.add(codec_values.Item)
    assert trust.allows_class(codec_values.Item)
    assert not trust.allows_class(codec_values.Slotted)
    trust.add("codec_values")
    assert trust.allows_class(codec_values.Slotted)
    with pytest.raises(TypeError):
        trust.add(42)


def test_decoding_never_imports_modules_outside_the_standard_library_or_trust():
    data = _codec.encode_value(codec_values)       # module referenced by name
    mangled = data.replace(b"codec_values", b"codec_valueZ")
    with pytest.raises(SavepointError, match="neither imported"):
        _codec.decode_value(mangled)


# --- damage -----------------------------------------------------------------------------------

def sample_record():
    value = {"rows": [{"id": i, "name": f"r{i}"} for i in range(3)], "t": (1, 2.5, "x"),
             "big": 2**100, "blob": bytes(40), "when": codec_values.datetime.date(2024, 1, 1)}
    frames = snapshot_of(value)
    record, codes = _codec.encode_snapshot(frames, trust=TRUST)
    return record, {_codec.fingerprint(c): c for c in codes}


RECORD, PINNED = sample_record()


def decode_damaged(data):
    try:
        _codec.decode_snapshot(data, PINNED, trust=TRUST)
    except CorruptSavepoint:
        return
    raise AssertionError("damage went unnoticed")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_truncated_and_random_records_raise_corruptsavepoint(data):
    kind = data.draw(st.sampled_from(["flip", "truncate", "random", "splice"]))
    record = bytearray(RECORD)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(record) - 1))
            record[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        record = record[:data.draw(st.integers(0, len(record) - 1))]
    elif kind == "random":
        record = bytearray(data.draw(st.binary(max_size=300)))
    else:
        i = data.draw(st.integers(0, len(record)))
        record[i:i] = data.draw(st.binary(min_size=1, max_size=20))
    assume(bytes(record) != RECORD)      # two flips of one byte can cancel out
    decode_damaged(bytes(record))


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_decoding_arbitrary_value_bytes_never_crashes(data):
    # no checksum here (values live inside checksummed store records): anything may
    # come out, but only as a value or a SavepointError
    try:
        _codec.decode_value(data, trust=TRUST)
    except SavepointError:
        pass


def resume_mutations(record, pinned, seed, rounds=3000, under=root):
    """Records whose body is damaged and whose checksum is fixed up to match: the damage
    reaches the body decoder, which must raise, or produce frames that engine._frames
    validates before running them."""
    for forged in tampered_records(record, rounds, seed=seed):
        try:
            frames = _codec.decode_snapshot(forged, pinned, trust=TRUST)
        except SavepointError:
            continue
        try:
            _frames.resume(under, frames, None)
        except Exception:
            pass


def test_mutated_bodies_with_a_fixed_up_checksum_never_crash():
    resume_mutations(RECORD, PINNED, 1234)


def generator_record():
    frames = _frames.run(generator_states.ROOT, generator_states.generators_flow)
    assert [f.via for f in frames] == [None, "for", "yield from"]
    record, codes = _codec.encode_snapshot(frames, trust=TRUST)
    return record, {_codec.fingerprint(c): c for c in codes}


def test_generators_round_trip_in_their_state_and_the_chain_resumes():
    record, pinned = generator_record()
    frames = _codec.decode_snapshot(record, pinned, trust=TRUST)
    names = frames[0].code.co_varnames
    held = {name: frames[0].locals[names.index(name)] for name in
            ("created", "finished", "suspended", "shared")}
    assert held["shared"] == [held["suspended"], held["created"], held["finished"]]
    assert held["suspended"].gi_yieldfrom.gi_frame.f_locals["i"] == 0
    assert frames[1].gen is frames[0].stack[-1] and frames[2].gen is frames[1].stack[-1]
    shared = _frames.resume(generator_states.ROOT, frames, None)
    assert type(shared) is tuple                 # the second capture, inside the chain
    assert list(held["suspended"]) == [1, 2, "counted"] and list(held["created"]) == [0, 1, 2]


def test_mutated_generator_records_with_a_fixed_up_checksum_never_crash():
    # the damage reaches the generators' parts: states, offsets, slots, the chain's links
    resume_mutations(*generator_record(), 4321, under=generator_states.ROOT)


def test_checksum_is_xxh64():
    # reference values of XXH64 with seed 0
    assert _codec.checksum(b"") == 17241709254077376921
    assert _codec.checksum(b"a" * 5) == 7631154384113844584
    assert _codec.checksum(bytes(range(256)) * 3) == 10233242924474565487


def test_a_record_of_another_python_version_is_refused_not_called_corrupt():
    head_end = RECORD.index(b"\xcf")
    head = RECORD[:head_end + 1].replace(b"\xa43.11", b"\xa43.12")
    body = RECORD[head_end + 9:]
    forged = head + forge_checksum(head, body) + body
    with pytest.raises(SavepointError, match="taken on Python 3.12") as info:
        _codec.decode_snapshot(forged, PINNED)
    assert not isinstance(info.value, CorruptSavepoint)


def test_pinned_code_is_checked_against_its_fingerprint():
    code = holder.__code__
    blob = _codec.encode_code(code)
    assert _codec.decode_code(blob, _codec.fingerprint(code)) == code
    with pytest.raises(CorruptSavepoint):
        _codec.decode_code(blob, b"x" * 16)
    with pytest.raises(CorruptSavepoint):
        _codec.decode_code(blob[:-3])
    damaged = bytearray(blob)
    damaged[20] ^= 0xFF
    with pytest.raises(CorruptSavepoint):
        _codec.decode_code(bytes(damaged))
    with pytest.raises(CorruptSavepoint, match="missing"):
        _codec.decode_snapshot(RECORD, {})


def test_fingerprints_ignore_hash_seeds_and_tell_codes_apart():
    import subprocess
    import sys
    script = ("import sys; sys.path.insert(0, %r); import codec_values; "
              "from engine import _codec; print(_codec.fingerprint("
              "codec_values.make_closure.__code__).hex())" % SUPPORT)
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout
            for seed in (1, 2, 3)}
    assert outs == {_codec.fingerprint(codec_values.make_closure.__code__).hex() + "\n"}
    assert _codec.fingerprint(holder.__code__) != _codec.fingerprint(stack_holder.__code__)


def test_header_lists_the_code_it_needs():
    codes = _codec.read_header(RECORD)
    assert codes == [(__name__, "holder", _codec.fingerprint(holder.__code__))]


def test_counter_ordereddict_defaultdict_deque_keep_their_kind():
    value = [collections.Counter("aab"), collections.OrderedDict(b=1, a=2),
             collections.defaultdict(list, {1: [2]}), collections.deque([1, 2], maxlen=3)]
    out = _codec.decode_value(_codec.encode_value(value))
    assert [type(v) for v in out] == [type(v) for v in value] and out == value
    assert out[2].default_factory is list and out[3].maxlen == 3


# --- chunks: big values stored apart ------------------------------------------------------------

def big_holder(big, counter):
    return _frames.capture(root)


def test_big_values_become_shared_chunks_and_sharing_survives_the_cut():
    big = list(range(50_000))
    chunks = {}
    records = []
    for counter in range(3):
        record, codes = _codec.encode_snapshot(_frames.run(root, big_holder, big, counter),
                                               chunks=chunks)
        records.append(record)
    assert len(chunks) == 1 and all(len(r) < 200 for r in records)
    pinned = {_codec.fingerprint(c): c for c in codes}
    out = _codec.decode_snapshot(records[-1], pinned, chunks=chunks)
    assert out[0].locals == (big, 2)
    shared = {"a": big, "b": big}
    chunks = {}
    record, codes = _codec.encode_snapshot(_frames.run(root, big_holder, shared, big),
                                           chunks=chunks)
    out = _codec.decode_snapshot(record, pinned, chunks=chunks.get)
    assert out[0].locals[0]["a"] is out[0].locals[0]["b"] is out[0].locals[1]


def test_missing_or_damaged_chunks_are_corruption():
    chunks = {}
    record, codes = _codec.encode_snapshot(_frames.run(root, big_holder, "x" * 10_000, 0),
                                           chunks=chunks)
    pinned = {_codec.fingerprint(c): c for c in codes}
    with pytest.raises(CorruptSavepoint, match="no chunks"):
        _codec.decode_snapshot(record, pinned)
    with pytest.raises(CorruptSavepoint, match="missing or damaged"):
        _codec.decode_snapshot(record, pinned, chunks={})
    (digest, blob), = chunks.items()
    assert _codec.chunk_hash(blob) == digest
    damaged = {digest: blob[:-1] + b"y"}
    with pytest.raises(CorruptSavepoint, match="missing or damaged"):
        _codec.decode_snapshot(record, pinned, chunks=damaged)
