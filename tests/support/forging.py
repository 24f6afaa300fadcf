"""forge_checksum: the record checksum a savepoint record's header carries, recomputed for
a tampered body -- so fuzz tests reach the body decoder instead of the checksum check;
tampered_records: such records, a few bytes of the body changed in each."""
import random

from engine import _codec


def forge_checksum(head, body):
    """The 8 checksum bytes for a record of ``head`` (up to the checksum) and ``body``."""
    mask = (1 << 64) - 1
    value = _codec.checksum(head) ^ ((_codec.checksum(body) * 0x9E3779B185EBCA87) & mask)
    return value.to_bytes(8, "big")


def tampered_records(record, count, seed):
    """``count`` copies of ``record`` with 1 to 3 bytes of its body (after the header and
    checksum) set at random, each with its checksum forged to match."""
    rng = random.Random(seed)
    head = record[:record.index(b"\xcf") + 1]
    for _ in range(count):
        body = bytearray(record[len(head) + 8:])
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        yield head + forge_checksum(head, bytes(body)) + bytes(body)
