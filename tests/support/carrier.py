"""Carries frame snapshots between test processes the way the product does: a savepoint
record from engine._codec, plus the pinned code objects it refers to by fingerprint."""
import functools

from engine import _codec


def _trust(module_names):
    # flows' own modules are trusted, as the runtime trusts them; functools.partial is a
    # class the corpus keeps in a local
    return _codec.Trust(list(module_names) + [functools.partial])


def dumps(frames):
    modules = {f.func.__module__ for f in frames}
    record, codes = _codec.encode_snapshot(frames, trust=_trust(modules))
    return _codec.encode_value([record, [_codec.encode_code(code) for code in codes]])


def record_and_codes(data):
    """What dumps() carried: the savepoint record, and its pinned code by fingerprint."""
    record, pinned = _codec.decode_value(data)
    codes = {}
    for blob in pinned:
        code = _codec.decode_code(blob)
        codes[_codec.fingerprint(code)] = code
    return record, codes


def loads(data):
    record, codes = record_and_codes(data)
    modules = {module for module, _, _ in _codec.read_header(record)}
    return _codec.decode_snapshot(record, codes, trust=_trust(modules))
