# Signing: what the store keeps is signed with its secret key.

DEF TAG = 16                     # bytes of a signature
TAG_SIZE = TAG


cdef class Signer:
    """A store's secret key: every value the store writes carries a 16-byte tag
    (SipHash-2-4, 128-bit output) over its bytes, and a value whose tag does not match
    is CorruptSavepoint -- never decoded.  Someone who can write the store but does not
    know the key cannot make the engine accept a record."""

    def __init__(self, bytes key not None):
        if len(key) != 16:
            raise ValueError(f"a signing key is 16 bytes, not {len(key)}")
        cdef const unsigned char *k = <const unsigned char *>PyBytes_AS_STRING(key)
        self.k0 = _get_le(k)
        self.k1 = _get_le(k + 8)

    cdef void _tag(self, const unsigned char *p, Py_ssize_t n, char *out):
        cdef uint64_t h[2]
        cd_siphash128(p, n, self.k0, self.k1, h)
        _put_le(out, h[0])
        _put_le(out + 8, h[1])

    def tag(self, data):
        """The 16-byte tag of ``data``."""
        data = bytes(data)
        out = PyBytes_FromStringAndSize(NULL, TAG)
        self._tag(<const unsigned char *>PyBytes_AS_STRING(data), len(data),
                  PyBytes_AS_STRING(out))
        return out

    cdef bint _verify(self, const unsigned char *p, Py_ssize_t n):
        """Whether p[0:n] is a 16-byte tag followed by the bytes it signs."""
        cdef char expected[16]
        cdef unsigned char diff = 0
        cdef int i
        if n < TAG:
            return False
        self._tag(p + TAG, n - TAG, expected)
        for i in range(TAG):           # in constant time
            diff |= p[i] ^ <unsigned char>expected[i]
        return diff == 0


cdef inline uint64_t _get_le(const unsigned char *p):
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef inline void _put_le(char *out, uint64_t v):
    cdef int i
    for i in range(8):
        out[i] = <char>(<unsigned char>((v >> (8 * i)) & 0xFF))


def seal(value, Signer signer not None, *, externals=None, Trust trust=None):
    """encode_value(value) behind its 16-byte tag (``signer``): how the store keeps
    every value, so damage and forgery are found before decoding."""
    cdef Encoder enc = _encoder(externals, trust)
    cdef bytes out
    cdef char *p
    try:
        enc.encode(value)
        if enc.codes:
            raise SavepointError("cannot save a nested function outside a savepoint")
        out = PyBytes_FromStringAndSize(NULL, TAG + enc.buf.len)
        p = PyBytes_AS_STRING(out)
        memcpy(p + TAG, enc.buf.data, enc.buf.len)
        signer._tag(<const unsigned char *>enc.buf.data, enc.buf.len, p)
        return out
    except _Unencodable as e:
        raise SavepointError(f"cannot save {e.what}; {e.advice}") from None
    finally:
        _done_encoding(enc)


def unseal(data, what, Signer signer not None, *, externals=None, Trust trust=None):
    """The value of a sealed record; CorruptSavepoint naming ``what`` if it is damaged
    or was not signed with ``signer``'s key."""
    if type(data) is not bytes:
        data = bytes(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    if not signer._verify(p, n):
        raise CorruptSavepoint(f"{what} is damaged or forged (its signature does not "
                               f"match the store's key)")
    cdef Decoder dec = _decoder(data, TAG, externals, trust)
    try:
        value = dec.decode()
        if dec.pos != dec.end:
            raise CorruptSavepoint("trailing bytes")
        return value
    except Exception as e:
        raise CorruptSavepoint(f"{what} is damaged: {_damaged(e)}") from None
    finally:
        _done_decoding(dec)
