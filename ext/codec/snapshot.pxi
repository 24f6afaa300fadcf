# Snapshots: captured frames to a savepoint record (header, checksum, code table,
# body) and back.

FORMAT_VERSION = 1
PYTHON_VERSION = "%d.%d" % sys.version_info[:2]
MAGIC = importlib.util.MAGIC_NUMBER


def checksum(data):
    """The record checksum (XXH64, seed 0) of ``data``."""
    data = bytes(data)
    return cd_checksum(<const unsigned char *>PyBytes_AS_STRING(data), len(data))


cdef str _slot_name(code, Py_ssize_t i):
    return code._varname_from_oparg(i)


def _where(frame):
    code = frame.code
    return f"{code.co_qualname} ({code.co_filename}:{frame.line})"


cdef str _frame_module(Frame frame):
    """The name of the module whose globals the frame runs in."""
    module = _function_module(frame.func)
    if module is None:
        raise SavepointError(f"cannot take a savepoint in {_where(frame)}: {_GLOBALS_ADVICE}")
    return module


cdef _encode_frames(Encoder enc, frames):
    cdef Py_ssize_t i
    cdef Frame frame
    if type(frames) is not tuple:
        frames = tuple(frames)
    for item in <tuple>frames:
        if not isinstance(item, Frame):
            raise TypeError(f"encode_snapshot() takes Frame objects, not "
                            f"{type(item).__name__}")
    for frame in <tuple>frames:       # generators whose frame is in the chain
        if frame.link is not None:
            if enc.chain is None:
                enc.chain = {}
            enc.chain[id(frame.link[0])] = _frame_module(frame)
    enc.skip_index()              # the list of frames
    cd_array_header(&enc.buf, len(frames))
    for frame in frames:
        code = frame.code
        module = _frame_module(frame)
        enc.module = module
        enc.skip_index()          # the frame's list
        cd_array_header(&enc.buf, 6 if frame.link is None else 9)
        enc.encode(enc.code_ref(code, module))
        enc.encode(module)
        enc.encode(frame.offset)
        enc.skip_index()
        values = frame.locals
        cd_array_header(&enc.buf, len(values))
        i = 0
        try:
            for value in values:
                enc.encode(value)
                i += 1
        except _Unencodable as e:
            raise SavepointError(
                f"local '{_slot_name(code, i)}' in {_where(frame)} holds {e.what}; a "
                f"savepoint cannot hold it -- {e.advice}") from None
        enc.skip_index()
        values = frame.stack
        cd_array_header(&enc.buf, len(values))
        i = 0
        try:
            for value in values:
                enc.encode(value)
                i += 1
        except _Unencodable as e:
            raise SavepointError(
                f"value-stack item {i} (a value the expression around the call is "
                f"still using) in {_where(frame)} holds {e.what}; a savepoint cannot "
                f"hold it -- {e.advice}") from None
        try:
            enc.encode(frame.exc)
        except _Unencodable as e:
            raise SavepointError(f"the exception being handled in {_where(frame)} holds "
                                 f"{e.what}; a savepoint cannot hold it -- {e.advice}") \
                from None
        if frame.link is not None:
            gen, via, default = frame.link
            if type(gen) is not _GeneratorType or via not in _VIAS:
                raise TypeError(f"{_where(frame)}: a generator frame needs its generator "
                                f"and one of {sorted(_VIAS)} as via")
            enc.encode(gen)
            enc.encode(via)
            try:
                enc.encode(default)
            except _Unencodable as e:
                raise SavepointError(f"the default of the next() call driving "
                                     f"{_where(frame)} holds {e.what}; a savepoint cannot "
                                     f"hold it -- {e.advice}") from None


# ["SPE", FORMAT_VERSION, "3.11", magic, checksum, codes, body]: everything up to the
# checksum is the same for every record this interpreter writes.
cdef bytes _RECORD_HEAD = (b"\x97\xa3SPE" + bytes([FORMAT_VERSION]) +
                           bytes([0xa0 | len(PYTHON_VERSION)]) + PYTHON_VERSION.encode() +
                           bytes([0xc4, len(MAGIC)]) + MAGIC + b"\xcf")
cdef Py_ssize_t _TAIL_START = len(_RECORD_HEAD) + 8


cdef cd_buf _tail             # reused by encode_snapshot for the code table
_tail.data = NULL
_tail.len = 0
_tail.cap = 0


cdef int _write_str(cd_buf *b, str s) except -1:
    cdef Py_ssize_t n
    cdef const char *data = PyUnicode_AsUTF8AndSize(s, &n)
    cd_str_header(b, n)
    cd_write(b, data, n)
    return 0


def encode_snapshot(frames, *, externals=None, Trust trust=None, dict chunks=None,
                    result=None):
    """Encode a frame snapshot (as engine._frames.capture returns it) into a savepoint
    record.  Returns ``(record, codes)``: the bytes, and the code objects the record
    refers to by fingerprint, for the store to pin.  With a ``chunks`` dict, values
    whose encoding reaches CHUNK_MIN bytes are cut out into it ({hash: bytes}) and the
    record refers to them by hash.  ``result`` is what the interrupted call returns when
    the frames resume (decode_savepoint gives it back)."""
    cdef Encoder enc = _encoder(externals, trust, chunks)
    cdef cd_buf *tail = &_tail
    cdef bytes record
    cdef char *out
    cdef Py_ssize_t i
    try:
        _encode_frames(enc, frames)
        try:
            enc.encode(result)
        except _Unencodable as e:
            raise SavepointError(f"the result of the Flow-API call holds {e.what}; a "
                                 f"savepoint cannot hold it -- {e.advice}") from None
        codes = enc.codes
        # the code table: [module, qualname, fingerprint] each, written without a memo
        tail.len = 0
        cd_array_header(tail, len(codes))
        for i in range(len(codes)):
            code = codes[i]
            cd_array_header(tail, 3)
            _write_str(tail, enc.code_modules[i])
            _write_str(tail, code.co_qualname)
            digest = fingerprint(code)
            cd_bin_header(tail, 16)
            cd_write(tail, PyBytes_AS_STRING(digest), 16)
        cd_write(tail, enc.buf.data, enc.buf.len)
        record = PyBytes_FromStringAndSize(NULL, _TAIL_START + tail.len)
        out = PyBytes_AS_STRING(record)
        memcpy(out, PyBytes_AS_STRING(_RECORD_HEAD), len(_RECORD_HEAD))
        memcpy(out + _TAIL_START, tail.data, tail.len)
        _put_u64(out + len(_RECORD_HEAD), _record_checksum(
            <const unsigned char *>out, len(_RECORD_HEAD), _TAIL_START + tail.len))
        return record, codes
    except _Unencodable as e:
        raise SavepointError(f"cannot save {e.what}; {e.advice}") from None
    finally:
        _done_encoding(enc)


cdef inline void _put_u64(char *out, uint64_t v):
    cdef int i
    for i in range(8):
        out[i] = <char>(<unsigned char>((v >> (8 * (7 - i))) & 0xFF))


cdef inline uint64_t _record_checksum(const unsigned char *p, Py_ssize_t head,
                                     Py_ssize_t n):
    """The checksum of a record: over its header (up to the checksum) and everything after
    the checksum.  A damaged header fails it too, so only an intact record of another
    version gets the "another version" answer."""
    cdef uint64_t mix = 0x9E3779B185EBCA87ULL
    return cd_checksum(p, head) ^ (cd_checksum(p + head + 8, n - head - 8) * mix)


cdef Py_ssize_t _check_header(bytes record) except -1:
    """Check the header and checksum; returns where the codes table starts."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(record)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(record)
    cdef Py_ssize_t head = len(_RECORD_HEAD)
    if n >= _TAIL_START and memcmp(p, PyBytes_AS_STRING(_RECORD_HEAD), head) == 0:
        if cd_get_be(p + head, 8) != _record_checksum(p, head, n):
            raise CorruptSavepoint("savepoint record fails its checksum")
        return _TAIL_START
    _explain_header(record)
    raise CorruptSavepoint("not a savepoint record")


cdef _explain_header(bytes record):
    """A header that is not this interpreter's: if it is an intact record of another
    format or Python version, say so (SavepointError); otherwise return."""
    cdef Decoder dec = Decoder()
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(record)
    cdef Py_ssize_t head
    dec.setup(record, 0, None, None)
    try:
        if dec.need(1)[0] != 0x97 or dec.decode() != "SPE":
            return
        version = dec.decode()
        python = dec.decode()
        magic = dec.decode()
        if dec.need(1)[0] != 0xcf:
            return
        head = dec.pos           # the header up to and with the checksum's type byte
        stored = cd_get_be(dec.need(8), 8)
    except Exception:
        return
    if stored != _record_checksum(p, head, len(record)):
        raise CorruptSavepoint("savepoint record fails its checksum")
    if version != FORMAT_VERSION:
        raise SavepointError(f"savepoint record has format version {version!r}; this engine "
                             f"reads version {FORMAT_VERSION}")
    if python != PYTHON_VERSION or magic != MAGIC:
        raise SavepointError(f"savepoint was taken on Python {python} (bytecode magic "
                             f"{magic!r}); this is Python {PYTHON_VERSION} ({MAGIC!r}) -- "
                             f"it cannot run here")


def read_header(record):
    """Check a record's header and checksum and return its code table: a list of
    (module, qualname, fingerprint).  Raises CorruptSavepoint, or SavepointError for a
    record of another Python version or format."""
    if type(record) is not bytes:
        record = bytes(record)
    cdef Py_ssize_t start = _check_header(record)
    cdef Decoder dec = _decoder(record, start, None, None)
    try:
        return _read_codes(dec)
    except Exception as e:
        raise _damaged(e) from None
    finally:
        _done_decoding(dec)


cdef list _read_codes(Decoder dec):
    """The record's code table: [(module, qualname, fingerprint), ...]."""
    cdef Py_ssize_t n = dec.array_header()
    cdef list out = []
    for _ in range(n):
        if dec.array_header() != 3:
            raise CorruptSavepoint("savepoint record is damaged")
        entry = dec.tuple_of(3)
        if type(entry[0]) is not str or type(entry[1]) is not str or \
                type(entry[2]) is not bytes or len(entry[2]) != 16:
            raise CorruptSavepoint("savepoint record is damaged")
        out.append(entry)
    return out


def decode_snapshot(record, codes, *, externals=None, Trust trust=None, chunks=None):
    """The frames of a savepoint record (see decode_savepoint)."""
    return decode_savepoint(record, codes, externals=externals, trust=trust,
                            chunks=chunks)[0]


def decode_savepoint(record, codes, *, externals=None, Trust trust=None, chunks=None,
                     bint inspect=False):
    """Rebuild the frames of a savepoint record.  ``codes`` gives the pinned code objects
    the record uses: a mapping from fingerprint to code object, or a callable
    ``codes(fingerprint, module, qualname)`` returning it.  ``chunks`` gives the big
    values cut out by encode_snapshot: a dict {hash: bytes} or a callable hash -> bytes.
    With ``inspect``, nothing is built or imported that could run code: instances,
    iterators, exceptions of user classes and names in modules not imported come back
    as Unbuilt stand-ins (their class and state), for showing, never for resuming.
    Returns (frames, result)."""
    if type(record) is not bytes:
        record = bytes(record)
    cdef Py_ssize_t start = _check_header(record)
    cdef Decoder dec = _decoder(record, start, externals, trust)
    cdef Py_ssize_t n, i
    cdef list frames
    cdef bint lookup = isinstance(codes, dict)
    dec.chunks = chunks
    dec.inspecting = inspect
    quiet_enter()        # generators of a record found damaged are dropped without running
    try:
        n = dec.array_header()
        for i in range(n):
            if dec.array_header() != 3:
                raise CorruptSavepoint("savepoint record is damaged")
            module = dec.decode()
            qualname = dec.decode()
            digest = dec.decode()
            if type(digest) is not bytes or len(digest) != 16:
                raise CorruptSavepoint("savepoint record is damaged")
            # a mapping is the store's cache of verified code; a callable's answer is checked
            code = (<dict>codes).get(digest) if lookup else codes(digest, module, qualname)
            if code is None or type(code) is not _CodeType or \
                    (not lookup and fingerprint(code) != digest):
                raise CorruptSavepoint(f"pinned code for {module}.{qualname} is missing or "
                                       f"does not match the savepoint")
            dec.codes.append(code)
        _clear(dec.memo)              # the body was encoded with its own memo
        n = dec.array_header()
        frames = []
        for i in range(n):
            frames.append(_read_frame(dec))
        result = dec.decode()
        if dec.pos != dec.end:
            raise CorruptSavepoint("savepoint body has trailing bytes")
        if dec.chain:
            raise CorruptSavepoint("savepoint names a generator in its chain that no "
                                   "frame of the chain is")
        return tuple(frames), result     # frames as engine._frames.capture gives them
    except Exception as e:
        frames = None        # its generators go now, while they cannot run (quiet)
        raise _damaged(e.with_traceback(None)) from None
    finally:
        _done_decoding(dec)
        quiet_exit()


cdef object _read_frame(Decoder dec):
    """[code index, module, offset, locals, stack, exception] -> Frame; a generator's
    frame has [..., generator, via, default] after them."""
    cdef Py_ssize_t size = dec.array_header()
    if size != 6 and size != 9:
        raise CorruptSavepoint("malformed frame")
    code_index = dec.decode()
    module_name = dec.decode()
    offset = dec.decode()
    locals_ = dec.tuple_of(dec.array_header())
    stack = dec.tuple_of(dec.array_header())
    exc = dec.decode()
    if type(code_index) is not int or not 0 <= code_index < len(dec.codes) or \
            type(offset) is not int:
        raise CorruptSavepoint("malformed frame")
    code = dec.codes[code_index]
    # keep the module referenced while its dict is borrowed: an inspected savepoint's
    # stand-in module (nothing else holds it) would free the dict with it
    module = dec.module(module_name)
    func = _stand_in_function(code, module)
    if size == 6:
        return new_frame(func, code, offset, locals_, stack, exc)
    gen = dec.decode()
    via = dec.decode()
    default = dec.decode()
    if via not in _VIAS or not any(g is gen for g in dec.chain):
        raise CorruptSavepoint("malformed generator frame")
    dec.chain = [g for g in dec.chain if g is not gen]   # each is one frame of the chain
    return new_frame(func, code, offset, locals_, stack, exc, (gen, via, default))
