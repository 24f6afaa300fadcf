# Code fingerprints, cached in a code-extra slot, and the pinned-code records the
# store keeps under them.

cdef void _release_extra(void *value) noexcept with gil:
    Py_XDECREF(<PyObject *>value)


# Each code object carries its fingerprint in a code-extra slot (like the frame core's
# stack table): freed with the code, no lookup by id.
cdef Py_ssize_t _fingerprint_slot = sp_request_code_extra_index(_release_extra)
if _fingerprint_slot < 0:
    raise ImportError("engine._codec: no code-object extra slot is available")


def _stable(obj):
    """Bytes that identify a constant the same way in every process (no hash seeds)."""
    cls = type(obj)
    if cls is _CodeType:
        return b"C" + fingerprint(obj)
    if cls is tuple:
        return b"T(" + b",".join(_stable(x) for x in obj) + b")"
    if cls is frozenset:
        return b"F(" + b",".join(sorted(_stable(x) for x in obj)) + b")"
    if cls is str:
        return b"S" + obj.encode("utf-8", "surrogatepass")
    if cls is bytes:
        return b"B" + obj
    if cls is float:
        return b"f" + obj.hex().encode()
    if cls is complex:
        return b"c" + obj.real.hex().encode() + b"," + obj.imag.hex().encode()
    return cls.__name__.encode() + b":" + repr(obj).encode()


cpdef bytes fingerprint(code):
    """A 16-byte digest of everything that makes ``code`` behave as it does."""
    cdef void *cached = NULL
    if type(code) is _CodeType and \
            sp_code_get_extra(<PyCodeObject *>code, _fingerprint_slot, &cached) == 0 and cached != NULL:
        return <bytes>cached
    if type(code) is not _CodeType:
        raise TypeError(f"fingerprint() needs a code object, not {type(code).__name__}")
    h = hashlib.blake2b(digest_size=16)
    for part in (code.co_code, code.co_exceptiontable, code.co_linetable,
                 _stable(code.co_consts), _stable(code.co_names), _stable(code.co_varnames),
                 _stable(code.co_freevars), _stable(code.co_cellvars),
                 _stable((code.co_flags, code.co_argcount, code.co_posonlyargcount,
                          code.co_kwonlyargcount, code.co_stacksize, code.co_nlocals,
                          code.co_firstlineno, code.co_name, code.co_qualname,
                          code.co_filename))):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    digest = h.digest()
    _set_code_extra(code, _fingerprint_slot, digest)
    return digest


def encode_code(code):
    """The bytes the store pins for a code object: its fingerprint, then marshal data."""
    import marshal
    return fingerprint(code) + marshal.dumps(code)


def decode_code(data, expected=None):
    """Rebuild a pinned code object, checking that it is what its fingerprint says."""
    import marshal
    data = bytes(data)
    if len(data) < 17:
        raise CorruptSavepoint("pinned code record is truncated")
    digest = data[:16]
    if expected is not None and digest != expected:
        raise CorruptSavepoint("pinned code record belongs to another fingerprint")
    try:
        code = marshal.loads(data[16:])
    except Exception as e:
        raise CorruptSavepoint(f"pinned code record is damaged: {e}") from None
    if type(code) is not _CodeType or fingerprint(code) != digest:
        raise CorruptSavepoint("pinned code record does not match its fingerprint")
    return code


cdef int _set_code_extra(code, Py_ssize_t slot, object value) except -1:
    cdef void *old = NULL
    sp_code_get_extra(<PyCodeObject *>code, slot, &old)
    Py_INCREF(value)
    if sp_code_set_extra(<PyCodeObject *>code, slot, <PyObject *>value) < 0:
        Py_DECREF(value)
        raise MemoryError()
    Py_XDECREF(<PyObject *>old)
    return 0
