# The decoder: msgpack back to Python values, building only what the format and trust
# allow, and decode_value for one value; Unbuilt stands in for what inspection skips.

cdef object _PENDING = object()    # decoder memo slot of an object still being built
cdef list _SMALL_INT_OBJECTS = list(range(128))
cdef PyObject *_SMALL_INTS[128]
for _i in range(128):
    _SMALL_INTS[_i] = <PyObject *>_SMALL_INT_OBJECTS[_i]


cdef class _Pending:
    """A cell's contents that refer to an object still being built."""
    cdef Py_ssize_t index

    def __cinit__(self, Py_ssize_t index):
        self.index = index


class Unbuilt:
    """What an inspected savepoint shows in place of an object inspection does not build:
    an instance (shown as its class and state), an iterator, an exception of a user
    class, or a name in a module that is not imported."""
    __slots__ = ("kind", "name", "state")

    def __init__(self, kind, name, state=None):
        self.kind, self.name, self.state = kind, name, state

    def __repr__(self):
        if self.kind == "global":
            return f"<{self.name}>"
        if self.state is None:
            return f"<{self.name} {self.kind}>"
        return f"<{self.name} {self.kind} {self.state!r}>"

    def __call__(self, *args, **kwargs):
        raise SavepointError(f"{self!r} was not built: the savepoint was only inspected")


cdef str _type_name(cls):
    if type(cls) is Unbuilt:
        return (<object>cls).name
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"


cdef inline int _clear(list items) except -1:
    cd_list_empty(items)
    return 0


cdef class Decoder:
    cdef const unsigned char *p
    cdef Py_ssize_t pos
    cdef Py_ssize_t end
    cdef list memo
    cdef list fixups            # [cell, index]: fill the cell when object `index` exists
    cdef dict externals
    cdef Trust trust
    cdef list codes
    cdef list chain             # generators named as in the chain, not yet met as a frame
    cdef int depth
    cdef bint cell_slot         # the value being decoded is a cell's contents
    cdef object data            # keeps the buffer alive
    cdef object chunks          # content hash -> chunk bytes (mapping or callable), or None
    cdef bint inspecting        # build no instance, import no module (inspection)

    cdef setup(self, bytes data, Py_ssize_t start, externals, Trust trust):
        self.data = data
        self.p = <const unsigned char *>PyBytes_AS_STRING(data)
        self.pos = start
        self.end = PyBytes_GET_SIZE(data)
        if self.memo is None:
            self.memo = []
            self.fixups = []
            self.codes = []
            self.chain = []
        self.externals = externals
        self.trust = trust if trust is not None else _NO_TRUST
        self.depth = 0
        self.cell_slot = False
        self.chunks = None
        self.inspecting = False

    cdef release(self):
        """Drop every reference the last decode made (the lists stay for reuse)."""
        self.data = None
        self.chunks = None
        _clear(self.memo)
        _clear(self.fixups)
        _clear(self.codes)
        _clear(self.chain)
        self.externals = None

    cdef inline const unsigned char *need(self, Py_ssize_t n) except NULL:
        if n < 0 or self.end - self.pos < n:
            raise CorruptSavepoint("savepoint data is truncated")
        cdef const unsigned char *start = self.p + self.pos
        self.pos += n
        return start

    cdef inline Py_ssize_t length(self, int nbytes) except -1:
        return <Py_ssize_t>cd_get_be(self.need(nbytes), nbytes)

    cdef object decode(self):
        # self.cell_slot: only a cell's own contents may refer to an object still being
        # built (a function whose closure holds the cell).  ext() reads and clears it;
        # containers clear it, so nothing nested deeper gets the permission.
        if self.pos >= self.end:
            raise CorruptSavepoint("savepoint data is truncated")
        cdef unsigned char b = self.p[self.pos]
        cdef uint64_t u
        cdef double d
        cdef float f
        cdef Py_ssize_t n
        self.pos += 1
        if b <= 0x7f:
            return <object>_SMALL_INTS[b]
        if 0xa0 <= b <= 0xbf:
            n = b & 0x1f
            if self.end - self.pos < n:
                raise CorruptSavepoint("savepoint data is truncated")
            o = cd_cached_str(<const char *>(self.p + self.pos), n)
            self.pos += n
            return o                # short: no memo index (CD_MEMO_STR_MIN)
        if b >= 0xe0:
            return <long>b - 256
        if 0x90 <= b <= 0x9f:
            return self.array(b & 0x0f)
        if 0x80 <= b <= 0x8f:
            return self.map(b & 0x0f)
        if b == 0xc0:
            return None
        if b == 0xc2:
            return False
        if b == 0xc3:
            return True
        if b == 0xcc:
            return <long>self.need(1)[0]
        if b == 0xcd:
            return <long>cd_get_be(self.need(2), 2)
        if b == 0xce:
            return PyLong_FromUnsignedLongLong(cd_get_be(self.need(4), 4))
        if b == 0xcf:
            return PyLong_FromUnsignedLongLong(cd_get_be(self.need(8), 8))
        if b == 0xd0:
            return <long>(<signed char>self.need(1)[0])
        if b == 0xd1:
            return <long>(<short>cd_get_be(self.need(2), 2))
        if b == 0xd2:
            return <long>(<int>cd_get_be(self.need(4), 4))
        if b == 0xd3:
            return PyLong_FromLongLong(<long long>cd_get_be(self.need(8), 8))
        if b == 0xcb:
            u = cd_get_be(self.need(8), 8)
            memcpy(&d, &u, 8)
            return d
        if b == 0xca:
            u = cd_get_be(self.need(4), 4)
            memcpy(&f, (<char *>&u) , 4)
            return <double>f
        if b == 0xd9:
            return self.string(self.length(1))
        if b == 0xda:
            return self.string(self.length(2))
        if b == 0xdb:
            return self.string(self.length(4))
        if b == 0xc4:
            return self.binary(self.length(1))
        if b == 0xc5:
            return self.binary(self.length(2))
        if b == 0xc6:
            return self.binary(self.length(4))
        if b == 0xdc:
            return self.array(self.length(2))
        if b == 0xdd:
            return self.array(self.length(4))
        if b == 0xde:
            return self.map(self.length(2))
        if b == 0xdf:
            return self.map(self.length(4))
        if 0xd4 <= b <= 0xd8:
            return self.ext(1 << (b - 0xd4))
        if b == 0xc7:
            return self.ext(self.length(1))
        if b == 0xc8:
            return self.ext(self.length(2))
        if b == 0xc9:
            return self.ext(self.length(4))
        raise CorruptSavepoint(f"savepoint data holds an unknown msgpack byte 0x{b:02x}")

    cdef Py_ssize_t array_header(self) except -1:
        """The length of a plain array that is record structure, not a value (the
        encoder counted it with skip_index; it takes a memo slot nobody refers to)."""
        if self.pos >= self.end:
            raise CorruptSavepoint("savepoint data is truncated")
        cdef unsigned char b = self.p[self.pos]
        cdef Py_ssize_t n
        self.pos += 1
        if 0x90 <= b <= 0x9f:
            n = b & 0x0f
        elif b == 0xdc:
            n = self.length(2)
        elif b == 0xdd:
            n = self.length(4)
        else:
            raise CorruptSavepoint("savepoint record is damaged")
        if n > self.end - self.pos:
            raise CorruptSavepoint("savepoint data is truncated")
        self.memo.append(None)
        return n

    cdef tuple tuple_of(self, Py_ssize_t n):
        """``n`` values as a tuple (record structure: nothing refers to it)."""
        cdef tuple out = PyTuple_New(n)
        cdef Py_ssize_t i
        for i in range(n):
            item = self.decode()
            Py_INCREF(item)
            PyTuple_SET_ITEM(out, i, item)
        return out

    cdef object string(self, Py_ssize_t n):
        cdef const char *s = <const char *>self.need(n)
        o = cd_cached_str(s, n)
        if n >= CD_MEMO_STR_MIN:
            self.memo.append(o)
        return o

    cdef object binary(self, Py_ssize_t n):
        return PyBytes_FromStringAndSize(<const char *>self.need(n), n)

    cdef object array(self, Py_ssize_t n):
        cdef int tag
        cdef Py_ssize_t i
        self.cell_slot = False
        if n > self.end - self.pos:
            raise CorruptSavepoint("savepoint data is truncated")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CorruptSavepoint("savepoint data is nested too deeply")
        # a marker composite: fixext1 (0xd4) with an ext type in the marker range
        if n > 0 and self.end - self.pos >= 3 and self.p[self.pos] == 0xd4 and \
                M_FIRST <= self.p[self.pos + 1] <= M_LAST:
            tag = self.p[self.pos + 1]
            self.pos += 3
            o = self.composite(tag, n - 1)
            self.depth -= 1
            return o
        # Filled in place: None until decoded, never an unset slot that Python code
        # reached through a cycle could trip over.
        cdef list out = PyList_New(n)
        for i in range(n):
            Py_INCREF(None)
            PyList_SET_ITEM(out, i, None)
        self.memo.append(out)
        cdef unsigned char b
        cdef PyObject *small
        for i in range(n):
            b = self.p[self.pos] if self.pos < self.end else 0xc1
            if b <= 0x7f:          # small ints, the commonest item: no call
                self.pos += 1
                small = _SMALL_INTS[b]
                Py_INCREF(<object>small)
                Py_DECREF(None)
                PyList_SET_ITEM(out, i, <object>small)
                continue
            item = self.decode()
            Py_INCREF(item)
            Py_DECREF(None)
            PyList_SET_ITEM(out, i, item)
        self.depth -= 1
        return out

    cdef object map(self, Py_ssize_t n):
        self.cell_slot = False
        if n > self.end - self.pos:
            raise CorruptSavepoint("savepoint data is truncated")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CorruptSavepoint("savepoint data is nested too deeply")
        cdef dict out = sp_dict_new_presized(n)
        cdef unsigned char b
        self.memo.append(out)
        for _ in range(n):
            key = self.decode()
            b = self.p[self.pos] if self.pos < self.end else 0xc1
            if b <= 0x7f:          # small int values: no call
                self.pos += 1
                out[key] = <object>_SMALL_INTS[b]
            else:
                out[key] = self.decode()
        self.depth -= 1
        return out

    cdef object ext(self, Py_ssize_t n):
        cdef bint cell_slot = self.cell_slot
        self.cell_slot = False
        cdef int kind = <signed char>self.need(1)[0]
        cdef const unsigned char *payload = self.need(n)
        cdef uint64_t a, b
        cdef double re, im
        if kind == EXT_REF:
            if n not in (1, 2, 4):
                raise CorruptSavepoint("savepoint data holds a malformed reference")
            index = cd_get_be(payload, n)
            if index >= <uint64_t>len(self.memo):
                raise CorruptSavepoint("savepoint data refers to an object not seen yet")
            o = self.memo[index]
            if o is _PENDING:
                if not cell_slot:
                    raise CorruptSavepoint("savepoint data refers to an object inside itself")
                return _Pending(index)
            return o
        if kind == EXT_BIGINT:
            return int.from_bytes(PyBytes_FromStringAndSize(<const char *>payload, n), "big",
                                  signed=True)
        if kind == EXT_COMPLEX and n == 16:
            a = cd_get_be(payload, 8)
            b = cd_get_be(payload + 8, 8)
            memcpy(&re, &a, 8)
            memcpy(&im, &b, 8)
            return complex(re, im)
        if kind == EXT_EMPTY:
            return EMPTY
        if kind == EXT_CHUNK and n == 16:
            return self.chunk(PyBytes_FromStringAndSize(<const char *>payload, 16))
        if kind == EXT_BYTEARRAY:
            o = bytearray(PyBytes_FromStringAndSize(<const char *>payload, n))
            self.memo.append(o)
            return o
        raise CorruptSavepoint(f"savepoint data holds an unknown ext type {kind}")

    cdef object chunk(self, bytes digest):
        """Decode a big value stored apart, as if its bytes stood here."""
        if self.chunks is None:
            raise CorruptSavepoint("savepoint refers to a chunk, but no chunks were given")
        data = self.chunks.get(digest) if isinstance(self.chunks, dict) else \
            self.chunks(digest)
        if type(data) is not bytes or _chunk_hash(
                <const unsigned char *>PyBytes_AS_STRING(data), len(data)) != digest:
            raise CorruptSavepoint(f"savepoint chunk {digest.hex()} is missing or damaged")
        saved = (self.data, self.pos, self.end)
        self.data = data
        self.p = <const unsigned char *>PyBytes_AS_STRING(data)
        self.pos = 0
        self.end = len(data)
        try:
            o = self.decode()
            if self.pos != self.end:
                raise CorruptSavepoint(f"savepoint chunk {digest.hex()} is damaged")
        finally:
            self.data, self.pos, self.end = saved
            self.p = <const unsigned char *>PyBytes_AS_STRING(self.data)
        return o

    cdef list items(self, Py_ssize_t n):
        cdef list out = []
        for _ in range(n):
            out.append(self.decode())
        return out

    cdef object finish(self, Py_ssize_t index, object o):
        self.memo[index] = o
        if self.fixups:
            for fix in list(self.fixups):
                if fix[1] == index:
                    PyCell_Set(fix[0], <PyObject *>o)
                    self.fixups.remove(fix)
        return o

    cdef object composite(self, int tag, Py_ssize_t n):
        cdef Py_ssize_t index = len(self.memo)
        cdef Py_ssize_t i
        self.memo.append(_PENDING)
        if tag == M_TUPLE:
            t = PyTuple_New(n)
            for i in range(n):
                item = self.decode()
                Py_INCREF(item)
                PyTuple_SET_ITEM(t, i, item)
            return self.finish(index, t)
        if tag == M_CELL:
            if n != 1:
                raise CorruptSavepoint("malformed cell")
            cell = PyCell_New(NULL)
            self.memo[index] = cell
            self.cell_slot = True
            contents = self.decode()
            self.cell_slot = False
            if type(contents) is _Pending:
                # the cell sits inside the function (or other object) it holds: fill it
                # when that object is finished
                self.fixups.append([cell, (<_Pending>contents).index])
            elif contents is not EMPTY:
                PyCell_Set(cell, <PyObject *>contents)
            return cell
        if tag == M_SET:
            o = set()
            self.memo[index] = o
            o.update(self.items(n))
            return o
        if tag in (M_ORDEREDDICT, M_COUNTER, M_DEFAULTDICT):
            if tag == M_DEFAULTDICT:
                if n < 1:
                    raise CorruptSavepoint("malformed defaultdict")
                factory = self.decode()
                if factory is not None and not callable(factory):
                    raise CorruptSavepoint("defaultdict factory is not callable")
                if not self.inspecting and \
                        not _trusted_callable(factory, self.trust, self.codes):
                    raise SavepointError(f"savepoint holds a defaultdict whose factory "
                                         f"{factory!r} is not trusted")
                o = _defaultdict(factory)
                n -= 1
            else:
                o = _OrderedDict() if tag == M_ORDEREDDICT else _Counter()
            self.memo[index] = o
            if n % 2:
                raise CorruptSavepoint("malformed mapping")
            for i in range(n // 2):
                key = self.decode()
                o[key] = self.decode()
            return o
        if tag == M_DEQUE:
            if n < 1:
                raise CorruptSavepoint("malformed deque")
            maxlen = self.decode()
            if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
                raise CorruptSavepoint("malformed deque")
            o = _deque((), maxlen)
            self.memo[index] = o
            for i in range(n - 1):
                o.append(self.decode())
            return o
        if tag == M_INSTANCE:
            return self.instance(index, n)
        if tag == M_GENERATOR:
            return self.generator(index, n)
        if tag == M_FUNCTION and n == 8:
            return self.function(index)
        parts = self.items(n)
        return self.finish(index, self.build(tag, parts))

    cdef object instance(self, Py_ssize_t index, Py_ssize_t n):
        if n != 6:
            raise CorruptSavepoint("malformed instance")
        cls = self.decode()
        mode = self.decode()
        args = self.decode()
        if self.inspecting:
            return self.instance_view(index, cls, args)
        if not isinstance(cls, type) or type(args) is not tuple or mode not in (0, 1):
            raise CorruptSavepoint("malformed instance")
        if not self.trust.allows_class(cls):
            raise SavepointError(f"savepoint holds an instance of {cls.__module__}."
                                 f"{cls.__qualname__}, which is not trusted: define it in "
                                 f"a flow's module or call eng.trust() on it")
        o = cls.__new__(cls, *args) if mode == 0 else cls(*args)
        self.memo[index] = o
        state = self.decode()
        listitems = self.decode()
        dictitems = self.decode()
        if state is not None:
            setstate = getattr(o, "__setstate__", None)
            if setstate is not None:
                setstate(state)
            else:
                slotstate = None
                if type(state) is tuple and len(state) == 2:
                    state, slotstate = state
                if state:
                    o.__dict__.update(state)
                if slotstate:
                    for key, value in slotstate.items():
                        setattr(o, key, value)
        if listitems:
            for item in listitems:
                o.append(item)
        if dictitems:
            for key, value in dictitems:
                o[key] = value
        return self.finish(index, o)

    cdef object generator(self, Py_ssize_t index, Py_ssize_t n):
        """A generator (codec/generators.pxi): made first, finished and holding nothing,
        then its saved frame is put in -- validated by the frame core."""
        if n != 9:
            raise CorruptSavepoint("malformed generator")
        code_index = self.decode()
        module_name = self.decode()
        name = self.decode()
        qualname = self.decode()
        state = self.decode()
        if type(code_index) is not int or not 0 <= code_index < len(self.codes) or \
                state not in (GEN_CREATED, GEN_SUSPENDED, GEN_FINISHED, GEN_IN_CHAIN) or \
                (name is not None and type(name) is not str) or \
                (qualname is not None and type(qualname) is not str):
            raise CorruptSavepoint("malformed generator")
        code = self.codes[code_index]
        if self.inspecting:
            gen = Unbuilt("generator", qualname or code.co_qualname)
        else:
            gen = blank_generator(code, name or code.co_name, qualname or code.co_qualname)
        self.memo[index] = gen       # its own slots may refer to it
        offset = self.decode()
        locals_ = self.decode()
        stack = self.decode()
        exc = self.decode()
        if state == GEN_IN_CHAIN:
            self.chain.append(gen)
        elif state != GEN_FINISHED:
            if type(offset) is not int or type(locals_) is not tuple or \
                    type(stack) is not tuple:
                raise CorruptSavepoint("malformed generator")
            if self.inspecting:
                (<object>gen).state = {"line": _code_line(code, offset),
                                       "locals": _named_slots(code, locals_)}
            else:
                fill_generator(gen, _stand_in_function(code, self.module(module_name)),
                               _GEN_FILL[state], offset, locals_, stack, exc)
        return self.finish(index, gen)

    cdef object instance_view(self, Py_ssize_t index, cls, args):
        """An instance as inspection shows it: its class and state, nothing built."""
        view = Unbuilt("instance", _type_name(cls))
        self.memo[index] = view
        state = self.decode()
        listitems = self.decode()
        dictitems = self.decode()
        shown = {}
        if args:
            shown["args"] = args
        if state is not None:
            shown["state"] = state
        if listitems:
            shown["items"] = list(listitems)
        if dictitems:
            shown["entries"] = dict(dictitems)
        view.state = shown or None
        return self.finish(index, view)

    cdef object global_ref(self, module_name, qualname):
        if type(module_name) is not str or type(qualname) is not str:
            raise CorruptSavepoint("malformed import path")
        if self.inspecting and module_name not in _sys_modules:
            return Unbuilt("global", f"{module_name}.{qualname}")
        module = self.module(module_name)
        try:
            return _lookup(module, qualname)
        except AttributeError:
            if self.inspecting:
                return Unbuilt("global", f"{module_name}.{qualname}")
            raise SavepointError(f"savepoint refers to {module_name}.{qualname}, which no "
                                 f"longer exists") from None

    cdef object module(self, name):
        if type(name) is not str:
            raise CorruptSavepoint("malformed module name")
        module = _sys_modules.get(name)
        if module is not None:
            return module
        if self.inspecting:                  # imports nothing: an empty stand-in
            return _ModuleType(name)
        root = name.partition(".")[0]
        if (root in sys.stdlib_module_names and root not in _NO_IMPORT) or \
                self.trust.allows_module(name):
            return importlib.import_module(name)
        raise SavepointError(f"savepoint refers to module {name!r}, which is neither "
                             f"imported, in the standard library, nor trusted")

    cdef object build(self, int tag, list parts):
        cdef Py_ssize_t n = len(parts)
        if tag == M_FROZENSET:
            return frozenset(parts)
        if tag == M_RANGE and n == 3:
            return range(*parts)
        if tag == M_SLICE and n == 3:
            return slice(*parts)
        if tag == M_DATETIME and n == 9:
            return _datetime(*parts[:8], fold=parts[8])
        if tag == M_DATE and n == 3:
            return _date(*parts)
        if tag == M_TIME and n == 6:
            return _time(*parts[:5], fold=parts[5])
        if tag == M_TIMEDELTA and n == 3:
            return _timedelta(*parts)
        if tag == M_TIMEZONE and n == 2:
            return _timezone(parts[0]) if parts[1] is None else _timezone(*parts)
        if tag == M_DECIMAL and n == 1 and type(parts[0]) is str:
            return _Decimal(parts[0])
        if tag == M_FRACTION and n == 2 and type(parts[0]) is int and type(parts[1]) is int:
            return _Fraction(*parts)
        if tag == M_UUID and n == 1 and type(parts[0]) is bytes:
            return _UUID(bytes=parts[0])
        if tag == M_PATH and n == 2 and type(parts[0]) is int and 0 <= parts[0] < 4:
            return _PATH_TYPES[parts[0]](parts[1])
        if tag == M_GLOBAL and n == 2:
            return self.global_ref(parts[0], parts[1])
        if tag == M_MODULE and n == 1:
            return self.module(parts[0])
        if tag == M_EXTERNAL and n == 1:
            try:
                return self.externals[parts[0]]
            except (KeyError, TypeError):   # TypeError: no externals given
                raise SavepointError(f"savepoint refers to {parts[0]!r}, which this "
                                     f"process does not provide") from None
        if tag == M_METHOD and n == 2:
            if self.inspecting and type(parts[0]) is Unbuilt:
                return Unbuilt("method", (<object>parts[0]).name)
            if not callable(parts[0]):
                raise CorruptSavepoint("malformed method")
            return _MethodType(parts[0], parts[1])
        if tag == M_BUILTIN_METHOD and n == 2:
            if type(parts[0]) not in _BUILTIN_SELF_TYPES or type(parts[1]) is not str:
                raise CorruptSavepoint("malformed builtin method")
            return getattr(parts[0], parts[1])
        if tag == M_ITER and n == 3:
            return self.iterator(parts)
        if self.inspecting and tag in (M_ENUM, M_NAMEDTUPLE) and type(parts[0]) is Unbuilt:
            return Unbuilt("enum member" if tag == M_ENUM else "tuple",
                           (<object>parts[0]).name, parts[1:])
        if tag == M_ENUM and n == 3:
            cls = parts[0]
            if not (isinstance(cls, type) and issubclass(cls, _Enum)):
                raise CorruptSavepoint("malformed enum member")
            if parts[1] is not None:
                return cls.__members__[parts[1]]
            return cls(parts[2])
        if tag == M_NAMEDTUPLE and n >= 1:
            cls = parts[0]
            if not (isinstance(cls, type) and issubclass(cls, tuple)
                    and hasattr(cls, "_fields")):
                raise CorruptSavepoint("malformed namedtuple")
            return tuple.__new__(cls, parts[1:])
        if tag == M_EXCEPTION and n == 6:
            return self.exception(parts)
        raise CorruptSavepoint(f"savepoint data holds a malformed value (marker {tag})")

    cdef object function(self, Py_ssize_t index):
        """A function is made from its code and module first and is in the memo before
        its defaults, closure and attributes are decoded: those may hold the function
        itself (a closure whose cell holds a tuple or list holding it)."""
        code_index = self.decode()
        module_name = self.decode()
        name = self.decode()
        qualname = self.decode()
        if type(code_index) is not int or not 0 <= code_index < len(self.codes) or \
                type(name) is not str or type(qualname) is not str:
            raise CorruptSavepoint("malformed function")
        code = self.codes[code_index]
        # empty cells until the real closure is decoded: FunctionType wants as many
        # cells as the code has free variables
        func = _FunctionType(code, self.module(module_name).__dict__, name, None,
                             tuple(PyCell_New(NULL) for _ in code.co_freevars) or None)
        func.__qualname__ = qualname
        self.memo[index] = func
        defaults = self.decode()
        kwdefaults = self.decode()
        closure = self.decode()
        attrs = self.decode()
        if closure is not None and (type(closure) is not tuple or
                                    len(closure) != len(code.co_freevars) or
                                    any(type(c) is not _CellType for c in closure)):
            raise CorruptSavepoint("malformed closure")
        if closure is None and code.co_freevars:
            raise CorruptSavepoint("malformed closure")
        if defaults is not None and type(defaults) is not tuple or \
                kwdefaults is not None and type(kwdefaults) is not dict:
            raise CorruptSavepoint("malformed function defaults")
        # PyFunction_SetClosure: the one way to give a made function its cells
        # (__closure__ is read-only from Python); checked above to fit co_freevars
        PyFunction_SetClosure(func, closure)
        func.__defaults__ = defaults
        func.__kwdefaults__ = kwdefaults
        if attrs:
            if type(attrs) is not dict:
                raise CorruptSavepoint("malformed function attributes")
            func.__dict__.update(attrs)
        return self.finish(index, func)

    cdef object iterator(self, list parts):
        name, args, state = parts
        builder = _ITER_BUILDERS.get(name) if type(name) is str else None
        if builder is None or type(args) is not tuple:
            raise CorruptSavepoint("malformed iterator")
        if builder is iter and (len(args) != 1 or type(args[0]) not in _ITER_SOURCES):
            raise CorruptSavepoint("malformed iterator")
        if self.inspecting:
            return Unbuilt("iterator", name, args)
        if builder in (map, filter) and (
                not args or not _trusted_callable(args[0], self.trust, self.codes)):
            raise SavepointError(f"savepoint holds a {name}() iterator over "
                                 f"{args[0] if args else None!r}, which is not trusted")
        it = builder(*args)
        if state is not None:
            it.__setstate__(state)
        return it

    cdef object exception(self, list parts):
        cls, args, attrs, cause, context, suppress = parts
        if self.inspecting and (type(cls) is Unbuilt or not (
                isinstance(cls, type) and cls.__module__ == "builtins")):
            return Unbuilt("exception", _type_name(cls), args)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)) or \
                type(args) is not tuple:
            raise CorruptSavepoint("malformed exception")
        if not _exception_buildable(cls, self.trust):
            raise SavepointError(f"savepoint holds a {cls.__qualname__} exception, whose "
                                 f"class is not trusted")
        e = cls.__new__(cls, *args)
        e.args = args
        if attrs:
            e.__dict__.update(attrs)
        if cause is not None:
            e.__cause__ = cause
        if context is not None:
            e.__context__ = context
        e.__suppress_context__ = bool(suppress)
        return e


# The decoder's twin of the idle encoder (encoder.pxi).
cdef Decoder _idle_decoder = Decoder()


cdef Decoder _decoder(bytes data, Py_ssize_t start, externals, Trust trust):
    global _idle_decoder
    cdef Decoder dec = _idle_decoder
    if dec is None:
        dec = Decoder()
    _idle_decoder = None
    dec.setup(data, start, externals, trust)
    return dec


cdef _done_decoding(Decoder dec):
    global _idle_decoder
    dec.release()
    _idle_decoder = dec


cdef _damaged(exc):
    if isinstance(exc, (CorruptSavepoint, SavepointError)):
        return exc
    if isinstance(exc, RecursionError):
        return CorruptSavepoint("savepoint data is nested too deeply")
    return CorruptSavepoint(f"savepoint data is damaged: {type(exc).__name__}: {exc}")


def decode_value(data, *, externals=None, Trust trust=None):
    """The value :func:`encode_value` encoded.  Damage raises CorruptSavepoint."""
    if type(data) is not bytes:
        data = bytes(data)
    cdef Decoder dec = _decoder(data, 0, externals, trust)
    try:
        value = dec.decode()
        if dec.pos != dec.end:
            raise CorruptSavepoint("savepoint data has trailing bytes")
        return value
    except Exception as e:
        raise _damaged(e) from None
    finally:
        _done_decoding(dec)
