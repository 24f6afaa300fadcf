"""A long fuzz run of the savepoint decoder, beyond what CI runs.

    python tests/fuzz/fuzz_codec.py [seconds]      # default 600

Feeds the decoder random bytes, mutated and truncated records, and mutated bodies whose
checksum was forged to match (so the damage reaches the body decoder) -- of a record of
plain frames and of one with generators in every state and in the chain -- and resumes
any frames that still decode.  Any exception but SavepointError (CorruptSavepoint is one) is
a finding; so is a crash, which ends the run with a non-zero status.
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))

import codec_values  # noqa: E402
import generator_states  # noqa: E402
from engine import SavepointError, _codec, _frames  # noqa: E402

root = _frames.Root()
trust = _codec.Trust([codec_values, generator_states, __name__])


def flow(n):
    rows = [{"id": i, "name": f"r{i}", "when": codec_values.datetime.date(2024, 1, i + 1)}
            for i in range(n)]
    total = 0
    for row in rows:
        total += row["id"]
        if row["id"] == n - 1:
            got = _frames.capture(root)
            if type(got) is tuple:
                return got
    return total, rows, codec_values.Item("x", [1, 2.5, (3, "4")])


def forge(head, body):
    mask = (1 << 64) - 1
    value = _codec.checksum(head) ^ ((_codec.checksum(body) * 0x9E3779B185EBCA87) & mask)
    return head + value.to_bytes(8, "big") + body


def main(seconds):
    samples = []
    for under, frames in ((root, _frames.run(root, flow, 4)),
                          (generator_states.ROOT, _frames.run(generator_states.ROOT,
                                                              generator_states.generators_flow))):
        record, codes = _codec.encode_snapshot(frames, trust=trust)
        samples.append((record, {_codec.fingerprint(c): c for c in codes}, under))
    rng = random.Random()
    deadline = time.monotonic() + seconds
    runs = decoded = 0
    while time.monotonic() < deadline:
        runs += 1
        record, pinned, under = samples[runs % len(samples)]
        head = record[:record.index(b"\xcf") + 1]
        body = record[len(head) + 8:]
        kind = rng.randrange(4)
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(400)))
        elif kind == 1:
            data = record[:rng.randrange(len(record))]
        else:
            mutated = bytearray(body if kind == 3 else record)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = forge(head, bytes(mutated)) if kind == 3 else bytes(mutated)
        try:
            out = _codec.decode_snapshot(data, pinned, trust=trust)
        except SavepointError:
            continue
        decoded += 1
        try:
            _frames.resume(under, out, None)
        except Exception:
            pass
    print(f"{runs} inputs, {decoded} decoded to frames, no crash")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 600)
