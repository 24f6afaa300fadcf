# Chunks: big values cut out of a record and stored apart under their content hash
# (the encoder cuts them, the decoder reads them back).

# Values big enough (CHUNK_MIN encoded bytes) are stored as chunks of their own when the
# caller collects chunks: containers and strings, whose bytes repeat unchanged between
# savepoints of a loop.
CHUNK_MIN = 4096
cdef tuple _CHUNKABLE = (list, dict, tuple, set, frozenset, str, bytes, bytearray,
                         collections.deque, collections.OrderedDict)


cdef bytes _chunk_hash(const unsigned char *data, Py_ssize_t n):
    """16 bytes: XXH64 with seeds 0 and 1."""
    cdef char out[16]
    cdef uint64_t a = cd_xxh64(data, n, 0), b = cd_xxh64(data, n, 1)
    cdef int i
    for i in range(8):
        out[i] = <char>(<unsigned char>((a >> (8 * (7 - i))) & 0xFF))
        out[8 + i] = <char>(<unsigned char>((b >> (8 * (7 - i))) & 0xFF))
    return PyBytes_FromStringAndSize(out, 16)


def chunk_hash(data):
    """The content hash a chunk is stored under."""
    data = bytes(data)
    return _chunk_hash(<const unsigned char *>PyBytes_AS_STRING(data), len(data))
