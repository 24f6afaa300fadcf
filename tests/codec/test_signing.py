"""Signed savepoints and a decoder that never takes trust from a record (issue 11):
forged or foreign records are refused before decoding, the store's key file, and
inspection that builds and imports nothing."""
import gc
import os
import stat
import subprocess
import sys

import lmdb
import pytest

import signing_extra
import signing_flows as flows
from forging import forge_checksum
from engine import CorruptSavepoint, Engine, SavepointError, Status, _codec
from engine.engine import Engine as RuntimeEngine
from locations import SUPPORT


# SipHash-2-4 with a 128-bit tag, key 00..0f, message 00..(n-1): the reference vectors
# (Aumasson & Bernstein's vectors.h, vectors_sip128)
SIP128 = {0: "a3817f04ba25a8e66df67214c7550293", 1: "da87c1d86b99af44347659119b22fc45",
          7: "a1f1ebbed8dbc153c0b84aa61ff08239", 8: "3b62a9ba6258f5610f83e264f31497b4",
          15: "5493e99933b0a8117e08ec0f97cfc3d9", 63: "5150d1772f50834a503e069a973fbd7c"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKER", str(tmp_path / "marker"))
    monkeypatch.delenv("ENGINE_SECRET_KEY", raising=False)
    monkeypatch.delenv("ENGINE_SECRET_KEY_FILE", raising=False)
    return tmp_path


def store_of(path):
    return Engine(path, durability="async")


def raw_put(path, db_name, key, value):
    env = lmdb.open(str(path), max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(db_name, txn=txn))
    env.close()


def raw_items(path, db_name):
    env = lmdb.open(str(path), max_dbs=20, readonly=True, lock=False)
    with env.begin() as txn:
        items = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(db_name, txn=txn))]
    env.close()
    return items


def run_elsewhere(path, code, env_extra=None):
    """Python code in a fresh process (tests dir importable), its stdout."""
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120, cwd=SUPPORT,
                          env=dict(os.environ, **(env_extra or {})))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_mac_is_siphash_2_4_128():
    signer = _codec.Signer(bytes(range(16)))
    for n, tag in SIP128.items():
        assert signer.tag(bytes(range(n))).hex() == tag
    with pytest.raises(ValueError):
        _codec.Signer(b"short")


def test_a_new_store_makes_its_key_file_with_mode_0600(env):
    with store_of(env / "store") as eng:
        eng.execute(flows.holds_things)
    key_file = env / "store" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) == 64
    with store_of(env / "store") as eng:                      # the same key again
        assert eng.executions()[0].status == Status.ENDED_SUCCESS
    key_file.unlink()
    with pytest.raises(ValueError, match="signed with a key that is not here"):
        store_of(env / "store")


def test_another_key_is_refused_at_open(env, monkeypatch):
    with store_of(env / "store") as eng:
        eng.execute(flows.holds_things)
    monkeypatch.setenv("ENGINE_SECRET_KEY", "not the store's key")
    with pytest.raises(SavepointError, match="signed with another key"):
        store_of(env / "store")
    secret = env / "secret"
    secret.write_text("a secret kept elsewhere\n")
    monkeypatch.delenv("ENGINE_SECRET_KEY")
    monkeypatch.setenv("ENGINE_SECRET_KEY_FILE", str(secret))
    with store_of(env / "other") as eng:                      # a store keyed from the file
        assert eng.execute(flows.holds_things).status == Status.ENDED_SUCCESS
    assert not (env / "other" / "secret.key").exists()
    monkeypatch.setenv("ENGINE_SECRET_KEY", "a secret kept elsewhere")
    monkeypatch.delenv("ENGINE_SECRET_KEY_FILE")
    with store_of(env / "other") as eng:                      # the same secret
        assert len(eng.executions()) == 1


def test_a_tampered_or_foreign_savepoint_is_refused_before_decoding(env):
    with store_of(env / "a") as eng:
        ex = eng.execute(flows.holds_things)
    with store_of(env / "b") as eng:
        other = eng.execute(flows.holds_things)
    (key_a, value_a), = [(k, v) for k, v in raw_items(env / "a", b"savepoints")
                         if k.startswith(ex.id.encode())]
    (_, value_b), = [(k, v) for k, v in raw_items(env / "b", b"savepoints")
                     if k.startswith(other.id.encode())]
    flipped = bytearray(value_a)
    flipped[-40] ^= 0x01                       # inside the record, not the tag
    for forged in (bytes(flipped), value_b):   # tampered; signed with another key
        raw_put(env / "a", b"savepoints", key_a, forged)
        with store_of(env / "a") as eng:
            with pytest.raises(CorruptSavepoint, match="damaged or forged"):
                eng.inspect(ex.id, 1)
            with pytest.raises(CorruptSavepoint, match="damaged or forged"):
                eng.restore(ex.id, 1)


def test_tampered_pinned_code_is_refused_before_it_is_unmarshalled(env):
    with store_of(env / "store") as eng:
        ex = eng.execute(flows.holds_things)
    for digest, blob in raw_items(env / "store", b"code"):
        raw_put(env / "store", b"code", digest, blob[:-1] + bytes([blob[-1] ^ 1]))
    out = run_elsewhere(env / "store", f"""
import sys
from engine import Engine
with Engine(sys.argv[1], durability="async") as eng:
    try:
        eng.inspect({ex.id!r}, 1)
    except Exception as e:
        print(type(e).__name__, e)
""")
    assert out.startswith("CorruptSavepoint") and "pinned code" in out


def test_a_map_over_an_untrusted_callable_is_never_rebuilt(env):
    touched = env / "touched"
    with store_of(env / "store") as eng:
        ex = eng.execute(flows.runs_a_command_on_resume, {"touched": str(touched)})
        assert ex.status == Status.ENDED_SUCCESS and not touched.exists()
        eng.restore(ex.id, "evil", by="name")
        eng.run()
        done = eng.get(ex.id)
    assert done.status == Status.ENDED_ERROR
    assert "map() iterator over <built-in function system>, which is not trusted" in done.error
    assert not touched.exists()


def test_maps_over_trusted_callables_resume(env):
    with store_of(env / "store") as eng:
        ex = eng.execute(flows.maps_with_trusted_callables)
        assert ex.output == [(2, "A"), (4, "A"), (6, "A")]
        eng.restore(ex.id, "at-4", by="name")
        eng.run()
        again = eng.get(ex.id)
    assert again.status == Status.ENDED_SUCCESS and again.output == ex.output


def test_trust_comes_from_the_flow_module_and_eng_trust_never_from_the_record(env):
    marker = env / "marker"
    with store_of(env / "store") as eng:
        eng.trust(signing_extra.Gadget)        # this engine trusts the gadget...
        ex = eng.execute(flows.holds_a_gadget)
        assert ex.status == Status.ENDED_SUCCESS, ex.error
    # ... another does not: that the savepoint's frames run signing_extra's code (its
    # code table lists the module) trusts nothing
    out = run_elsewhere(env / "store", f"""
import sys
from engine import Engine
with Engine(sys.argv[1], durability="async") as eng:
    eng.restore({ex.id!r}, "holding", by="name")
    eng.run()
    print(eng.get({ex.id!r}).error)
""", {"MARKER": str(marker)})
    assert "signing_extra.Gadget, which is not trusted" in out
    assert not marker.exists()
    probe = RuntimeEngine(env / "probe", durability="async")
    try:
        trust = probe._runner.trust_for({"flow": "signing_flows:holds_things"})
        assert trust.allows_class(flows.Marker)
        assert not trust.allows_class(RuntimeEngine) and not trust.allows_class(
            signing_extra.Gadget)
    finally:
        probe.close()


def test_inspection_builds_no_instance_and_imports_no_module(env):
    marker = env / "marker"
    with store_of(env / "store") as eng:
        ex = eng.execute(flows.holds_things)
        assert ex.output == ["kept", 2, [2, 4]]
    out = run_elsewhere(env / "store", f"""
import sys
from engine import Engine
with Engine(sys.argv[1], durability="async") as eng:
    (frame,) = eng.inspect({ex.id!r}, "here", by="name")
    for name in ("marker", "helper", "numbers", "this"):
        print(name, repr(frame.locals[name]))
print(sorted(m for m in sys.modules if m.startswith("signing")))
""", {"MARKER": str(marker)})
    lines = out.splitlines()
    assert lines[0] == "marker <signing_flows.Marker instance {'state': {'note': 'kept'}}>"
    assert lines[1] == "helper <signing_extra.helper>"
    assert lines[2].startswith("numbers <map iterator ")
    assert lines[3] == "this <this>"
    assert lines[4] == "[]"                       # nothing imported
    assert not marker.exists()                    # nothing rebuilt


def test_mutated_savepoint_values_signed_with_the_right_key_never_crash(env):
    """Someone with the key (or a bug) writes a damaged body: decoding must still only
    raise, never crash the interpreter -- Hypothesis mutations, re-signed."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from engine import EngineError, signing
    with store_of(env / "store") as eng:
        ex = eng.execute(flows.maps_with_trusted_callables)
    (key, value), = [(k, v) for k, v in raw_items(env / "store", b"savepoints")
                     if k.startswith(ex.id.encode()) and k.endswith(b"\0" * 7 + b"\x02")]
    signer = _codec.Signer(signing.store_key(str(env / "store"), create=False))
    meta, record, state = _codec.unseal(value, "savepoint", signer)
    head = record[:record.index(b"\xcf") + 1]

    @settings(max_examples=int(os.environ.get("SIGNING_FUZZ_EXAMPLES", 150)), deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, len(record) - 1), st.integers(0, 255)),
                    min_size=1, max_size=4))
    def mutate(changes):
        body = bytearray(record[len(head) + 8:])
        for at, byte in changes:
            body[at % len(body)] = byte
        forged = head + forge_checksum(head, bytes(body)) + bytes(body)  # reach the decoder
        raw_put(env / "store", b"savepoints", key, _codec.seal([meta, forged, state], signer))
        with store_of(env / "store") as eng:
            for attempt in (lambda: eng.inspect(ex.id, 2),
                            lambda: (eng.restore(ex.id, 2), eng.run())):
                try:
                    attempt()
                except EngineError:
                    pass
        gc.collect()                       # garbage a bad decode left behind shows now
    mutate()
