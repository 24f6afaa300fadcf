# The encoder: Python values to msgpack (the format is in the module docstring), and
# encode_value for one value.

class _Unencodable(Exception):
    """Raised inside the encoder; encode_snapshot turns it into a SavepointError that
    names the local or stack slot."""

    def __init__(self, what, advice):
        super().__init__(what)
        self.what = what
        self.advice = advice


def _describe(obj):
    """What an unencodable object is, in words, and what to do about it."""
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    close = "close it before the Flow-API call or keep it out of the flow's locals"
    if isinstance(obj, io.IOBase):
        return f"an open file ({name})", close
    if cls.__name__ in ("socket", "SSLSocket") or "socket" in cls.__module__:
        return f"a socket ({name})", close
    if "lock" in cls.__name__.lower() or cls.__name__ in ("Condition", "Semaphore", "Event"):
        return f"a lock ({name})", "release it and keep it out of the flow's locals"
    if isinstance(obj, (types.CoroutineType, types.AsyncGeneratorType)):
        what = "a coroutine" if isinstance(obj, types.CoroutineType) else "an async generator"
        return (f"{what} ({name}); coroutines and async generators cannot be saved (not "
                f"yet)", "finish it before the Flow-API call")
    if isinstance(obj, (types.FrameType, types.TracebackType)):
        return f"a {cls.__name__} ({name})", "keep it out of the flow's locals"
    if cls.__module__ not in ("builtins",) and not isinstance(obj, type):
        return (f"an instance of {name}, a class that is neither defined in a flow's module "
                f"nor trusted", f"trust it with eng.trust({cls.__qualname__}) or keep it "
                f"out of the flow's locals")
    return f"a {name} object", "keep it out of the flow's locals at Flow-API calls"


cdef class Encoder:
    cdef cd_buf buf
    cdef cd_ptrmap memo
    cdef int32_t count          # memo indices handed out
    cdef unsigned char *building  # 1 at the index of an object decoded only after its parts
    cdef Py_ssize_t building_cap
    cdef Py_ssize_t building_top  # above the highest index ever flagged since reset
    cdef list keep              # temporaries whose addresses are in the memo
    cdef dict externals         # id(obj) -> name
    cdef Trust trust
    cdef list codes             # code objects the value refers to, in first-use order
    cdef list code_modules      # the module each of them runs in
    cdef cd_ptrmap code_map     # code object -> index in codes
    cdef int depth
    cdef bint cell_contents     # a REF to an object being built is allowed here (a
                                # cell's direct contents)
    cdef dict chunks            # content hash -> bytes of big values cut out, or None
    cdef object externals_source  # the externals dict self.externals was made from
    cdef dict chain             # id(generator) -> module, for generators whose frame is
                                # in the snapshot's chain (their frame record holds it)
    cdef str module             # the module of the frame being encoded

    def __cinit__(self):
        self.buf.data = NULL
        self.buf.len = 0
        self.buf.cap = 0
        self.building = NULL
        self.building_cap = 0
        self.building_top = 0

    def __dealloc__(self):
        PyMem_Free(self.buf.data)
        PyMem_Free(self.building)
        cd_ptrmap_free(&self.memo)
        cd_ptrmap_free(&self.code_map)

    cdef setup(self, externals, Trust trust, dict chunks=None):
        if not externals:
            self.externals = None
            self.externals_source = None
        elif externals is not self.externals_source:     # the runtime passes one dict
            self.externals_source = externals
            self.externals = {id(v): k for k, v in externals.items()}
        self.trust = trust if trust is not None else _NO_TRUST
        self.chunks = chunks
        self.reset()

    cdef reset(self):
        self.buf.len = 0
        cd_ptrmap_clear(&self.memo)
        self.count = 0
        if self.building_top:
            memset(self.building, 0, self.building_top)
            self.building_top = 0
        self.keep = None
        self.codes = None
        self.code_modules = None
        cd_ptrmap_clear(&self.code_map)
        self.depth = 0
        self.cell_contents = False
        self.chain = None
        self.module = None

    cdef bytes take(self):
        return PyBytes_FromStringAndSize(self.buf.data, self.buf.len)

    # -- memo --
    cdef inline int remember(self, object o) except -1:
        """Give ``o`` the next index and return it.  ``o`` must stay alive until the
        encoder is reset (its address is the memo key): values of the encoded graph are;
        temporaries made while encoding go into self.keep."""
        cdef int32_t index = self.count
        cd_ptrmap_put(&self.memo, <PyObject *>o, index)
        self.count += 1
        return index

    cdef inline int skip_index(self) except -1:
        """An array the decoder counts but nothing refers to (record structure)."""
        self.count += 1
        return 0

    cdef int ref(self, int32_t index) except -1:
        if index < self.building_top and self.building[index] and not self.cell_contents:
            raise _Unencodable(
                "a value that contains itself through a tuple, frozenset, function or "
                "other object built from its parts",
                "break the cycle through a list or dict")
        if index < 256:
            cd_ext_header(&self.buf, 1, EXT_REF)
            cd_reserve(&self.buf, 1)
            cd_put_be(&self.buf, index, 1)
        elif index < 65536:
            cd_ext_header(&self.buf, 2, EXT_REF)
            cd_reserve(&self.buf, 2)
            cd_put_be(&self.buf, index, 2)
        else:
            cd_ext_header(&self.buf, 4, EXT_REF)
            cd_reserve(&self.buf, 4)
            cd_put_be(&self.buf, index, 4)
        return 0

    cdef int set_building(self, int32_t index, bint flag) except -1:
        cdef Py_ssize_t cap
        cdef unsigned char *grown
        if index >= self.building_cap:
            cap = max(64, 2 * (index + 1))
            grown = <unsigned char *>PyMem_Realloc(self.building, cap)
            if grown == NULL:
                raise MemoryError()
            memset(grown + self.building_cap, 0, cap - self.building_cap)
            self.building = grown
            self.building_cap = cap
        self.building[index] = flag
        if index >= self.building_top:
            self.building_top = index + 1
        return 0

    cdef int keep_alive(self, object o) except -1:
        if self.keep is None:
            self.keep = []
        self.keep.append(o)
        return 0

    cdef int marker(self, int tag, Py_ssize_t nparts) except -1:
        """Array header for a marker composite with ``nparts`` items after the marker."""
        cd_array_header(&self.buf, nparts + 1)
        cd_ext_header(&self.buf, 1, tag)
        cd_reserve(&self.buf, 1)
        cd_put1(&self.buf, 0)
        return 0

    cdef int32_t code_ref(self, code, module) except -1:
        cdef int32_t index = cd_ptrmap_get(&self.code_map, <PyObject *>code)
        if index >= 0:
            return index
        if self.codes is None:
            self.codes = []
            self.code_modules = []
        index = len(self.codes)
        self.codes.append(code)          # keeps the address in code_map valid
        self.code_modules.append(module)
        cd_ptrmap_put(&self.code_map, <PyObject *>code, index)
        return index

    # -- values --
    cdef inline int encode(self, object o) except -1:
        cdef Py_ssize_t start = self.buf.len
        if not cd_encode_simple(&self.buf, &self.memo, &self.count, <PyObject *>o):
            self.encode_rest(o)
        if self.chunks is not None and self.buf.len - start >= CHUNK_MIN:
            self.cut_chunk(start, o)
        return 0

    cdef int cut_chunk(self, Py_ssize_t start, object o) except -1:
        """Move the encoding of a big value (CHUNK_MIN bytes or more) out of the record
        into a content-addressed chunk, leaving an ext CHUNK with its hash.  The chunk
        shares the record's memo numbering, so sharing across the cut survives, and an
        unchanged big value in the same place makes the same chunk again."""
        if type(o) not in _CHUNKABLE:
            return 0
        cdef Py_ssize_t n = self.buf.len - start
        cdef const unsigned char *data = <const unsigned char *>(self.buf.data + start)
        digest = _chunk_hash(data, n)
        if digest not in self.chunks:
            self.chunks[digest] = PyBytes_FromStringAndSize(<const char *>data, n)
        self.buf.len = start
        cd_ext_header(&self.buf, 16, EXT_CHUNK)
        cd_write(&self.buf, PyBytes_AS_STRING(digest), 16)
        return 0

    cdef int encode_rest(self, object o) except -1:
        cdef type t = type(o)
        cdef int32_t index = cd_ptrmap_get(&self.memo, <PyObject *>o)
        cdef Py_ssize_t n
        cdef const char *s
        if index >= 0:
            return self.ref(index)
        # only a cell's own contents may be a REF to an object being built (the decoder
        # fills the cell later); a REF nested deeper, inside an object the contents
        # build, is a cycle the decoder cannot close
        self.cell_contents = False
        if t is int:           # beyond 64 bits
            payload = o.to_bytes((o.bit_length() + 8) // 8, "big", signed=True)
            cd_ext_header(&self.buf, len(payload), EXT_BIGINT)
            cd_write(&self.buf, payload, len(payload))
            return 0
        if t is str:           # with lone surrogates
            payload = (<str>o).encode("utf-8", "surrogatepass")
            if len(payload) >= CD_MEMO_STR_MIN:
                self.remember(o)
            cd_str_header(&self.buf, len(payload))
            cd_write(&self.buf, payload, len(payload))
            return 0
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Unencodable(f"a value nested more than {MAX_DEPTH} levels deep",
                               "flatten it")
        if t is list:
            self.remember(o)
            cd_array_header(&self.buf, len(<list>o))
            for item in <list>o:
                self.encode(item)
        elif t is dict:
            self.remember(o)
            cd_map_header(&self.buf, len(<dict>o))
            for key, value in (<dict>o).items():
                self.encode(key)
                self.encode(value)
        elif t is tuple:
            index = self.remember(o)
            self.set_building(index, True)
            self.marker(M_TUPLE, len(<tuple>o))
            for item in <tuple>o:
                self.encode(item)
            self.set_building(index, False)
        else:
            self.encode_other(o, t)
        self.depth -= 1
        return 0

    cdef int parts(self, int tag, tuple items) except -1:
        """A marker composite's parts (the caller remembered the object)."""
        self.keep_alive(items)
        self.marker(tag, len(items))
        for item in items:
            self.encode(item)
        return 0

    cdef int composite(self, object o, int tag, tuple items, bint build_after=True) except -1:
        self.keep_alive(items)     # parts made here (str(o), reduce results) stay alive
        cdef int32_t index = self.remember(o)
        if build_after:
            self.set_building(index, True)
        self.parts(tag, items)
        if build_after:
            self.set_building(index, False)
        return 0

    cdef int encode_global(self, object o, int tag=M_GLOBAL) except -1:
        owner = getattr(o, "__objclass__", None)    # method descriptors: list.append
        if owner is None and type(o) is _BuiltinFunctionType and isinstance(o.__self__, type):
            owner = o.__self__                      # classmethods of builtins: dict.fromkeys
        module = getattr(o if owner is None else owner, "__module__", None)
        qualname = getattr(o, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str):
            raise _Unencodable(f"{o!r}, which has no import path",
                               "keep it out of the flow's locals")
        try:
            found = _lookup(sys.modules[module], qualname)
        except (KeyError, AttributeError):
            found = None
        # builtin methods of a class (dict.fromkeys) are made anew on each lookup: equal
        if found is not o and not (type(o) is _BuiltinFunctionType and found == o):
            raise _Unencodable(f"{o!r}, which cannot be found again as {module}.{qualname}",
                               "define it at module level")
        self.composite(o, tag, (module, qualname))
        return 0

    cdef int encode_other(self, object o, type t) except -1:
        cdef int32_t index
        if self.externals is not None and id(o) in self.externals:
            return self.composite(o, M_EXTERNAL, (self.externals[id(o)],))
        if o is EMPTY:
            cd_ext_header(&self.buf, 1, EXT_EMPTY)
            cd_reserve(&self.buf, 1)
            cd_put1(&self.buf, 0)
            return 0
        if t is bytearray:
            self.remember(o)
            cd_ext_header(&self.buf, PyByteArray_GET_SIZE(o), EXT_BYTEARRAY)
            cd_write(&self.buf, PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o))
            return 0
        if t is complex:
            cd_ext_header(&self.buf, 16, EXT_COMPLEX)
            cd_double_raw(&self.buf, o.real)
            cd_double_raw(&self.buf, o.imag)
            return 0
        if t is set or t is frozenset:
            index = self.remember(o)
            self.set_building(index, True)
            self.marker(M_SET if t is set else M_FROZENSET, len(o))
            for item in o:
                self.encode(item)
            self.set_building(index, False)
            return 0
        if t is _CellType:
            index = self.remember(o)
            self.marker(M_CELL, 1)
            contents = PyCell_GET(o)
            self.cell_contents = True
            self.encode(<object>contents if contents != NULL else EMPTY)
            self.cell_contents = False
            return 0
        if t is _FunctionType:
            return self.encode_function(o)
        if t is _MethodType:
            return self.composite(o, M_METHOD, (o.__func__, o.__self__))
        if t is _BuiltinFunctionType:
            owner = o.__self__
            if owner is None or type(owner) is _ModuleType or isinstance(owner, type):
                return self.encode_global(o)
            if type(owner) in _BUILTIN_SELF_TYPES:
                return self.composite(o, M_BUILTIN_METHOD, (owner, o.__name__))
            raise _Unencodable(f"a method of {type(owner).__qualname__} objects",
                               "keep it out of the flow's locals")
        if t is type or isinstance(o, type) or t in _DESCRIPTOR_TYPES or t is _CYFUNCTION:
            return self.encode_global(o)
        if t is _ModuleType:
            return self.composite(o, M_MODULE, (o.__name__,))
        if t is range:
            return self.composite(o, M_RANGE, (o.start, o.stop, o.step))
        if t is slice:
            return self.composite(o, M_SLICE, (o.start, o.stop, o.step))
        if t is _datetime:
            return self.composite(o, M_DATETIME, (o.year, o.month, o.day, o.hour, o.minute,
                                                  o.second, o.microsecond, o.tzinfo, o.fold))
        if t is _date:
            return self.composite(o, M_DATE, (o.year, o.month, o.day))
        if t is _time:
            return self.composite(o, M_TIME, (o.hour, o.minute, o.second, o.microsecond,
                                              o.tzinfo, o.fold))
        if t is _timedelta:
            return self.composite(o, M_TIMEDELTA, (o.days, o.seconds, o.microseconds))
        if t is _timezone:
            name = o.tzname(None)
            default = _timezone(o.utcoffset(None)).tzname(None)
            return self.composite(o, M_TIMEZONE, (o.utcoffset(None),
                                                  None if name == default else name))
        if t is _Decimal:
            return self.composite(o, M_DECIMAL, (str(o),))
        if t is _Fraction:
            return self.composite(o, M_FRACTION, (o.numerator, o.denominator))
        if t is _UUID:
            return self.composite(o, M_UUID, (o.bytes,))
        if t in _PATHS:
            return self.composite(o, M_PATH, (_PATHS[t], str(o)))
        if t is _OrderedDict or t is _Counter:
            self.remember(o)
            items = []
            for key, value in o.items():
                items.append(key)
                items.append(value)
            return self.parts(M_ORDEREDDICT if t is _OrderedDict else M_COUNTER, tuple(items))
        if t is _defaultdict:
            index = self.remember(o)
            items = [o.default_factory]
            for key, value in o.items():
                items.append(key)
                items.append(value)
            return self.parts(M_DEFAULTDICT, tuple(items))
        if t is _deque:
            self.remember(o)
            return self.parts(M_DEQUE, (o.maxlen,) + tuple(o))
        if t is _CodeType:
            raise _Unencodable("a code object", "hold the function instead")
        if t is _GeneratorType:
            return self.encode_generator(o)
        if t in _ITER_TYPES:
            return self.encode_iterator(o)
        if isinstance(o, _Enum):
            # a member by name; a combination of flags (no member of its own) by value
            name = o._name_ if o._name_ in t.__members__ else None
            return self.composite(o, M_ENUM, (t, name, o._value_))
        if isinstance(o, tuple) and hasattr(t, "_fields"):
            return self.composite(o, M_NAMEDTUPLE, (t,) + tuple(o))
        if isinstance(o, BaseException):
            return self.encode_exception(o, t)
        if self.trust.allows_class(t):
            return self.encode_instance(o, t)
        what, advice = _describe(o)
        raise _Unencodable(what, advice)

    cdef int encode_function(self, o) except -1:
        module = o.__module__
        target = sys.modules.get(module) if isinstance(module, str) else None
        try:
            found = _lookup(target, o.__qualname__) if target is not None else None
        except AttributeError:
            found = None
        if found is o:
            return self.composite(o, M_GLOBAL, (module, o.__qualname__))
        globals_name = o.__globals__.get("__name__")
        owner = sys.modules.get(globals_name) if isinstance(globals_name, str) else None
        if owner is None or owner.__dict__ is not o.__globals__:
            raise _Unencodable(f"the function {o.__qualname__}, whose globals are not a "
                               f"module's", "define it in a module")
        # no building flag: the decoder makes the function from its code and module (the
        # first four parts) before its defaults, closure and attributes, which may hold it
        return self.composite(o, M_FUNCTION, (
            self.code_ref(o.__code__, globals_name), globals_name, o.__name__, o.__qualname__,
            o.__defaults__, o.__kwdefaults__, o.__closure__, o.__dict__ or None),
            build_after=False)

    cdef int encode_generator(self, o) except -1:
        """A generator with its frame (codec/generators.pxi); one whose frame is in the
        snapshot's chain only by name: its frame record holds the frame."""
        code = o.gi_code
        name = o.__name__
        qualname = o.__qualname__
        if self.chain is not None and id(o) in self.chain:
            state, func, module = GEN_IN_CHAIN, None, self.chain[id(o)]
        else:
            status, func, _, offset, locals_, stack, exc = generator_state(o)
            if status == _FRAMES_GEN_RUNNING:
                raise _Unencodable(f"the generator {qualname}, running outside the flow's "
                                   f"frames", "keep it out of the flow's locals")
            state = _GEN_STATES[status]
            if func is None:
                module = _code_module(code, self.module or "?")
            else:
                module = _function_module(func)
                if module is None:
                    raise _Unencodable(f"the generator {qualname}, whose function's "
                                       f"globals are not a module's", "define it in a module")
                self.keep_alive((locals_, stack))
        self.remember(o)            # no building flag: decoding makes it before its parts
        self.marker(M_GENERATOR, 9)
        self.encode(self.code_ref(code, module))
        self.encode(module)
        self.encode(None if name == code.co_name else name)
        self.encode(None if qualname == code.co_qualname else qualname)
        self.encode(state)
        if state == GEN_CREATED or state == GEN_SUSPENDED:
            self.encode(offset)
            self.encode(locals_)
            self.encode(stack)
            self.encode(exc)
        else:
            for _ in range(4):
                self.encode(None)
        return 0

    cdef int encode_iterator(self, o) except -1:
        reduced = o.__reduce__()
        self.keep_alive(reduced)
        builder = _ITER_NAMES.get(reduced[0])
        if builder is None:
            raise _Unencodable(f"an iterator ({type(o).__name__})",
                               "turn it into a list before the Flow-API call")
        state = reduced[2] if len(reduced) > 2 else None
        return self.composite(o, M_ITER, (builder, reduced[1], state))

    cdef int encode_exception(self, o, type t) except -1:
        if not _exception_buildable(t, self.trust):
            what, advice = _describe(o)
            raise _Unencodable(what, advice)
        self.encode_global_check(t)
        return self.composite(o, M_EXCEPTION, (
            t, o.args, o.__dict__ or None, o.__cause__, o.__context__,
            o.__suppress_context__))

    cdef int encode_global_check(self, cls) except -1:
        try:
            found = _lookup(sys.modules[cls.__module__], cls.__qualname__)
        except (KeyError, AttributeError):
            found = None
        if found is not cls:
            raise _Unencodable(f"an instance of {cls.__qualname__}, a class that cannot "
                               f"be found by its import path", "define it at module level")
        return 0

    cdef int encode_instance(self, o, type t) except -1:
        self.encode_global_check(t)
        reduced = o.__reduce_ex__(4)
        self.keep_alive(reduced)
        if isinstance(reduced, str) or len(reduced) < 2:
            what, advice = _describe(o)
            raise _Unencodable(what, advice)
        func, args = reduced[0], reduced[1]
        state = reduced[2] if len(reduced) > 2 else None
        listitems = list(reduced[3]) if len(reduced) > 3 and reduced[3] is not None else None
        dictitems = list(reduced[4]) if len(reduced) > 4 and reduced[4] is not None else None
        if func is _newobj and args and args[0] is t:
            mode, args = 0, tuple(args[1:])
        elif func is t:
            mode, args = 1, tuple(args)
        else:
            raise _Unencodable(f"an instance of {t.__qualname__} whose __reduce__ rebuilds "
                               f"it with {func!r}", "give it __getstate__/__setstate__")
        self.keep_alive((args, listitems, dictitems))
        cdef int32_t index = self.remember(o)
        self.set_building(index, True)
        self.marker(M_INSTANCE, 6)
        self.encode(t)
        self.encode(mode)
        self.encode(args)
        self.set_building(index, False)        # state comes after the object exists
        self.encode(state)
        self.encode(listitems)
        self.encode(dictitems)
        return 0


# One encoder and one decoder are reused while idle (their buffers and memo tables stay
# allocated); a nested call (a trusted __reduce__ that saves a value itself) gets its own.
cdef Encoder _idle_encoder = Encoder()


cdef Encoder _encoder(externals, Trust trust, dict chunks=None):
    global _idle_encoder
    cdef Encoder enc = _idle_encoder
    if enc is None:
        enc = Encoder()
    _idle_encoder = None
    enc.setup(externals, trust, chunks)
    return enc


cdef _done_encoding(Encoder enc):
    global _idle_encoder
    enc.chunks = None
    enc.keep = None
    enc.codes = None
    enc.code_modules = None
    _idle_encoder = enc


def encode_value(value, *, externals=None, Trust trust=None):
    """Bytes for one value (no record header): for inputs, outputs and settings."""
    cdef Encoder enc = _encoder(externals, trust)
    try:
        enc.encode(value)
        if enc.codes:
            raise SavepointError("cannot save a nested function outside a savepoint")
        return enc.take()
    except _Unencodable as e:
        raise SavepointError(f"cannot save {e.what}; {e.advice}") from None
    finally:
        _done_encoding(enc)
