# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The frame core: capture and restore live chains of plain-function and generator frames.

A flow runs under a :class:`Root`.  Inside it, a call to a C-level Flow-API method may call
:func:`capture`, which returns the frames between the root and the call site as a tuple of
:class:`Frame` (outermost first).  :func:`resume` rebuilds such a tuple -- in this process
or another -- and continues it at the instruction after that call, with a value (or an
exception) as the call's result.

A generator's frame may be in the chain when a flow frame drives it directly (a for loop,
``yield from``, next(), send(), throw() or close()): its Frame carries the generator
object (``gen``) and how it is driven (``via``), and restore puts the frame back into that
very object.  Suspended generators held as values are the codec's (generator_state,
blank_generator, fill_generator).  The C side lives in ``frames/*.h``; every CPython 3.11
internal it touches is named in ``cpython/py311.h``.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM

import builtins
import collections
import gc
import types
from types import CodeType as _CodeType, GeneratorType as _GeneratorType

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
cdef object _EMPTY = EMPTY        # a C global: no module lookup on the hot paths


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
        self.links = None
        if self.leaving:               # the flow is left: generators dropped now are its
            self.leaving = False       # own code's business again
            sp_quiet_exit()


# How the frame before a generator's frame drives it (Frame.via), by SP_VIA_* number
cdef dict _VIA_NAMES = {SP_VIA_FOR: "for", SP_VIA_YIELD_FROM: "yield from",
                        SP_VIA_NEXT: "next", SP_VIA_CLOSE: "close"}
cdef dict _VIA_NUMBERS = {name: number for number, name in _VIA_NAMES.items()}
# ... and the site the driving frame stands on for each
cdef dict _VIA_SITES = {SP_VIA_FOR: SP_SITE_FOR, SP_VIA_YIELD_FROM: SP_SITE_SEND,
                        SP_VIA_NEXT: SP_SITE_CALL, SP_VIA_CLOSE: SP_SITE_CALL}


cdef class Frame:
    """One saved frame: the function (for its globals and builtins), the code it runs,
    the byte offset of the instruction it waits in (a call; FOR_ITER or SEND when it
    drives a generator), its local slots (locals, cells, free variables; :data:`EMPTY`
    for unbound ones), the value-stack items below the callable (with the iterator or
    receiver at FOR_ITER or SEND), and the exception being handled at that point (or
    ``None``).

    A generator's frame also has the generator object (``gen``; its own code's handled
    exception is ``exc``), how the frame before it drives it (``via``: "for",
    "yield from", "next" -- next(), send(), throw() -- or "close") and next()'s
    ``default`` (:data:`EMPTY` when there is none)."""

    def __init__(self, func, code, int offset, tuple locals, tuple stack, exc=None,
                 gen=None, via=None, default=EMPTY):
        self.fill(func, code, offset, locals, stack, exc,
                  None if gen is None and via is None and default is _EMPTY
                  else (gen, via, default))

    cdef fill(self, func, code, int offset, tuple locals, tuple stack, exc, tuple link):
        self.func = func
        self.code = code
        self.offset = offset
        self.locals = locals
        self.stack = stack
        self.exc = exc
        self.link = link           # one field for all three: plain frames stay small

    @property
    def gen(self):
        return None if self.link is None else self.link[0]

    @property
    def via(self):
        return None if self.link is None else self.link[1]

    @property
    def default(self):
        return _EMPTY if self.link is None else self.link[2]

    @property
    def line(self):
        """The line of the call this frame waits on (None if ``code`` is not code)."""
        if not isinstance(self.code, _CodeType):
            return None
        return PyCode_Addr2Line(<PyCodeObject *>self.code, self.offset)

    def __repr__(self):
        via = f" via={self.via!r}" if self.gen is not None else ""
        return (f"<Frame {self.code.co_qualname} at {self.code.co_filename}:{self.line}"
                f" offset={self.offset} locals={len(self.locals)} stack={len(self.stack)}"
                f"{via}>")


cdef Frame new_frame(object func, object code, int offset, tuple locals, tuple stack,
                     object exc, tuple link=None):
    """A Frame without going through __init__ (the capture walk and the codec)."""
    cdef Frame frame = Frame.__new__(Frame)
    frame.fill(func, code, offset, locals, stack, exc, link)
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
    cdef sp_walk_item *item
    cdef Py_ssize_t cap = 0, n, i
    cdef sp_iframe *f
    cdef PyCodeObject *co
    cdef Frame fr
    cdef PyObject *links = <PyObject *>root.links if root.links is not None else NULL
    try:
        n = sp_walk(tstate, root.boundary, <PyObject *>api, links, &items, &cap)
        frames = PyTuple_New(n)
        for i in range(n):   # innermost first
            item = &items[i]
            f = item.frame
            co = sp_frame_code(f)
            fr = new_frame(<object>sp_frame_func(f), <object><PyObject *>co,
                           item.site.resume * SP_CODEUNIT_BYTES,
                           sp_slots_tuple(sp_frame_locals(f), sp_code_nlocalsplus(co)),
                           sp_slots_tuple(sp_frame_stack(f), item.site.below),
                           <object>item.exc if item.exc != NULL else None)
            if item.gen != NULL:
                fr.link = (<object><PyObject *>item.gen, _VIA_NAMES[item.via],
                           <object>item.deflt if item.deflt != NULL else _EMPTY)
            Py_INCREF(fr)
            PyTuple_SET_ITEM(frames, n - 1 - i, fr)
        return frames
    finally:
        PyMem_Free(items)


def resume(Root root, frames, value=None, *, bint throw=False):
    """Rebuild ``frames`` (as :func:`capture` returned them) under ``root`` and continue
    them: the innermost call returns ``value`` -- or, with ``throw=True``, raises the
    exception ``value``.  Returns what the outermost frame returns, or raises what it
    raises.  Every frame is validated first; nothing invalid reaches the interpreter.
    A generator frame goes back into its own generator object, which must be finished
    (as the unwinding of the flow left it, or as the codec builds it)."""
    frames = tuple(frames)
    cdef Py_ssize_t n = len(frames), i, built = 0
    if n == 0:
        raise ValueError("resume() needs at least one frame")
    if throw and not isinstance(value, BaseException):
        raise TypeError("resume(throw=True) needs an exception instance as the value")
    cdef sp_link *links = <sp_link *>PyMem_Malloc(n * sizeof(sp_link))
    if links == NULL:
        raise MemoryError()
    cdef sp_tstate *tstate = PyThreadState_Get()
    cdef Frame fr
    cdef dict chain_links = None       # {generator: (via, default)}, for the capture walk
    try:
        for i in range(n):             # each frame validated, then built
            fr = _checked(frames, i, &links[i], chain_links)
            if fr.link is not None:
                if chain_links is None:
                    chain_links = {}
                chain_links[fr.link[0]] = (links[i].via, fr.link[2])
            _build(fr, &links[i])
            built += 1
        root.enter()
        root.links = chain_links
    except BaseException:
        for i in range(built):
            sp_abandon(tstate, links[i].gen)
        PyMem_Free(links)
        raise
    try:
        return sp_drive_chain(tstate, links, n, <PyObject *>value, throw, <PyObject *>Unwind)
    except Unwind as unwind:
        raise _left(root, unwind)
    finally:
        root.leave()
        PyMem_Free(links)


cdef inline Frame _checked(tuple frames, Py_ssize_t i, sp_link *link, dict chain_links):
    """frames[i], validated -- as its neighbours say it must be: frames[i - 1] drives it,
    frames[i + 1] is what it waits on -- with how it is driven filled in ``link``
    (all but the generator); ``chain_links`` holds the generators of the frames before."""
    cdef Py_ssize_t n = len(frames)
    cdef object item = frames[i]
    cdef tuple child_link
    cdef int kind = SP_SITE_CALL, via
    if not isinstance(item, Frame):
        raise TypeError(f"frames[{i}] is a {type(item).__name__}, not a Frame")
    cdef Frame fr = <Frame>item
    if fr.offset % SP_CODEUNIT_BYTES:
        raise ValueError(f"frames[{i}]: offset {fr.offset} is not an instruction offset")
    if i + 1 < n and isinstance(frames[i + 1], Frame):
        child_link = (<Frame>frames[i + 1]).link
        if child_link is not None and child_link[0] is not None:
            if child_link[1] not in _VIA_NUMBERS:
                raise ValueError(f"frames[{i + 1}]: a generator frame's via must be one of "
                                 f"{sorted(_VIA_NUMBERS)}, not {child_link[1]!r}")
            kind = _VIA_SITES[_VIA_NUMBERS[child_link[1]]]
    link.gen = NULL
    link.real = fr.link is not None
    link.via = SP_VIA_CALL
    link.deflt = NULL
    link.outer = NULL
    if fr.link is not None:
        _check_link(frames, i, link, chain_links)
    link.site = sp_check_frame(<PyObject *>fr.func, <PyObject *>fr.code,
                               fr.offset // SP_CODEUNIT_BYTES, <PyObject *>fr.locals,
                               <PyObject *>fr.stack, <PyObject *>fr.exc, kind,
                               fr.link is not None)
    return fr


cdef int _check_link(tuple frames, Py_ssize_t i, sp_link *link, dict chain_links) except -1:
    """The generator part of frames[i]: its generator, how it is driven, by whom."""
    cdef Frame fr = <Frame>frames[i], driver
    gen, via_name, default = fr.link
    if gen is None:
        raise ValueError(f"frames[{i}]: a plain frame has no via or default")
    if i == 0:
        raise ValueError("frames[0] is a generator's frame: a flow's outermost frame is a "
                         "plain function's")
    if chain_links is not None and gen in chain_links:
        raise ValueError(f"frames[{i}]: its generator is in the chain twice")
    cdef int via = _VIA_NUMBERS[via_name]     # checked while frames[i - 1] was
    sp_check_gen(<PyObject *>gen, <PyObject *>fr.code)
    driver = <Frame>frames[i - 1]             # its loop's stack was checked: not empty
    if (via == SP_VIA_FOR or via == SP_VIA_YIELD_FROM) and \
            driver.stack[len(driver.stack) - 1] is not gen:
        raise ValueError(f"frames[{i - 1}]: the {via_name} loop does not drive the "
                         f"generator of frames[{i}]")
    if default is not _EMPTY:
        if via != SP_VIA_NEXT:
            raise ValueError(f"frames[{i}]: only next() has a default")
        link.deflt = <PyObject *>default      # the Frame holds it
    link.via = via
    outer = _outer_exc(frames, i)
    if outer is not None:
        link.outer = <PyObject *>outer        # the Frame before it holds it
    return 0


cdef object _outer_exc(tuple frames, Py_ssize_t i):
    """The exception handled around the generator of frames[i]: where the frame driving it
    stands -- a plain frame's handled exception, or a generator's own, else the one
    around that generator."""
    cdef Frame driver
    while i > 0:
        i -= 1
        driver = <Frame>frames[i]
        if driver.link is None or driver.exc is not None:
            return driver.exc
    return None


cdef inline int _build(Frame fr, sp_link *link) except -1:
    """Build the frame ``fr`` (validated by _check_chain) and keep its generator in link."""
    cdef int lasti = fr.offset // SP_CODEUNIT_BYTES
    if fr.link is None:
        link.gen = sp_build_gen(<PyObject *>fr.func, <PyObject *>fr.code, lasti,
                                <PyObject *>fr.locals, <PyObject *>fr.stack,
                                <PyObject *>fr.exc)
    else:
        gen = fr.link[0]
        sp_gen_fill(<PyObject *>gen, <PyObject *>fr.func, lasti, <PyObject *>fr.locals,
                    <PyObject *>fr.stack, <PyObject *>fr.exc, 0)
        Py_INCREF(gen)
        link.gen = <PyGenObject *>gen
    return 0


# --- generators held as values (for the codec) ---------------------------------------------

GEN_CREATED = SP_GEN_CREATED
GEN_SUSPENDED = SP_GEN_SUSPENDED
GEN_RUNNING = SP_GEN_RUNNING
GEN_FINISHED = SP_GEN_FINISHED


cdef tuple generator_state(object gen):
    """What a generator holds: (status, func, code, offset, locals, stack, exc) -- status
    one of GEN_*; the rest None unless it is created or suspended, when its frame stands
    at RETURN_GENERATOR or a yield with those slots, handling ``exc``."""
    cdef PyGenObject *g = <PyGenObject *>gen
    cdef int status = sp_gen_status(g)
    cdef sp_iframe *f
    cdef PyCodeObject *co
    cdef sp_table *table
    cdef const sp_site *site
    cdef PyObject *exc
    if status == SP_GEN_RUNNING or status == SP_GEN_FINISHED:
        return (status, None, None, None, None, None, None)
    f = sp_gen_frame(g)
    co = sp_frame_code(f)
    table = sp_table_get(co)
    site = sp_site_waiting_at(table, sp_frame_lasti(f),
                              SP_SITE_START if status == SP_GEN_CREATED else SP_SITE_YIELD)
    if site == NULL or sp_frame_is_executing(f) or sp_frame_stack_depth(f) != site.below:
        raise SavepointError(f"cannot save the generator {gen.__qualname__}: internal "
                             f"error: its frame disagrees with the static stack table")
    exc = sp_gen_exc(g)
    return (status, <object>sp_frame_func(f), <object><PyObject *>co,
            site.resume * SP_CODEUNIT_BYTES,
            sp_slots_tuple(sp_frame_locals(f), sp_code_nlocalsplus(co)),
            sp_slots_tuple(sp_frame_stack(f), site.below),
            <object>exc if exc != NULL else None)


cdef object blank_generator(object code, object name, object qualname):
    """A finished generator object of ``code`` (a generator function's), named as given:
    fill_generator puts a saved frame into it, resume a chain's."""
    return sp_gen_blank(<PyObject *>code, <PyObject *>name, <PyObject *>qualname)


cdef int fill_generator(object gen, object func, int state, int offset, tuple locals,
                        tuple stack, object exc) except -1:
    """Put the saved frame of a created or suspended generator into ``gen`` (from
    blank_generator), validated first: nothing invalid reaches the interpreter."""
    if state != SP_GEN_CREATED and state != SP_GEN_SUSPENDED:
        raise ValueError("a generator is filled as created or suspended")
    code = gen.gi_code if type(gen) is _GeneratorType else None
    sp_check_gen(<PyObject *>gen, <PyObject *>code)
    if offset % SP_CODEUNIT_BYTES:
        raise ValueError(f"offset {offset} is not an instruction offset")
    sp_check_frame(<PyObject *>func, <PyObject *>code, offset // SP_CODEUNIT_BYTES,
                   <PyObject *>locals, <PyObject *>stack, <PyObject *>exc,
                   SP_SITE_START if state == SP_GEN_CREATED else SP_SITE_YIELD, 1)
    sp_gen_fill(<PyObject *>gen, <PyObject *>func, offset // SP_CODEUNIT_BYTES,
                <PyObject *>locals, <PyObject *>stack, <PyObject *>exc,
                state == SP_GEN_CREATED)
    return 0


cdef void quiet_enter():
    """From here, generators dropped on this thread do not run their finally blocks."""
    sp_quiet_enter()


cdef void quiet_exit():
    sp_quiet_exit()


# What abandon() looks through for generators: the containers a flow's state is made of
# (never functions, modules or classes, which lead to the rest of the program)
cdef tuple _HOLDERS = (tuple, list, dict, set, frozenset, types.CellType, Frame,
                       collections.deque)


def abandon(frames):
    """Give up ``frames`` (as :func:`capture` or the codec made them) without resuming them:
    the generators they hold -- in their slots, and in the containers and instances there
    -- are marked finished, so that dropping them runs none of their code, as leaving a
    flow does.  For frames a parked flow kept in memory when it is dropped instead."""
    seen = set()
    todo = list(frames)
    cdef PyGenObject *gen
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if type(obj) is _GeneratorType:
            gen = <PyGenObject *>obj
            status = sp_gen_status(gen)
            if status == SP_GEN_CREATED or status == SP_GEN_SUSPENDED:
                todo.extend(gc.get_referents(obj))       # its frame's slots, first
                sp_gen_mark_completed(gen)
        elif isinstance(obj, _HOLDERS):
            todo.extend(gc.get_referents(obj))
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType,
                                                               types.FunctionType)):
            todo.append(getattr(obj, "__dict__"))


cdef dict _handlerless = {}    # code object -> its copy without an exception table


def strip_handlers(Root root):
    """Prepare to leave the flow running under ``root`` by raising Unwind from here: every
    flow frame between the caller and the root loses its exception handlers (finally,
    except, with), so none of them runs on the way out.  Returns the original code
    objects; keep them until the Unwind has left the flow."""
    if not root.active or root.tstate != PyThreadState_Get():
        raise RuntimeError("strip_handlers() must run inside the flow, on its thread")
    originals = sp_strip_handlers(root.tstate, root.boundary, _handlerless)
    if not root.leaving:             # until the flow is left (Root.leave), a generator
        root.leaving = True          # its frames drop does not run its finally blocks
        sp_quiet_enter()
    return originals


def run(Root root, func, *args, **kwargs):
    """Call ``func(*args, **kwargs)`` as a flow under ``root``: captures inside it walk out
    to this call."""
    root.enter()
    try:
        return func(*args, **kwargs)
    except Unwind as unwind:
        raise _left(root, unwind)
    finally:
        root.leave()


cdef object _left(Root root, unwind):
    """The Unwind leaving a flow, without its traceback when the flow is being left: the
    traceback's frame objects hold the flow's locals, and a generator among them must be
    dropped now, while it cannot run its finally blocks (Root.leave ends that)."""
    if root.leaving:
        unwind.__traceback__ = None
        unwind.__context__ = None
    return unwind


def stack_table(code):
    """The static stack table of ``code``: ``{resume_offset: items_below_callable}`` for
    every reachable call site, offsets in bytes.  Raises ValueError if the bytecode cannot
    be analysed."""
    if not isinstance(code, _CodeType):
        raise TypeError("stack_table() needs a code object")
    cdef sp_table *t = sp_table_get(<PyCodeObject *><PyObject *>code)
    if t.error != NULL:
        raise ValueError(f"cannot analyse {code.co_qualname}: {t.error.decode()}")
    return {t.sites[i].resume * SP_CODEUNIT_BYTES: t.sites[i].below for i in range(t.nsites)
            if t.sites[i].kind == SP_SITE_CALL}


_SELF_API = capture
sp_SavepointError = <PyObject *>SavepointError
sp_EMPTY = <PyObject *>EMPTY
# what a flow frame may drive a generator with (capture.h sp_call_via); held for good
_GEN_DRIVERS = (builtins.next, _GeneratorType.send, _GeneratorType.throw,
                _GeneratorType.close, _GeneratorType.__next__)
sp_builtin_next = <PyObject *>_GEN_DRIVERS[0]
sp_gen_send = <PyObject *>_GEN_DRIVERS[1]
sp_gen_throw = <PyObject *>_GEN_DRIVERS[2]
sp_gen_close = <PyObject *>_GEN_DRIVERS[3]
sp_gen_next = <PyObject *>_GEN_DRIVERS[4]
sp_install_gen_finalizer()
sp_extra_index = sp_request_code_extra_index(sp_table_free)
if sp_extra_index < 0:
    raise ImportError("engine._frames: no code-object extra slot is available")
