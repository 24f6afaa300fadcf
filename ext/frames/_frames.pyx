# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The frame core: capture and restore live chains of plain-function frames.

A flow runs under a :class:`Root`.  Inside it, a call to a C-level Flow-API method may call
:func:`capture`, which returns the frames between the root and the call site as a tuple of
:class:`Frame` (outermost first).  :func:`resume` rebuilds such a tuple -- in this process
or another -- and continues it at the instruction after that call, with a value (or an
exception) as the call's result.  The C side lives in ``frames/*.h``; every CPython 3.11
internal it touches is named in ``cpython/py311.h``.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF

from types import CodeType as _CodeType

from engine.errors import SavepointError


from frames cimport *


cdef class EmptySlot:
    """The type of :data:`EMPTY`: a local or stack slot that holds no value (C NULL),
    which is not the same as holding ``None``."""

    def __repr__(self):
        return "EMPTY"

    def __reduce__(self):
        return "EMPTY"


EMPTY = EmptySlot()


class Unwind(BaseException):
    """Raised through restored frames to leave a flow without resuming them: the frames
    still pending above it are dropped without running their ``finally`` blocks."""


cdef class Root:
    """Where a flow begins.  :func:`run` and :func:`resume` register the frame that calls
    them as the boundary; :func:`capture` walks from the Flow-API call out to it, and only
    on the thread running the flow."""

    cdef int enter(self) except -1:
        if self.active:
            raise RuntimeError("this Root is already running a flow")
        self.tstate = PyThreadState_Get()
        self.boundary = sp_current_frame(self.tstate)
        self.active = True
        return 0

    cdef void leave(self):
        self.active = False
        self.tstate = NULL
        self.boundary = NULL


cdef class Frame:
    """One saved frame: the function (for its globals and builtins), the code it runs,
    the byte offset of the call it waits on, its local slots (locals, cells, free
    variables; :data:`EMPTY` for unbound ones), the value-stack items below the callable,
    and the exception being handled at that point (or ``None``)."""

    def __init__(self, func, code, int offset, tuple locals, tuple stack, exc=None):
        self.fill(func, code, offset, locals, stack, exc)

    cdef fill(self, func, code, int offset, tuple locals, tuple stack, exc):
        self.func = func
        self.code = code
        self.offset = offset
        self.locals = locals
        self.stack = stack
        self.exc = exc

    @property
    def line(self):
        """The line of the call this frame waits on (None if ``code`` is not code)."""
        if not isinstance(self.code, _CodeType):
            return None
        return PyCode_Addr2Line(<PyCodeObject *>self.code, self.offset)

    def __repr__(self):
        return (f"<Frame {self.code.co_qualname} at {self.code.co_filename}:{self.line}"
                f" offset={self.offset} locals={len(self.locals)} stack={len(self.stack)}>")


cdef Frame new_frame(object func, object code, int offset, tuple locals, tuple stack,
                     object exc):
    """A Frame without going through __init__ (the capture walk and the codec)."""
    cdef Frame frame = Frame.__new__(Frame)
    frame.fill(func, code, offset, locals, stack, exc)
    return frame


cdef object _SELF_API = None   # capture itself, when a flow calls it directly


cpdef tuple capture(Root root, object api=None):
    """Capture the frames from ``root`` down to the Flow-API call that is running now.

    Must be called from C code (a C-level Flow-API method, or a flow calling ``capture``
    directly) so that the innermost Python frame is the flow frame making the call.
    ``api`` is the object the call went to (the callable, or the ``self`` of a bound
    method); by default, ``capture`` itself.  Returns a tuple of :class:`Frame`,
    outermost first.  Raises :class:`engine.SavepointError` naming the function, file,
    line and reason when the chain cannot be saved."""
    if api is None:
        api = _SELF_API
    cdef sp_tstate *tstate = PyThreadState_Get()
    if not root.active:
        sp_refuse_current(tstate, b"the flow's Root is not running")
    if root.tstate != tstate:
        sp_refuse_current(tstate, b"the Flow-API was called from a thread other than the "
                                  b"flow's; call it from the thread that runs the flow")
    cdef sp_walk_item *items = NULL
    cdef Py_ssize_t cap = 0, n, i
    cdef sp_iframe *f
    cdef PyCodeObject *co
    cdef Frame fr
    cdef PyObject *exc
    cdef object handled = None
    try:
        n = sp_walk(tstate, root.boundary, <PyObject *>api, &items, &cap)
        frames = [None] * n
        exc = PyErr_GetHandledException()    # new reference, or NULL
        if exc != NULL:
            handled = <object>exc
            Py_XDECREF(exc)
        for i in range(n):   # innermost first
            f = items[i].frame
            co = sp_frame_code(f)
            fr = new_frame(<object>sp_frame_func(f), <object><PyObject *>co,
                           items[i].site.resume * SP_CODEUNIT_BYTES,
                           sp_slots_tuple(sp_frame_locals(f), sp_code_nlocalsplus(co)),
                           sp_slots_tuple(sp_frame_stack(f), items[i].site.below),
                           handled)
            frames[n - 1 - i] = fr
            handled = <object>sp_exc_outside(f, items[i].site, <PyObject *>handled)
        return tuple(frames)
    finally:
        PyMem_Free(items)


def resume(Root root, frames, value=None, *, bint throw=False):
    """Rebuild ``frames`` (as :func:`capture` returned them) under ``root`` and continue
    them: the innermost call returns ``value`` -- or, with ``throw=True``, raises the
    exception ``value``.  Returns what the outermost frame returns, or raises what it
    raises.  Every frame is validated first; nothing invalid reaches the interpreter."""
    frames = tuple(frames)
    cdef Py_ssize_t n = len(frames), i, built = 0
    if n == 0:
        raise ValueError("resume() needs at least one frame")
    if throw and not isinstance(value, BaseException):
        raise TypeError("resume(throw=True) needs an exception instance as the value")
    cdef Frame fr
    for i in range(n):
        if not isinstance(frames[i], Frame):
            raise TypeError(f"frames[{i}] is a {type(frames[i]).__name__}, not a Frame")
        fr = <Frame>frames[i]
        if fr.offset % SP_CODEUNIT_BYTES:
            raise ValueError(f"frames[{i}]: offset {fr.offset} is not an instruction offset")
        sp_check_frame(<PyObject *>fr.func, <PyObject *>fr.code, fr.offset // SP_CODEUNIT_BYTES,
                       <PyObject *>fr.locals, <PyObject *>fr.stack, <PyObject *>fr.exc)
    cdef PyGenObject **gens = <PyGenObject **>PyMem_Malloc(n * sizeof(PyGenObject *))
    if gens == NULL:
        raise MemoryError()
    cdef sp_tstate *tstate = PyThreadState_Get()
    try:
        for i in range(n):
            fr = <Frame>frames[i]
            gens[i] = sp_build_gen(<PyObject *>fr.func, <PyObject *>fr.code,
                                   fr.offset // SP_CODEUNIT_BYTES,
                                   <PyObject *>fr.locals, <PyObject *>fr.stack,
                                   <PyObject *>fr.exc)
            built += 1
        root.enter()
    except BaseException:
        for i in range(built):
            sp_abandon(tstate, gens[i])
        PyMem_Free(gens)
        raise
    try:
        return sp_drive_chain(tstate, gens, n, <PyObject *>value, throw, <PyObject *>Unwind)
    finally:
        root.leave()
        PyMem_Free(gens)


cdef dict _handlerless = {}    # code object -> its copy without an exception table


def strip_handlers(Root root):
    """Prepare to leave the flow running under ``root`` by raising Unwind from here: every
    flow frame between the caller and the root loses its exception handlers (finally,
    except, with), so none of them runs on the way out.  Returns the original code
    objects; keep them until the Unwind has left the flow."""
    if not root.active or root.tstate != PyThreadState_Get():
        raise RuntimeError("strip_handlers() must run inside the flow, on its thread")
    return sp_strip_handlers(root.tstate, root.boundary, _handlerless)


def run(Root root, func, *args, **kwargs):
    """Call ``func(*args, **kwargs)`` as a flow under ``root``: captures inside it walk out
    to this call."""
    root.enter()
    try:
        return func(*args, **kwargs)
    finally:
        root.leave()


def stack_table(code):
    """The static stack table of ``code``: ``{resume_offset: items_below_callable}`` for
    every reachable call site, offsets in bytes.  Raises ValueError if the bytecode cannot
    be analysed."""
    if not isinstance(code, _CodeType):
        raise TypeError("stack_table() needs a code object")
    cdef sp_table *t = sp_table_get(<PyCodeObject *><PyObject *>code)
    if t.error != NULL:
        raise ValueError(f"cannot analyse {code.co_qualname}: {t.error.decode()}")
    return {t.sites[i].resume * SP_CODEUNIT_BYTES: t.sites[i].below for i in range(t.nsites)}


_SELF_API = capture
sp_SavepointError = <PyObject *>SavepointError
sp_EMPTY = <PyObject *>EMPTY
sp_extra_index = sp_request_code_extra_index(sp_table_free)
if sp_extra_index < 0:
    raise ImportError("engine._frames: no code-object extra slot is available")
