"""Savepoint codec: encode/decode time and size of a standard state, against pickle
(protocol 5) and plain msgpack of the same values, measured in the same run.

The standard state is one frame of 10 locals: three ints, a float, a 200-char str, a
100-int list, a 10-key dict, 64 bytes, a list of 5 small dicts, None.  The codec encodes it
as a whole savepoint record (header, checksum, code reference, frame); pickle and msgpack
encode the 10 values.

    python benchmarks/bench_codec.py            # table
    python benchmarks/bench_codec.py --json     # {"encode_us": ..., ...}

Targets: encode and decode each <= 0.7x pickle and <= 1.2x msgpack; size <= pickle's.
"""
import argparse
import json
import os
import pickle
import statistics
import sys
from time import perf_counter_ns

import msgpack

from engine import _codec, _frames

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_flows import standard_values  # noqa: E402

ROUNDS = 40
LOOPS = 1000
root = _frames.Root()


def standard_state():
    a, b, c, ratio, text, numbers, table, blob, rows, nothing = standard_values()
    return _frames.capture(root)


def measure(cases):
    """Median over ROUNDS of the mean of LOOPS calls, in microseconds, for each case.
    Rounds of all cases interleave, so a noisy moment on this machine hits each alike."""
    samples = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, (func, args) in cases.items():
            t0 = perf_counter_ns()
            for _ in range(LOOPS):
                func(*args)
            samples[name].append((perf_counter_ns() - t0) / LOOPS / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    snapshot = _frames.run(root, standard_state)
    values = list(snapshot[0].locals)
    assert len(values) == 10
    record, codes = _codec.encode_snapshot(snapshot)
    pinned = {_codec.fingerprint(code): code for code in codes}   # the store's code cache
    assert _codec.decode_snapshot(record, pinned)[0].locals == snapshot[0].locals
    pickled = pickle.dumps(values, protocol=5)
    packed = msgpack.packb(values)

    result = measure({
        "encode_us": (_codec.encode_snapshot, (snapshot,)),
        "decode_us": (_codec.decode_snapshot, (record, pinned)),
        "pickle_encode_us": (pickle.dumps, (values, 5)),
        "pickle_decode_us": (pickle.loads, (pickled,)),
        "msgpack_encode_us": (msgpack.packb, (values,)),
        "msgpack_decode_us": (msgpack.unpackb, (packed,)),
    })
    result.update(size_bytes=len(record), pickle_size_bytes=len(pickled),
                  msgpack_size_bytes=len(packed))
    if args.json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in result.items()}))
        return
    print(f"savepoint codec, CPython {sys.version.split()[0]}: standard state of 10 locals "
          f"(median of {ROUNDS} rounds of {LOOPS})")
    print(f"{'':10} {'encode':>10} {'decode':>10} {'size':>8}")
    for name, prefix in (("codec", ""), ("pickle 5", "pickle_"), ("msgpack", "msgpack_")):
        print(f"{name:10} {result[prefix + 'encode_us']:>7.2f} us {result[prefix + 'decode_us']:>7.2f} us "
              f"{result[prefix + 'size_bytes']:>6} B")
    for what in ("encode", "decode"):
        print(f"{what}: {result[what + '_us'] / result['pickle_' + what + '_us']:.2f}x pickle "
              f"(target <= 0.7), {result[what + '_us'] / result['msgpack_' + what + '_us']:.2f}x "
              f"msgpack (target <= 1.2)")
    print(f"size: {result['size_bytes'] / result['pickle_size_bytes']:.2f}x pickle (target <= 1)")


if __name__ == "__main__":
    main()
