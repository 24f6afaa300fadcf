# Trust: which classes may be rebuilt, which modules imported, and which callables a
# decoded map()/filter() iterator or defaultdict may call later.

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
