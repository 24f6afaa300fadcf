# Generators and frames as the format holds them: the module a function runs in, the
# stand-in function a restored frame runs under, and a generator's state in the record.
#
# A generator is a marker composite [code index, module, name, qualname, state, offset,
# locals, stack, exception handled by its own code]:
#   created / suspended  its frame stands at RETURN_GENERATOR / a yield: offset and slots
#   finished             nothing more (offset and slots None)
#   in the chain         the snapshot's chain holds its frame (a generator frame record
#                        names it): nothing more here
# name and qualname are None when they are the code's.  Decoding makes the generator
# object first (finished, holding nothing), so that its own slots may refer to it, then
# fills its frame through the frame core, which validates everything first.

# The frame core's status of a generator -> the record's state
cdef dict _GEN_STATES = {_FRAMES_GEN_CREATED: GEN_CREATED,
                         _FRAMES_GEN_SUSPENDED: GEN_SUSPENDED,
                         _FRAMES_GEN_FINISHED: GEN_FINISHED}
cdef dict _GEN_FILL = {GEN_CREATED: _FRAMES_GEN_CREATED,
                       GEN_SUSPENDED: _FRAMES_GEN_SUSPENDED}
# How a generator frame of the chain is driven (Frame.via)
cdef frozenset _VIAS = frozenset({"for", "yield from", "next", "close"})


cdef str _function_module(func):
    """The name of the module whose globals ``func`` runs in, or None if they are not a
    module's."""
    if type(func) is not _FunctionType:
        return None
    # PyFunction_GET_*: no audited __globals__ read, no attribute lookup
    globals_ = <object>PyFunction_GET_GLOBALS(func)
    module = <object>PyFunction_GET_MODULE(func)
    owner = _sys_modules.get(module) if type(module) is str else None
    if owner is None or <object>PyModule_GetDict(owner) is not globals_:
        module = globals_.get("__name__")
        owner = _sys_modules.get(module) if type(module) is str else None
        if owner is None or <object>PyModule_GetDict(owner) is not globals_:
            return None
    return module


cdef str _GLOBALS_ADVICE = "its globals are not a module's; define flows in modules"


cdef dict _modules_by_file = {}     # co_filename -> module name (finished generators)


cdef str _code_module(code, str fallback):
    """The module a code object comes from, by its file -- a finished generator has no
    frame, hence no function to ask -- or ``fallback``."""
    filename = code.co_filename
    found = _modules_by_file.get(filename)
    module = _sys_modules.get(found) if found is not None else None
    if module is None or getattr(module, "__file__", None) != filename:
        found = None
        for name, module in list(_sys_modules.items()):
            if getattr(module, "__file__", None) == filename:
                found = name
                break
        if found is None:
            return fallback
        _modules_by_file[filename] = found
    return found


# A code object keeps the stand-in function its restored frames use (a code object lives
# as long as the pinned code that needs it).
cdef Py_ssize_t _frame_func_slot = sp_request_code_extra_index(_release_extra)


cdef object _stand_in_function(code, module):
    """The function a restored frame of ``code`` runs under in ``module``.  It only lends
    the frame globals, builtins and a name: the frame's free variables already sit in its
    cells (COPY_FREE_VARS ran before the savepoint), so its closure is a placeholder."""
    globals_ = <object>PyModule_GetDict(module)
    cdef void *cached = NULL
    if sp_code_get_extra(<PyCodeObject *>code, _frame_func_slot, &cached) == 0 and \
            cached != NULL and <object>PyFunction_GET_GLOBALS(<object>cached) is globals_:
        return <object>cached
    closure = tuple([_CellType() for _ in code.co_freevars]) if code.co_freevars else None
    func = _FunctionType(code, globals_, code.co_name, None, closure)
    _set_code_extra(code, _frame_func_slot, func)
    return func


cdef object _code_line(code, offset):
    """The line of ``code`` at byte ``offset`` (None if there is none)."""
    if type(offset) is not int or not 0 <= offset < len(code.co_code):
        return None
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line
    return None


cdef dict _named_slots(code, tuple slots):
    """A saved frame's bound local slots by name (for inspection)."""
    if len(slots) != code.co_nlocals + len(code.co_cellvars) + len(code.co_freevars) - \
            len(set(code.co_varnames) & set(code.co_cellvars)):
        return None
    return {code._varname_from_oparg(i): value for i, value in enumerate(slots)
            if value is not EMPTY}
