/* py311.h -- everything savepoint-engine knows about CPython 3.11's internals, by name.
 *
 * The frame core reads and builds _PyInterpreterFrame structs, analyses bytecode and
 * drives generator frames; the codec reads small ints, lists and strs without the API
 * calls.  All of that is private to CPython and changes between minor versions.  Every
 * such fact is one named inline, macro or table here, with the CPython 3.11 source it
 * relies on; the C of ext/frames/ and ext/codec/ uses only these names and the public
 * C API.  A port to another version should be a copy of this header, edited.
 *
 * Sections: code objects; bytecode; interpreter frames; thread state; generators;
 * int, list and str objects.
 */
#ifndef SAVEPOINT_CPYTHON_PY311_H
#define SAVEPOINT_CPYTHON_PY311_H

#include <Python.h>
#include <frameobject.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "savepoint-engine is written against CPython 3.11 internals (ext/cpython/py311.h)"
#endif

/* Internal headers refuse to be included without Py_BUILD_CORE.  Define it only around
 * them (as greenlet does) so the rest of the extension sees the public API. */
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"    /* _PyInterpreterFrame, FRAME_* states and owners */
#define NEED_OPCODE_TABLES 1          /* our own static copies of _PyOpcode_Deopt/_Caches:  */
#include "internal/pycore_opcode.h"   /* the interpreter's are not exported               */
#undef NEED_OPCODE_TABLES
#undef Py_BUILD_CORE

/* =======================================================================================
 * Code objects (Include/cpython/code.h, struct PyCodeObject, 3.11)
 */

static inline int
sp_code_nlocalsplus(PyCodeObject *co)   /* locals + cells + free variables */
{
    return co->co_nlocalsplus;
}

static inline int
sp_code_stacksize(PyCodeObject *co)
{
    return co->co_stacksize;
}

static inline int
sp_code_flags(PyCodeObject *co)         /* CO_GENERATOR, CO_OPTIMIZED, ... */
{
    return co->co_flags;
}

static inline PyObject *
sp_code_qualname(PyCodeObject *co)      /* borrowed str */
{
    return co->co_qualname;
}

static inline PyObject *
sp_code_filename(PyCodeObject *co)      /* borrowed str */
{
    return co->co_filename;
}

static inline PyObject *
sp_code_slot_name(PyCodeObject *co, int i)   /* borrowed: co_localsplusnames[i] */
{
    return PyTuple_GET_ITEM(co->co_localsplusnames, i);
}

/* Include/internal/pycore_code.h CO_FAST_CELL / CO_FAST_FREE (3.11): the kind byte of a
 * local slot in co_localspluskinds; past the prologue such a slot holds a cell. */
#define SP_CO_FAST_CELL 0x40
#define SP_CO_FAST_FREE 0x80

static inline int
sp_code_slot_holds_cell(PyCodeObject *co, int i)
{
    const char *kinds = PyBytes_AS_STRING(co->co_localspluskinds);
    return (kinds[i] & (SP_CO_FAST_CELL | SP_CO_FAST_FREE)) != 0;
}

/* Include/cpython/ceval.h _PyEval_RequestCodeExtraIndex and Include/cpython/code.h
 * _PyCode_GetExtra/_PyCode_SetExtra (3.11; PyUnstable_* from 3.12): per-code-object
 * slots for an extension's own data, freed with the code object. */
static inline Py_ssize_t
sp_request_code_extra_index(freefunc free_extra)
{
    return _PyEval_RequestCodeExtraIndex(free_extra);
}

static inline int
sp_code_get_extra(PyCodeObject *co, Py_ssize_t index, void **extra)
{
    return _PyCode_GetExtra((PyObject *)co, index, extra);
}

static inline int
sp_code_set_extra(PyCodeObject *co, Py_ssize_t index, void *extra)
{
    return _PyCode_SetExtra((PyObject *)co, index, extra);
}

/* Include/cpython/dictobject.h _PyDict_NewPresized (3.11, private): a dict sized for n
 * entries up front -- the codec's decoder knows every map's length before its items. */
static inline PyObject *
sp_dict_new_presized(Py_ssize_t n)
{
    return _PyDict_NewPresized(n);
}

/* =======================================================================================
 * Bytecode
 *
 * Positions are code units (instructions and their inline caches); Python-level offsets
 * (f_lasti, dis) are bytes.  Include/cpython/code.h (3.11): a unit is a _Py_CODEUNIT,
 * a code object holds Py_SIZE(co) of them from _PyCode_CODE(co).
 */
#define SP_CODEUNIT_BYTES ((int)sizeof(_Py_CODEUNIT))

static inline int
sp_code_nunits(PyCodeObject *co)
{
    return (int)Py_SIZE(co);
}

/* The instruction at unit i: its opcode with any specialization undone
 * (Include/internal/pycore_opcode.h _PyOpcode_Deopt, 3.11) and its full oparg given the
 * EXTENDED_ARG prefix `ext` read before it.  Returns the prefix for the next one. */
static inline int
sp_read_instr(PyCodeObject *co, int i, int ext, int *op, int *arg)
{
    _Py_CODEUNIT word = _PyCode_CODE(co)[i];
    *op = _PyOpcode_Deopt[_Py_OPCODE(word)];
    *arg = _Py_OPARG(word) | ext;
    return *op == EXTENDED_ARG ? *arg << 8 : 0;
}

/* Units an instruction occupies: itself and its inline CACHE entries
 * (Include/internal/pycore_opcode.h _PyOpcode_Caches, 3.11). */
static inline int
sp_instr_units(int op)
{
    return op == EXTENDED_ARG ? 1 : 1 + _PyOpcode_Caches[op];
}

/* Include/cpython/compile.h PyCompile_OpcodeStackEffectWithJump (3.11): the stack effect
 * with or without the jump; -1 for an opcode the compiler does not know.  RETURN_GENERATOR
 * counts as 0 there, but when the generator first runs, the value sent in is on the
 * stack (the POP_TOP after it removes it): 1. */
static inline int
sp_stack_effect(int op, int arg, int jump, int *effect)
{
    int e = PyCompile_OpcodeStackEffectWithJump(op, arg, jump);
    if (e == PY_INVALID_STACK_EFFECT) {
        return -1;
    }
    *effect = op == RETURN_GENERATOR ? 1 : e;
    return 0;
}

/* How many items an instruction pushes (after popping), for tracking kinds; from the
 * instruction bodies in Python/ceval.c (3.11).  Only the non-default cases matter; an
 * instruction that really pushes fewer than assumed merely forgets a kind (restore
 * checks less), never invents one. */
static inline int
sp_op_pushes(int op, int arg, int jump)
{
    switch (op) {
    case POP_TOP: case STORE_FAST: case STORE_NAME: case STORE_GLOBAL: case STORE_DEREF:
    case STORE_ATTR: case STORE_SUBSCR: case DELETE_SUBSCR: case DELETE_FAST:
    case DELETE_NAME: case DELETE_GLOBAL: case DELETE_DEREF: case DELETE_ATTR:
    case POP_JUMP_FORWARD_IF_FALSE: case POP_JUMP_FORWARD_IF_TRUE:
    case POP_JUMP_FORWARD_IF_NONE: case POP_JUMP_FORWARD_IF_NOT_NONE:
    case POP_JUMP_BACKWARD_IF_FALSE: case POP_JUMP_BACKWARD_IF_TRUE:
    case POP_JUMP_BACKWARD_IF_NONE: case POP_JUMP_BACKWARD_IF_NOT_NONE:
    case JUMP_FORWARD: case JUMP_BACKWARD: case JUMP_BACKWARD_NO_INTERRUPT:
    case JUMP_IF_FALSE_OR_POP: case JUMP_IF_TRUE_OR_POP:
    case RETURN_VALUE: case RAISE_VARARGS: case RERAISE: case PRINT_EXPR: case IMPORT_STAR:
    case SETUP_ANNOTATIONS: case POP_EXCEPT: case LIST_APPEND: case SET_ADD: case MAP_ADD:
    case LIST_EXTEND: case SET_UPDATE: case DICT_UPDATE: case DICT_MERGE: case NOP:
    case RESUME: case CACHE: case EXTENDED_ARG: case MAKE_CELL: case COPY_FREE_VARS:
    case KW_NAMES: case PRECALL: case END_ASYNC_FOR: case SWAP:
        return 0;
    case FOR_ITER:
        return jump ? 0 : 1;
    case LOAD_METHOD: case PUSH_EXC_INFO: case BEFORE_WITH: case BEFORE_ASYNC_WITH:
    case CHECK_EG_MATCH:
        return 2;
    case LOAD_GLOBAL:
        return (arg & 1) ? 2 : 1;
    case UNPACK_SEQUENCE:
        return arg;
    case UNPACK_EX:
        return (arg & 0xFF) + (arg >> 8) + 1;
    default:
        return 1;
    }
}

/* Python/ceval.c JUMPBY (3.11): where a jump goes, relative to the unit after the
 * instruction and its caches (`next`).  Returns 0 for an instruction that cannot jump. */
static inline int
sp_op_jump_target(int op, int arg, int next, int *target)
{
    switch (op) {
    case JUMP_FORWARD: case JUMP_IF_FALSE_OR_POP: case JUMP_IF_TRUE_OR_POP:
    case POP_JUMP_FORWARD_IF_FALSE: case POP_JUMP_FORWARD_IF_TRUE:
    case POP_JUMP_FORWARD_IF_NONE: case POP_JUMP_FORWARD_IF_NOT_NONE:
    case FOR_ITER: case SEND:
        *target = next + arg;
        return 1;
    case JUMP_BACKWARD: case JUMP_BACKWARD_NO_INTERRUPT:
    case POP_JUMP_BACKWARD_IF_FALSE: case POP_JUMP_BACKWARD_IF_TRUE:
    case POP_JUMP_BACKWARD_IF_NONE: case POP_JUMP_BACKWARD_IF_NOT_NONE:
        *target = next - arg;
        return 1;
    default:
        return 0;
    }
}

/* Whether execution can go on to the next instruction. */
static inline int
sp_op_falls_through(int op)
{
    switch (op) {
    case JUMP_FORWARD: case JUMP_BACKWARD: case JUMP_BACKWARD_NO_INTERRUPT:
    case RETURN_VALUE: case RAISE_VARARGS: case RERAISE:
        return 0;
    default:
        return 1;
    }
}

/* Kinds of value-stack items the eval loop (Python/ceval.c, 3.11) uses without checking
 * their type; a restored item of the wrong type in such a slot would crash the
 * interpreter, so restore validates them. */
enum {
    SP_K_NULLABLE,     /* lower slot of a pending call (PUSH_NULL, LOAD_METHOD, LOAD_GLOBAL) */
    SP_K_ITER,         /* GET_ITER result; FOR_ITER calls tp_iternext unchecked */
    SP_K_EXC_OR_NONE,  /* previous exception saved by PUSH_EXC_INFO; POP_EXCEPT restores it */
    SP_K_EXC,          /* exception pushed at handler entry; RERAISE reads its traceback */
    SP_K_LASTI,        /* int pushed at handler entry (lasti flag); RERAISE sets prev_instr
                          from it unchecked */
    SP_K_LIST,         /* BUILD_LIST result; LIST_APPEND/LIST_EXTEND assume a list */
    SP_K_DICT,         /* BUILD_MAP result; MAP_ADD assumes a dict */
    SP_K_SET,          /* BUILD_SET result; SET_UPDATE assumes a set */
    SP_NKINDS
};

/* An item of `kind` that an instruction leaves `from_top` positions below the new top. */
typedef struct {
    int kind;
    int from_top;
} sp_mark;

static inline int
sp_mark_one(sp_mark out[2], int kind, int from_top)
{
    out[0] = (sp_mark){kind, from_top};
    return 1;
}

/* The items of a checked kind an instruction pushes; returns how many (at most 2). */
static inline int
sp_op_marks(int op, int arg, int jump, sp_mark out[2])
{
    switch (op) {
    case PUSH_NULL:
        return sp_mark_one(out, SP_K_NULLABLE, 1);
    case LOAD_METHOD:
        return sp_mark_one(out, SP_K_NULLABLE, 2);
    case LOAD_GLOBAL:
        return (arg & 1) ? sp_mark_one(out, SP_K_NULLABLE, 2) : 0;
    case PUSH_EXC_INFO:
        out[0] = (sp_mark){SP_K_EXC_OR_NONE, 2};
        out[1] = (sp_mark){SP_K_EXC, 1};
        return 2;
    case GET_ITER:
        return sp_mark_one(out, SP_K_ITER, 1);
    case FOR_ITER:
        /* The iterator may come from LOAD_FAST (a comprehension's `.0` argument), not
         * GET_ITER: mark it where the loop body starts, so every call inside sees it. */
        return jump ? 0 : sp_mark_one(out, SP_K_ITER, 2);
    case BUILD_LIST:
        return sp_mark_one(out, SP_K_LIST, 1);
    case BUILD_MAP: case BUILD_CONST_KEY_MAP:
        return sp_mark_one(out, SP_K_DICT, 1);
    case BUILD_SET:
        return sp_mark_one(out, SP_K_SET, 1);
    default:
        return 0;
    }
}

/* COPY n pushes a copy of the n-th item from the top: n, else 0. */
static inline int
sp_op_copies(int op, int arg)
{
    return op == COPY ? arg : 0;
}

/* SWAP n exchanges the top with the n-th item from the top: n, else 0. */
static inline int
sp_op_swaps(int op, int arg)
{
    return op == SWAP ? arg : 0;
}

/* PUSH_EXC_INFO heads the handler it is covered by (Python/compile.c compiler_try_except,
 * 3.11): its exception edge leaves from the state after it, with the saved previous
 * exception already there. */
static inline int
sp_op_raises_after(int op)
{
    return op == PUSH_EXC_INFO;
}

/* An entry of the exception table: units [start, end) go to `target` with the value
 * stack cut to `depth` and, if `lasti`, the raising instruction's index pushed, then the
 * exception (Python/ceval.c exception_unwind, 3.11). */
typedef struct {
    int start, end, target, depth, lasti;
} sp_handler;

/* Objects/exception_handling_notes.txt (3.11): varints of 6-bit chunks, bit 6 = more,
 * most significant first (bit 7 marks an entry's first byte and is ignored here). */
static inline const unsigned char *
sp_parse_varint(const unsigned char *p, const unsigned char *end, int *out)
{
    if (p >= end) {
        return NULL;
    }
    int val = *p & 63;
    while (*p & 64) {
        p++;
        if (p >= end || val > (1 << 24)) {
            return NULL;
        }
        val = (val << 6) | (*p & 63);
    }
    *out = val;
    return p + 1;
}

/* Python/ceval.c get_exception_handler (3.11): co_exceptiontable is a sequence of
 * start, length, target, depth<<1|lasti, all in code units; ranges do not overlap.
 * Reads the entry at p; returns where the next starts, or NULL if malformed. */
static inline const unsigned char *
sp_read_handler(const unsigned char *p, const unsigned char *end, sp_handler *h)
{
    int start, size, target, dl;
    if (!(p = sp_parse_varint(p, end, &start)) || !(p = sp_parse_varint(p, end, &size)) ||
            !(p = sp_parse_varint(p, end, &target)) || !(p = sp_parse_varint(p, end, &dl))) {
        return NULL;
    }
    h->start = start;
    h->end = start + size;
    h->target = target;
    h->depth = dl >> 1;
    h->lasti = dl & 1;
    return p;
}

static inline void
sp_code_handlers(PyCodeObject *co, const unsigned char **p, const unsigned char **end)
{
    *p = (const unsigned char *)PyBytes_AS_STRING(co->co_exceptiontable);
    *end = *p + PyBytes_GET_SIZE(co->co_exceptiontable);
}

/* An upper bound on the entries: each takes at least four bytes. */
static inline int
sp_code_max_handlers(PyCodeObject *co)
{
    return (int)PyBytes_GET_SIZE(co->co_exceptiontable) / 4 + 1;
}

static inline int
sp_code_has_handlers(PyCodeObject *co)
{
    return PyBytes_GET_SIZE(co->co_exceptiontable) != 0;
}

/* Where a frame can stand while it waits (Python/ceval.c, 3.11): in a Python-level call
 * (CALL, CALL_FUNCTION_EX); driving a generator -- FOR_ITER calls the iterator's
 * tp_iternext (gen_iternext for a generator), SEND calls PyIter_Send on the receiver of
 * a `yield from`, neither has inline caches; or, a generator's own frame, suspended:
 * YIELD_VALUE leaves prev_instr on itself with the yielded value popped
 * (TARGET(YIELD_VALUE)), and a generator not started yet stands on RETURN_GENERATOR with
 * an empty stack (TARGET(RETURN_GENERATOR) copies the frame there, after the
 * MAKE_CELL/COPY_FREE_VARS prologue). */
enum { SP_SITE_CALL, SP_SITE_FOR, SP_SITE_SEND, SP_SITE_YIELD, SP_SITE_START };

/* The kind of site an instruction is, or -1. */
static inline int
sp_op_site_kind(int op)
{
    switch (op) {
    case CALL: case CALL_FUNCTION_EX: return SP_SITE_CALL;
    case FOR_ITER: return SP_SITE_FOR;
    case SEND: return SP_SITE_SEND;
    case YIELD_VALUE: return SP_SITE_YIELD;
    case RETURN_GENERATOR: return SP_SITE_START;
    default: return -1;
    }
}

/* CALL_FUNCTION_EX holds [NULL, func] below its arguments; CALL [NULL or method, func]
 * (Python/ceval.c, 3.11): which slot holds the callable differs. */
static inline int
sp_op_is_call_ex(int op)
{
    return op == CALL_FUNCTION_EX;
}

/* Value-stack items below a call's callable (and its NULL/self slot), given the depth
 * before the call: Python/compile.c stack_effect (3.11) models PRECALL as popping the
 * arguments and CALL as popping one more, so they are the depth after the call minus
 * its result. */
static inline int
sp_call_below(int op, int arg, int depth)
{
    return depth + PyCompile_OpcodeStackEffectWithJump(op, arg, 0) - 1;
}

/* prev_instr of a frame waiting for a call made at unit `call`: CALL has skipped its
 * inline caches before it pushes the callee's frame (Python/ceval.c TARGET(CALL),
 * JUMPBY(INLINE_CACHE_ENTRIES_CALL), 3.11); CALL_FUNCTION_EX has none. */
static inline int
sp_call_resume(int op, int call)
{
    return op == CALL_FUNCTION_EX ? call : call + _PyOpcode_Caches[CALL];
}

/* A specialized PRECALL_* makes the C call itself and leaves prev_instr on the PRECALL
 * (Python/ceval.c SKIP_CALL, 3.11): the unit of the PRECALL before the call at `call`,
 * where a frame in that call may also stand, or -1.  `ops` holds the decoded opcode
 * of each instruction start. */
static inline int
sp_call_alias(const uint8_t *ops, int op, int call)
{
    int pre = call - 1 - _PyOpcode_Caches[PRECALL];
    return op == CALL && pre >= 0 && ops[pre] == PRECALL ? pre : -1;
}

/* =======================================================================================
 * Interpreter frames (Include/internal/pycore_frame.h, struct _PyInterpreterFrame, 3.11)
 */

/* The frame of a Python function call, read and written only through the names below. */
typedef _PyInterpreterFrame sp_iframe;

static inline PyCodeObject *
sp_frame_code(sp_iframe *f)          /* borrowed */
{
    return f->f_code;
}

static inline PyObject *
sp_frame_func(sp_iframe *f)          /* borrowed */
{
    return (PyObject *)f->f_func;
}

static inline sp_iframe *
sp_frame_previous(sp_iframe *f)
{
    return f->previous;
}

static inline void
sp_frame_set_previous(sp_iframe *f, sp_iframe *previous)
{
    f->previous = previous;
}

/* _PyFrame_GetLocalsArray: local slots (locals, cells, free variables), then the stack. */
static inline PyObject **
sp_frame_locals(sp_iframe *f)
{
    return _PyFrame_GetLocalsArray(f);
}

/* _PyFrame_Stackbase: the bottom of the value stack, after the local slots. */
static inline PyObject **
sp_frame_stack(sp_iframe *f)
{
    return _PyFrame_Stackbase(f);
}

/* _PyInterpreterFrame_LASTI: prev_instr as a unit index into the code. */
static inline int
sp_frame_lasti(sp_iframe *f)
{
    return _PyInterpreterFrame_LASTI(f);
}

/* Python/ceval.c (3.11): while a frame executes, its stack pointer lives in a C local of
 * the eval loop and frame->stacktop is -1.  A frame suspended in an inlined
 * Python-to-Python call, or a suspended generator frame, has a valid stacktop. */
static inline int
sp_frame_is_executing(sp_iframe *f)
{
    return f->stacktop < 0;
}

/* Items on the value stack of a frame that is not executing. */
static inline int
sp_frame_stack_depth(sp_iframe *f)
{
    return f->stacktop - f->f_code->co_nlocalsplus;
}

static inline void
sp_frame_set_stack_depth(sp_iframe *f, int depth)
{
    f->stacktop = f->f_code->co_nlocalsplus + depth;
}

/* Whether a frame object (PyFrameObject, made by sys._getframe, f_back, tracebacks or a
 * tracer) refers to this frame: _PyFrame_Clear (Python/frame.c, 3.11) must then hand
 * the frame's data over to it, which only CPython can do. */
static inline int
sp_frame_has_object(sp_iframe *f)
{
    return f->frame_obj != NULL;
}

/* _PyFrame_StackPush: what a suspended frame receives, e.g. a call's result. */
static inline void
sp_frame_push(sp_iframe *f, PyObject *value)
{
    _PyFrame_StackPush(f, value);
}

/* Make a suspended frame go on after unit `lasti`: the eval loop starts at
 * prev_instr + 1 (Python/ceval.c resume_frame, 3.11). */
static inline void
sp_frame_set_lasti(sp_iframe *f, int lasti)
{
    f->prev_instr = _PyCode_CODE(f->f_code) + lasti;
}

/* _PyFrame_StackPop: the top item of a suspended frame; the caller owns it. */
static inline PyObject *
sp_frame_pop(sp_iframe *f)
{
    return _PyFrame_StackPop(f);
}

/* Python/ceval.c _PyEval_EvalFrameDefault (3.11) sets is_entry on the frame each C-level
 * evaluation starts with; a Python-to-Python call it inlines leaves it false.  So a frame
 * with is_entry was called from C. */
static inline int
sp_frame_is_entry(sp_iframe *f)
{
    return f->is_entry;
}

/* The specials of a frame that runs `fn`'s code `co` from unit `lasti`, owned by a
 * generator: as _PyFrame_InitializeSpecials (Include/internal/pycore_frame.h, 3.11)
 * with prev_instr at `lasti` instead of before the first instruction.  New references
 * to fn and co; no locals or stack yet. */
static inline void
sp_frame_init_in_gen(sp_iframe *frame, PyFunctionObject *fn, PyCodeObject *co,
                     int lasti)
{
    frame->f_func = (PyFunctionObject *)Py_NewRef(fn);
    frame->f_globals = fn->func_globals;      /* borrowed, as _PyFrame_InitializeSpecials */
    frame->f_builtins = fn->func_builtins;    /* borrowed */
    frame->f_locals = NULL;
    frame->f_code = (PyCodeObject *)Py_NewRef(co);
    frame->frame_obj = NULL;
    frame->previous = NULL;
    frame->prev_instr = _PyCode_CODE(co) + lasti;
    frame->is_entry = false;
    frame->owner = FRAME_OWNED_BY_GENERATOR;
}

/* Make a frame run `copy` -- a code object with the same bytecode as its own -- from the
 * same unit.  Python/ceval.c (3.11) reads handlers from frame->f_code, and tracebacks
 * read prev_instr against it.  Returns the frame's former code (the reference the frame
 * held). */
static inline PyCodeObject *
sp_frame_replace_code(sp_iframe *f, PyObject *copy)
{
    PyCodeObject *old = f->f_code;
    int lasti = sp_frame_lasti(f);
    f->f_code = (PyCodeObject *)Py_NewRef(copy);
    f->prev_instr = _PyCode_CODE((PyCodeObject *)copy) + lasti;
    return old;
}

/* =======================================================================================
 * Thread state (Include/cpython/pystate.h, struct _ts and _PyCFrame, 3.11)
 */

/* The frame a thread is executing is tstate->cframe->current_frame;
 * _PyEval_EvalFrameDefault (Python/ceval.c) does not write the outer _PyCFrame's
 * current_frame back when a nested evaluation returns, so whoever changes it restores it. */
static inline sp_iframe *
sp_current_frame(PyThreadState *tstate)
{
    return tstate->cframe->current_frame;
}

static inline void
sp_set_current_frame(PyThreadState *tstate, sp_iframe *frame)
{
    tstate->cframe->current_frame = frame;
}

/* The frame evaluator (PEP 523): _PyInterpreterState_GetEvalFrameFunc. */
typedef _PyFrameEvalFunction sp_eval_frame_func;

static inline sp_eval_frame_func
sp_eval_frame(PyThreadState *tstate)
{
    return _PyInterpreterState_GetEvalFrameFunc(tstate->interp);
}

/* Whether a 'call' event must go to a trace or profile function: Python/ceval.c
 * TRACE_FUNCTION_ENTRY and call_trace_protected (3.11) check cframe->use_tracing, then
 * tstate->tracing (no events from inside a hook). */
static inline int
sp_call_hooks_wanted(PyThreadState *tstate)
{
    return tstate->cframe->use_tracing && !tstate->tracing &&
           (tstate->c_tracefunc != NULL || tstate->c_profilefunc != NULL);
}

/* The 'call' event for `f`, to the profile function and then the trace function, as
 * Python/ceval.c call_trace (3.11) sends it.  Returns -1 with an exception set if a
 * hook failed. */
static inline int
sp_call_hooks(PyThreadState *tstate, PyFrameObject *f)
{
    int err = 0;
    if (tstate->c_profilefunc != NULL) {
        PyThreadState_EnterTracing(tstate);
        err = tstate->c_profilefunc(tstate->c_profileobj, f, PyTrace_CALL, Py_None);
        PyThreadState_LeaveTracing(tstate);
    }
    if (err == 0 && tstate->c_tracefunc != NULL) {
        PyThreadState_EnterTracing(tstate);
        err = tstate->c_tracefunc(tstate->c_traceobj, f, PyTrace_CALL, Py_None);
        PyThreadState_LeaveTracing(tstate);
    }
    return err;
}

/* =======================================================================================
 * Generators (Include/cpython/genobject.h, PyGenObject, 3.11)
 */

/* Objects/genobject.c make_gen() (3.11): a generator object embeds its frame in
 * gi_iframe, sized co_nlocalsplus + co_stacksize slots. */
static inline sp_iframe *
sp_gen_frame(PyGenObject *gen)
{
    return (sp_iframe *)gen->gi_iframe;
}

static inline PyCodeObject *
sp_gen_code(PyGenObject *gen)        /* borrowed: the code its frame was sized for */
{
    return gen->gi_code;
}

static inline PyObject *
sp_gen_name(PyGenObject *gen)        /* borrowed str: __name__ */
{
    return gen->gi_name;
}

static inline PyObject *
sp_gen_qualname(PyGenObject *gen)    /* borrowed str: __qualname__ */
{
    return gen->gi_qualname;
}

/* A generator object running `co`, named `name` and `qualname`, as make_gen() fills it
 * (Objects/genobject.c, 3.11), handling `exc` (NULL: none).  Its frame is not set up;
 * it is neither tracked by the GC nor in any frame state yet. */
static inline PyGenObject *
sp_gen_new_named(PyCodeObject *co, PyObject *name, PyObject *qualname, PyObject *exc)
{
    PyGenObject *gen = PyObject_GC_NewVar(PyGenObject, &PyGen_Type,
                                          co->co_nlocalsplus + co->co_stacksize);
    if (gen == NULL) {
        return NULL;
    }
    gen->gi_code = (PyCodeObject *)Py_NewRef(co);
    gen->gi_weakreflist = NULL;
    gen->gi_name = Py_NewRef(name);
    gen->gi_qualname = Py_NewRef(qualname);
    gen->gi_exc_state.exc_value = Py_XNewRef(exc);
    gen->gi_exc_state.previous_item = NULL;
    gen->gi_origin_or_finalizer = NULL;
    gen->gi_hooks_inited = 0;
    gen->gi_closed = 0;
    gen->gi_running_async = 0;
    return gen;
}

/* ... for `fn` running `co` (a restored plain frame: named after its function). */
static inline PyGenObject *
sp_gen_new(PyFunctionObject *fn, PyCodeObject *co, PyObject *exc)
{
    return sp_gen_new_named(co, fn->func_name, fn->func_qualname, exc);
}

/* Include/internal/pycore_frame.h _PyFrame_GetGenerator (3.11): a frame owned by a
 * generator (owner FRAME_OWNED_BY_GENERATOR) is that generator's gi_iframe. */
static inline PyGenObject *
sp_frame_generator(sp_iframe *f)
{
    if (f->owner != FRAME_OWNED_BY_GENERATOR) {
        return NULL;
    }
    return (PyGenObject *)((char *)f - offsetof(PyGenObject, gi_iframe));
}

/* Code that runs as a generator: a real one (CO_GENERATOR) or the kinds the frame core
 * does not save yet (Include/cpython/code.h co_flags, 3.11). */
static inline int
sp_code_is_generator(PyCodeObject *co)
{
    return (co->co_flags & CO_GENERATOR) != 0;
}

static inline int
sp_code_is_coroutine_like(PyCodeObject *co)
{
    return (co->co_flags & (CO_COROUTINE | CO_ASYNC_GENERATOR | CO_ITERABLE_COROUTINE)) != 0;
}

/* gi_frame_state (Include/internal/pycore_frame.h PyFrameState, 3.11).  _PyGen_Finalize
 * skips a generator at FRAME_COMPLETED -- no GeneratorExit -- and gen_dealloc then
 * clears its frame (Objects/genobject.c). */
static inline void
sp_gen_mark_suspended(PyGenObject *gen)
{
    gen->gi_frame_state = FRAME_SUSPENDED;
}

static inline void
sp_gen_mark_executing(PyGenObject *gen)
{
    gen->gi_frame_state = FRAME_EXECUTING;
}

static inline void
sp_gen_mark_completed(PyGenObject *gen)
{
    gen->gi_frame_state = FRAME_COMPLETED;
}

static inline int
sp_gen_is_executing(PyGenObject *gen)
{
    return gen->gi_frame_state == FRAME_EXECUTING;
}

static inline void
sp_gen_mark_created(PyGenObject *gen)
{
    gen->gi_frame_state = FRAME_CREATED;
}

/* FRAME_CLEARED: the generator has finished and its frame holds nothing; gen_dealloc and
 * gen_traverse skip the frame (Objects/genobject.c, 3.11).  A generator the frame core
 * builds starts here, so that it is safe to drop before its frame is filled. */
static inline void
sp_gen_mark_cleared(PyGenObject *gen)
{
    gen->gi_frame_state = FRAME_CLEARED;
}

static inline int
sp_gen_is_cleared(PyGenObject *gen)
{
    return gen->gi_frame_state == FRAME_CLEARED;
}

/* What a generator is doing, from gi_frame_state (PyFrameState, 3.11). */
enum { SP_GEN_CREATED, SP_GEN_SUSPENDED, SP_GEN_RUNNING, SP_GEN_FINISHED };

static inline int
sp_gen_status(PyGenObject *gen)
{
    switch (gen->gi_frame_state) {
    case FRAME_CREATED: return SP_GEN_CREATED;
    case FRAME_SUSPENDED: return SP_GEN_SUSPENDED;
    case FRAME_EXECUTING: return SP_GEN_RUNNING;
    default: return SP_GEN_FINISHED;     /* FRAME_COMPLETED, FRAME_CLEARED */
    }
}

/* The exception the generator's own code is handling (its gi_exc_state, which heads the
 * thread's exc_info while it runs), or NULL.  Python/errors.c _PyErr_GetTopmostException
 * (3.11) treats NULL and None alike.  Borrowed. */
static inline PyObject *
sp_gen_exc(PyGenObject *gen)
{
    PyObject *exc = gen->gi_exc_state.exc_value;
    return exc == Py_None ? NULL : exc;
}

static inline void
sp_gen_set_exc(PyGenObject *gen, PyObject *exc)
{
    Py_XSETREF(gen->gi_exc_state.exc_value, Py_XNewRef(exc));
}

/* The exception handled around a running generator: the first one set in the exc_info
 * items below its own (Python/errors.c _PyErr_GetTopmostException, 3.11).  Borrowed, or
 * NULL. */
static inline PyObject *
sp_gen_outer_exc(PyGenObject *gen)
{
    for (_PyErr_StackItem *item = gen->gi_exc_state.previous_item; item != NULL;
         item = item->previous_item) {
        if (item->exc_value != NULL && item->exc_value != Py_None) {
            return item->exc_value;
        }
    }
    return NULL;
}

/* An exc_info item of the caller's (Include/cpython/pystate.h _PyErr_StackItem, 3.11):
 * pushed around resuming a generator, it stands for the exception its consumer was
 * handling -- what sys.exception() shows inside the generator when the generator
 * handles none itself. */
typedef _PyErr_StackItem sp_exc_item;

static inline void
sp_exc_item_push(PyThreadState *tstate, sp_exc_item *item, PyObject *exc)
{
    item->exc_value = exc;               /* borrowed for the item's short life */
    item->previous_item = tstate->exc_info;
    tstate->exc_info = item;
}

static inline void
sp_exc_item_pop(PyThreadState *tstate, sp_exc_item *item)
{
    tstate->exc_info = item->previous_item;
    item->previous_item = NULL;
}

/* Objects/genobject.c gen_iternext and gen_send_ex (3.11): a generator that returns
 * `value` ends next()/send()/throw() with StopIteration(value), or a bare StopIteration
 * for None. */
static inline void
sp_set_stop_iteration(PyObject *value)
{
    if (value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
    }
    else {
        _PyGen_SetStopIterationValue(value);
    }
}

/* Objects/genobject.c gen_close (3.11): the error close() raises when the generator
 * yields instead of finishing. */
#define SP_GEN_IGNORED_EXIT "generator ignored GeneratorExit"

/* Objects/genobject.c _PyGen_Finalize (3.11) is PyGen_Type's tp_finalize: it runs
 * close() -- the generator's `finally` blocks -- when a suspended generator is dropped.
 * The frame core wraps it (a type slot, Include/cpython/object.h) so that generators
 * dropped while a flow is being left do not run user code. */
static inline destructor
sp_gen_finalizer(void)
{
    return PyGen_Type.tp_finalize;
}

static inline void
sp_gen_set_finalizer(destructor finalize)
{
    PyGen_Type.tp_finalize = finalize;
}

/* Objects/genobject.c gen_send_ex2 (3.11): while a generator runs, its exception state
 * heads the thread's exc_info stack (what sys.exception() and a bare `raise` see). */
static inline void
sp_gen_push_exc_state(PyThreadState *tstate, PyGenObject *gen)
{
    gen->gi_exc_state.previous_item = tstate->exc_info;
    tstate->exc_info = &gen->gi_exc_state;
}

static inline void
sp_gen_pop_exc_state(PyThreadState *tstate, PyGenObject *gen)
{
    tstate->exc_info = gen->gi_exc_state.previous_item;
    gen->gi_exc_state.previous_item = NULL;
}

/* =======================================================================================
 * int, list and str objects, read without the API calls on the codec's hot path
 */

/* Include/cpython/longintrepr.h struct _longobject (3.11): |ob_size| digits of 30 bits,
 * the sign in ob_size's.  An int of at most one digit (ob_size -1, 0, 1) is its first
 * digit times ob_size; ob_digit[0] is always allocated. */
static inline int
sp_long_is_compact(PyObject *o)
{
    Py_ssize_t size = Py_SIZE(o);
    return size >= -1 && size <= 1;
}

static inline int64_t
sp_long_compact_value(PyObject *o)
{
    return Py_SIZE(o) * (int64_t)((PyLongObject *)o)->ob_digit[0];
}

/* Include/cpython/listobject.h PyListObject.ob_item (3.11): the item array. */
static inline PyObject **
sp_list_items(PyObject *list)
{
    return ((PyListObject *)list)->ob_item;
}

/* Include/cpython/unicodeobject.h PyUnicode_IS_COMPACT_ASCII (3.11; PEP 393): the
 * characters are the ASCII bytes at PyUnicode_DATA, PyUnicode_GET_LENGTH of them. */
static inline int
sp_str_is_compact_ascii(PyObject *o)
{
    return PyUnicode_IS_COMPACT_ASCII(o);
}

#endif /* SAVEPOINT_CPYTHON_PY311_H */
