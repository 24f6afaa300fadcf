# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The savepoint codec: frame snapshots and Python values to msgpack bytes and back.

Everything is standard msgpack.  Values without a msgpack type are arrays whose first item
is a *marker* (a one-byte ext whose ext type names the Python type, e.g. tuple, set,
datetime); an object met a second time is an ext REF to its index in encounter order, so
sharing and cycles survive.  Every str, list, dict, marker array and bytearray takes the
next index, on both sides.

A savepoint record is a msgpack array::

    ["SPE", FORMAT_VERSION, "3.11", <bytecode magic>, <crc32 of the rest>, codes, body]

``codes`` lists the code objects the snapshot runs, as [module, qualname, fingerprint]; the
code itself is pinned elsewhere (the store) and handed back to :func:`decode_snapshot` by a
resolver.  ``body`` is one value: the frames, outermost first, each
[code index, module, offset, locals, stack, exception being handled].

Decoding never runs pickle and builds only the types listed in this module, functions and
classes found by import path, the flow's code, and instances of trusted classes; damage
of any kind raises :class:`engine.CorruptSavepoint`.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

import collections
import copyreg
import datetime
import decimal
import enum
import fractions
import hashlib
import importlib
import importlib.util
import io
import math
import operator
import pathlib
import sys
import types
import uuid
import zlib

from engine cimport _frames
from engine._frames cimport Frame, new_frame
from engine.errors import CorruptSavepoint, SavepointError

cdef extern from "codec/codec.h":
    ctypedef struct cd_buf:
        char *data
        Py_ssize_t len
        Py_ssize_t cap
    ctypedef struct cd_ptrmap:
        Py_ssize_t used
    int cd_reserve(cd_buf *, Py_ssize_t) except -1
    void cd_put1(cd_buf *, unsigned char)
    void cd_put_be(cd_buf *, uint64_t, int)
    int cd_write(cd_buf *, const char *, Py_ssize_t) except -1
    int cd_int(cd_buf *, int64_t) except -1
    int cd_double(cd_buf *, double) except -1
    int cd_double_raw(cd_buf *, double) except -1
    int cd_str_header(cd_buf *, uint64_t) except -1
    int cd_bin_header(cd_buf *, uint64_t) except -1
    int cd_array_header(cd_buf *, uint64_t) except -1
    int cd_map_header(cd_buf *, uint64_t) except -1
    int cd_ext_header(cd_buf *, uint64_t, int) except -1
    int32_t cd_ptrmap_get(const cd_ptrmap *, const void *)
    int cd_ptrmap_put(cd_ptrmap *, const void *, int32_t) except -1
    void cd_ptrmap_clear(cd_ptrmap *)
    void cd_ptrmap_free(cd_ptrmap *)
    uint64_t cd_get_be(const unsigned char *, int)
    uint64_t cd_checksum(const unsigned char *, Py_ssize_t)
    uint64_t cd_xxh64(const unsigned char *, Py_ssize_t, uint64_t)
    void cd_siphash128(const unsigned char *, Py_ssize_t, uint64_t, uint64_t, uint64_t *)
    int cd_encode_simple(cd_buf *, cd_ptrmap *, int32_t *, PyObject *) except -1
    object cd_make_str(const char *, Py_ssize_t)
    object cd_cached_str(const char *, Py_ssize_t)
    void cd_list_empty(object)
    int CD_MEMO_STR_MIN

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void *PyUnicode_DATA(object)
    const char *PyUnicode_AsUTF8AndSize(object, Py_ssize_t *) except NULL
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1
    double PyFloat_AS_DOUBLE(object)
    char *PyByteArray_AS_STRING(object)
    Py_ssize_t PyByteArray_GET_SIZE(object)
    object PyCell_New(PyObject *)
    int PyCell_Set(object, PyObject *) except -1
    PyObject *PyCell_GET(object)
    dict _PyDict_NewPresized(Py_ssize_t)
    int PyList_SetSlice(object, Py_ssize_t, Py_ssize_t, PyObject *) except -1
    PyObject *PyModule_GetDict(object)
    PyObject *PyFunction_GET_MODULE(object)
    Py_ssize_t _PyEval_RequestCodeExtraIndex(void (*)(void *))
    int _PyCode_GetExtra(object, Py_ssize_t, void **)
    int _PyCode_SetExtra(object, Py_ssize_t, void *)
    PyObject *PyFunction_GET_GLOBALS(object)

FORMAT_VERSION = 1
PYTHON_VERSION = "%d.%d" % sys.version_info[:2]
MAGIC = importlib.util.MAGIC_NUMBER
MAX_DEPTH = 1000

# ext types with a payload
DEF EXT_REF = 1
DEF EXT_BIGINT = 2
DEF EXT_COMPLEX = 3
DEF EXT_EMPTY = 4
DEF EXT_BYTEARRAY = 5
DEF EXT_CHUNK = 6           # payload: the 16-byte content hash of a chunk stored apart
# markers: ext types heading an array
DEF M_FIRST = 16
DEF M_TUPLE = 16
DEF M_SET = 17
DEF M_FROZENSET = 18
DEF M_RANGE = 19
DEF M_SLICE = 20
DEF M_DATETIME = 21
DEF M_DATE = 22
DEF M_TIME = 23
DEF M_TIMEDELTA = 24
DEF M_TIMEZONE = 25
DEF M_DECIMAL = 26
DEF M_FRACTION = 27
DEF M_UUID = 28
DEF M_PATH = 29
DEF M_ENUM = 30
DEF M_NAMEDTUPLE = 31
DEF M_ORDEREDDICT = 32
DEF M_DEFAULTDICT = 33
DEF M_COUNTER = 34
DEF M_DEQUE = 35
DEF M_GLOBAL = 36
DEF M_MODULE = 37
DEF M_FUNCTION = 38
DEF M_CELL = 39
DEF M_METHOD = 40
DEF M_BUILTIN_METHOD = 41
DEF M_ITER = 42
DEF M_EXCEPTION = 43
DEF M_EXTERNAL = 44
DEF M_INSTANCE = 45
DEF M_LAST = 45

from engine._frames import EMPTY as _EMPTY
cdef object EMPTY = _EMPTY
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
cdef object _CellType = types.CellType
cdef object _FunctionType = types.FunctionType
cdef object _MethodType = types.MethodType
cdef object _ModuleType = types.ModuleType
cdef object _CodeType = types.CodeType
cdef object _BuiltinFunctionType = types.BuiltinFunctionType
cdef object _OrderedDict = collections.OrderedDict
cdef object _defaultdict = collections.defaultdict
cdef object _Counter = collections.Counter
cdef object _deque = collections.deque
cdef object _datetime = datetime.datetime
cdef object _date = datetime.date
cdef object _time = datetime.time
cdef object _timedelta = datetime.timedelta
cdef object _timezone = datetime.timezone
cdef object _Decimal = decimal.Decimal
cdef object _Fraction = fractions.Fraction
cdef object _UUID = uuid.UUID
cdef object _Enum = enum.Enum
cdef object _newobj = copyreg.__newobj__
cdef dict _PATHS = {cls: i for i, cls in enumerate(
    (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath))}
cdef tuple _PATH_TYPES = tuple(_PATHS)

# Iterator types a `for` loop leaves on the value stack, rebuilt from their __reduce__():
# (constructor, args[, state]).  Decoding calls only these constructors.
cdef dict _ITER_BUILDERS = {"iter": iter, "enumerate": enumerate, "zip": zip,
                            "reversed": reversed, "map": map, "filter": filter}
cdef dict _ITER_NAMES = {v: k for k, v in _ITER_BUILDERS.items()}
cdef tuple _ITER_SOURCES = (list, tuple, range, str, bytes, bytearray)
cdef set _ITER_TYPES = {type(x) for x in (
    iter([]), iter(()), iter(range(0)), iter(""), iter("é"), iter({}), iter({}.values()),
    iter({}.items()), iter(set()), enumerate(()), zip(), reversed([]), reversed(()),
    map(abs, ()), filter(None, ()), iter(b""), iter(bytearray()), iter(range(2 ** 64)))}
# Methods of builtin types, found again as e.g. builtins.list.append (LOAD_METHOD leaves
# them on the stack).
cdef tuple _DESCRIPTOR_TYPES = (type(list.append), type(object.__init__),
                                type(dict.__dict__["fromkeys"]))
# ... and Cython functions (the Flow-API's methods, found as engine._flowapi.Setting.get),
# once the module has one to take the type from (below).
cdef object _CYFUNCTION = None
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


# Builtin objects whose bound methods may be rebuilt by getattr (no user code runs).
cdef tuple _BUILTIN_SELF_TYPES = (list, dict, set, frozenset, tuple, str, bytes, bytearray,
                                  int, float, complex, collections.deque,
                                  collections.OrderedDict, collections.defaultdict,
                                  collections.Counter)


# Callables that a decoded map()/filter() iterator or defaultdict may call later: pure
# builtins, math and operator functions, the builtin types, methods of those types, and
# functions and classes of trusted modules -- never a callable only because a record names
# it (map(os.system, [...]) in a for-loop slot would run a command at resume).
cdef frozenset _SAFE_TYPES = frozenset(_BUILTIN_SELF_TYPES + (bool, range, slice, object))
cdef frozenset _SAFE_FUNCTIONS = frozenset(
    [abs, all, any, ascii, bin, callable, chr, divmod, format, hash, hex, id, isinstance,
     issubclass, len, max, min, oct, ord, pow, repr, round, sorted, sum, zip, enumerate,
     reversed] +
    [f for module in (math, operator) for name, f in vars(module).items()
     if not name.startswith("_") and type(f) is types.BuiltinFunctionType])


cdef bint _trusted_callable(f, Trust trust, list codes):
    if f is None:
        return True
    if type(f) is types.FunctionType:        # ours: pinned code, or a trusted module's
        return any(c is f.__code__ for c in codes) or trust.allows_module(f.__module__)
    if type(f) is types.MethodType:
        return _trusted_callable(f.__func__, trust, codes)
    if isinstance(f, type):
        return f in _SAFE_TYPES or trust.allows_class(f)
    if type(f) in _DESCRIPTOR_TYPES:
        return getattr(f, "__objclass__", None) in _SAFE_TYPES
    if type(f) is types.BuiltinFunctionType:
        owner = f.__self__
        if owner is None or type(owner) is types.ModuleType:
            return f in _SAFE_FUNCTIONS
        return type(owner) in _SAFE_TYPES
    return False


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


cdef void _release_extra(void *value) noexcept with gil:
    Py_XDECREF(<PyObject *>value)


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
    if isinstance(obj, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
        return (f"a {cls.__name__} object ({name})",
                "turn it into a list (or finish it) before the Flow-API call")
    if isinstance(obj, (types.FrameType, types.TracebackType)):
        return f"a {cls.__name__} ({name})", "keep it out of the flow's locals"
    if cls.__module__ not in ("builtins",) and not isinstance(obj, type):
        return (f"an instance of {name}, a class that is neither defined in a flow's module "
                f"nor trusted", f"trust it with eng.trust({cls.__qualname__}) or keep it "
                f"out of the flow's locals")
    return f"a {name} object", "keep it out of the flow's locals at Flow-API calls"


cdef class Trust:
    """Which user classes may be rebuilt from a savepoint: those defined in a trusted
    module (a flow's module, or one passed to :meth:`add`) and classes added one by one."""
    cdef set modules
    cdef set classes

    def __init__(self, items=()):
        self.modules = set()
        self.classes = set()
        for item in items:
            self.add(item)

    def add(self, item):
        """Trust a class, or every class of a module (a module object or its name)."""
        if isinstance(item, type):
            self.classes.add(item)
        elif isinstance(item, _ModuleType):
            self.modules.add(item.__name__)
        elif isinstance(item, str):
            self.modules.add(item)
        else:
            raise TypeError(f"trust() takes a class or a module, not {type(item).__name__}")
        return item

    cpdef bint allows_class(self, cls):
        return cls in self.classes or getattr(cls, "__module__", None) in self.modules

    cpdef bint allows_module(self, str name):
        return name in self.modules

    def copy(self):
        other = Trust()
        other.modules = set(self.modules)
        other.classes = set(self.classes)
        return other


cdef Trust _NO_TRUST = Trust()
cdef dict _sys_modules = sys.modules
# Standard-library modules whose import does something (prints, opens a browser, starts a
# GUI): a savepoint never makes the engine import them.
cdef frozenset _NO_IMPORT = frozenset({"antigravity", "this", "__hello__", "__phello__",
                                       "idlelib", "tkinter", "turtle", "turtledemo",
                                       "webbrowser", "pydoc", "ensurepip", "venv"})


cdef bint _exception_buildable(cls, Trust trust):
    """Exceptions are rebuilt with cls.__new__ and their __dict__, never __init__: safe
    for builtin exceptions and classes that keep BaseException.__new__."""
    return cls.__module__ == "builtins" or cls.__new__ is BaseException.__new__ or \
        trust.allows_class(cls)


def _lookup(module, qualname):
    target = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


# --- code fingerprints -------------------------------------------------------------------

# Each code object carries its fingerprint in a code-extra slot (like the frame core's
# stack table): freed with the code, no lookup by id.
cdef Py_ssize_t _fingerprint_slot = _PyEval_RequestCodeExtraIndex(_release_extra)
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
            _PyCode_GetExtra(code, _fingerprint_slot, &cached) == 0 and cached != NULL:
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


# --- encoder ---------------------------------------------------------------------------

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
    cdef bint cell_contents     # a REF to an object being built is allowed here
    cdef dict chunks            # content hash -> bytes of big values cut out, or None
    cdef object externals_source  # the externals dict self.externals was made from

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
        return self.composite(o, M_FUNCTION, (
            self.code_ref(o.__code__, globals_name), globals_name, o.__name__, o.__qualname__,
            o.__defaults__, o.__kwdefaults__, o.__closure__, o.__dict__ or None))

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


# --- decoder ---------------------------------------------------------------------------

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
        cdef dict out = _PyDict_NewPresized(n)
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
        if tag == M_FUNCTION and n == 8:
            return self.function(parts)
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

    cdef object function(self, list parts):
        code_index, module_name, name, qualname, defaults, kwdefaults, closure, attrs = parts
        if type(code_index) is not int or not 0 <= code_index < len(self.codes) or \
                type(name) is not str or type(qualname) is not str:
            raise CorruptSavepoint("malformed function")
        code = self.codes[code_index]
        if closure is not None and (type(closure) is not tuple or
                                    len(closure) != len(code.co_freevars) or
                                    any(type(c) is not _CellType for c in closure)):
            raise CorruptSavepoint("malformed closure")
        if closure is None and code.co_freevars:
            raise CorruptSavepoint("malformed closure")
        if defaults is not None and type(defaults) is not tuple or \
                kwdefaults is not None and type(kwdefaults) is not dict:
            raise CorruptSavepoint("malformed function defaults")
        func = _FunctionType(code, self.module(module_name).__dict__, name, defaults,
                             closure)
        func.__qualname__ = qualname
        func.__kwdefaults__ = kwdefaults
        if attrs:
            if type(attrs) is not dict:
                raise CorruptSavepoint("malformed function attributes")
            func.__dict__.update(attrs)
        return func

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


# --- public API ------------------------------------------------------------------------

# One encoder and one decoder are reused while idle (their buffers and memo tables stay
# allocated); a nested call (a trusted __reduce__ that saves a value itself) gets its own.
cdef Encoder _idle_encoder = Encoder()
cdef Decoder _idle_decoder = Decoder()


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


# --- signing: what the store keeps is signed with its secret key ------------------------

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


# A savepoint as the store keeps it: [meta, record, state], meta and state as lists in
# these orders (names are stored once, here, not in every savepoint).
META_FIELDS = ("seq", "kind", "name", "created_at", "line", "action", "command", "size",
               "chunks")
STATE_FIELDS = ("version", "last_seq", "status", "updated_at", "due", "restore_count",
                "error", "last_implicit", "last_implicit_chunks")


cpdef tuple seal_savepoint(dict execution, dict meta, bytes record, list chunks,
                           int64_t version, Signer signer):
    """Seal [meta, record, state] for the savepoint after the execution's last one.
    Returns (sealed bytes, seq, state list in STATE_FIELDS order).  Written in Cython
    because it runs at every Flow-API call (benchmarks/bench_store.py)."""
    cdef int64_t seq = execution.get("last_seq", 0) + 1
    implicit = meta.get("kind") == "implicit"
    cdef list state = [version, seq, execution.get("status"), execution.get("updated_at"),
                       execution.get("due"), execution.get("restore_count"),
                       execution.get("error"),
                       seq if implicit else execution.get("last_implicit"),
                       chunks if implicit else execution.get("last_implicit_chunks")]
    sealed = seal([[seq, meta.get("kind"), meta.get("name"), meta.get("created_at"),
                    meta.get("line"), meta.get("action"), meta.get("command"),
                    len(record), chunks], record, state], signer)
    return sealed, seq, state


cpdef apply_state(dict execution, list state):
    """Write a savepoint's state (STATE_FIELDS order) into the execution dict."""
    cdef Py_ssize_t i
    for i in range(len(STATE_FIELDS)):
        execution[STATE_FIELDS[i]] = state[i]


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


def checksum(data):
    """The record checksum (XXH64, seed 0) of ``data``."""
    data = bytes(data)
    return cd_checksum(<const unsigned char *>PyBytes_AS_STRING(data), len(data))


cdef str _slot_name(code, Py_ssize_t i):
    return code._varname_from_oparg(i)


def _where(frame):
    code = frame.code
    return f"{code.co_qualname} ({code.co_filename}:{frame.line})"


cdef str _module_of(Frame frame):
    """The name of the module whose globals the frame runs in."""
    # PyFunction_GET_*: no audited __globals__ read, no attribute lookup
    globals_ = <object>PyFunction_GET_GLOBALS(frame.func)
    module = <object>PyFunction_GET_MODULE(frame.func)
    owner = _sys_modules.get(module) if type(module) is str else None
    if owner is None or <object>PyModule_GetDict(owner) is not globals_:
        module = globals_.get("__name__")
        owner = _sys_modules.get(module) if type(module) is str else None
        if owner is None or <object>PyModule_GetDict(owner) is not globals_:
            raise SavepointError(f"cannot take a savepoint in {_where(frame)}: its globals "
                                 f"are not a module's; define flows in modules")
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
    enc.skip_index()              # the list of frames
    cd_array_header(&enc.buf, len(frames))
    for frame in frames:
        code = frame.code
        module = _module_of(frame)
        enc.skip_index()          # the frame's list
        cd_array_header(&enc.buf, 6)
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
        return tuple(frames), result     # frames as engine._frames.capture gives them
    except Exception as e:
        raise _damaged(e) from None
    finally:
        _done_decoding(dec)


# A code object keeps the stand-in function its restored frames use (a code object lives
# as long as the pinned code that needs it).
cdef Py_ssize_t _frame_func_slot = _PyEval_RequestCodeExtraIndex(_release_extra)


cdef int _set_code_extra(code, Py_ssize_t slot, object value) except -1:
    cdef void *old = NULL
    _PyCode_GetExtra(code, slot, &old)
    Py_INCREF(value)
    if _PyCode_SetExtra(code, slot, <PyObject *>value) < 0:
        Py_DECREF(value)
        raise MemoryError()
    Py_XDECREF(<PyObject *>old)
    return 0


cdef object _read_frame(Decoder dec):
    """[code index, module, offset, locals, stack, exception] -> Frame."""
    if dec.array_header() != 6:
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
    globals_ = <object>PyModule_GetDict(module)
    cdef void *cached = NULL
    if _PyCode_GetExtra(code, _frame_func_slot, &cached) == 0 and cached != NULL and \
            <object>PyFunction_GET_GLOBALS(<object>cached) is globals_:
        func = <object>cached
    else:
        # The frame's function only lends it globals, builtins and a name: its free
        # variables already sit in the frame's cells (COPY_FREE_VARS ran before the
        # savepoint), so the closure here is a placeholder.
        closure = tuple([_CellType() for _ in code.co_freevars]) if code.co_freevars else None
        func = _FunctionType(code, globals_, code.co_name, None, closure)
        _set_code_extra(code, _frame_func_slot, func)
    return new_frame(func, code, offset, locals_, stack, exc)


_CYFUNCTION = type(checksum)      # a def function of this module: Cython's function type
