/* cpython311.h -- every CPython internal the frame core touches, in one place.
 *
 * The frame core reads and builds _PyInterpreterFrame structs, which are private to
 * CPython and change shape between minor versions.  This header pins 3.11: it refuses
 * to compile elsewhere, pulls in the internal headers, and names the few fields and
 * constants that ext/frames.h relies on, each with the CPython source it comes from.
 * Porting to another version starts (and should end) here.
 */
#ifndef SAVEPOINT_CPYTHON311_H
#define SAVEPOINT_CPYTHON311_H

#include <Python.h>
#include <frameobject.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "savepoint-engine's frame core is written against CPython 3.11 frame internals"
#endif

/* Internal headers refuse to be included without Py_BUILD_CORE.  Define it only around
 * them (as greenlet does) so the rest of the extension sees the public API. */
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"    /* _PyInterpreterFrame, FRAME_* states and owners */
#define NEED_OPCODE_TABLES 1          /* our own static copies of _PyOpcode_Deopt/_Caches:  */
#include "internal/pycore_opcode.h"   /* the interpreter's are not exported               */
#undef NEED_OPCODE_TABLES
#undef Py_BUILD_CORE

/* Include/internal/pycore_code.h (3.11): kinds of the co_localspluskinds bytes. */
#define SP_CO_FAST_CELL 0x40
#define SP_CO_FAST_FREE 0x80

/* Include/cpython/pystate.h (3.11): the frame a thread is executing is
 * tstate->cframe->current_frame; _PyEval_EvalFrameDefault (Python/ceval.c) does not
 * write the outer _PyCFrame's current_frame back when a nested evaluation returns, so
 * whoever changes it restores it. */
static inline _PyInterpreterFrame *
sp_current_frame(PyThreadState *tstate)
{
    return tstate->cframe->current_frame;
}

static inline void
sp_set_current_frame(PyThreadState *tstate, _PyInterpreterFrame *frame)
{
    tstate->cframe->current_frame = frame;
}

/* Python/ceval.c (3.11): while a frame executes, its stack pointer lives in a C local of
 * the eval loop and frame->stacktop is -1.  A frame suspended in an inlined
 * Python-to-Python call, or a suspended generator frame, has a valid stacktop. */
static inline int
sp_frame_is_executing(_PyInterpreterFrame *frame)
{
    return frame->stacktop < 0;
}

/* Include/internal/pycore_frame.h: frame->prev_instr relative to the code's first unit. */
static inline int
sp_frame_lasti(_PyInterpreterFrame *frame)
{
    return _PyInterpreterFrame_LASTI(frame);
}

/* Objects/genobject.c make_gen() (3.11): a generator object embeds its frame in
 * gi_iframe, sized co_nlocalsplus + co_stacksize slots. */
static inline _PyInterpreterFrame *
sp_gen_frame(PyGenObject *gen)
{
    return (_PyInterpreterFrame *)gen->gi_iframe;
}

#endif /* SAVEPOINT_CPYTHON311_H */
