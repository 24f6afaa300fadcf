"""forge_checksum: the record checksum a savepoint record's header carries, recomputed for
a tampered body -- so fuzz tests reach the body decoder instead of the checksum check."""
from engine import _codec


def forge_checksum(head, body):
    """The 8 checksum bytes for a record of ``head`` (up to the checksum) and ``body``."""
    mask = (1 << 64) - 1
    value = _codec.checksum(head) ^ ((_codec.checksum(body) * 0x9E3779B185EBCA87) & mask)
    return value.to_bytes(8, "big")
