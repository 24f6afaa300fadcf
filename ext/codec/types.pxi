# The Python types both directions know by identity (C globals: no attribute lookup
# on the hot path), and how a name is found again by its import path.

cdef object EMPTY = _EMPTY
cdef object _CellType = types.CellType
cdef object _FunctionType = types.FunctionType
cdef object _MethodType = types.MethodType
cdef object _ModuleType = types.ModuleType
cdef object _CodeType = types.CodeType
cdef object _GeneratorType = types.GeneratorType
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
# once the module has one to take the type from (ext/_codec.pyx).
cdef object _CYFUNCTION = None


# Builtin objects whose bound methods may be rebuilt by getattr (no user code runs).
cdef tuple _BUILTIN_SELF_TYPES = (list, dict, set, frozenset, tuple, str, bytes, bytearray,
                                  int, float, complex, collections.deque,
                                  collections.OrderedDict, collections.defaultdict,
                                  collections.Counter)


cdef dict _sys_modules = sys.modules


def _lookup(module, qualname):
    target = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target
