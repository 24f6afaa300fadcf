/* frames.h -- the frame core of savepoint-engine: static stack tables, capture and restore
 * of chains of plain-function frames on CPython 3.11.
 *
 * Three parts:
 *   1. sp_table: a forward pass over a code object's bytecode that finds, for every call
 *      site, how many value-stack items lie below the callable and what kind each must be.
 *      Computed once per code object and cached on it (_PyCode_SetExtra).
 *   2. sp_walk: the capture walk from the current frame out to a registered boundary,
 *      refusing anything that cannot be rebuilt (C code between flow frames, generators,
 *      module and class bodies).
 *   3. sp_build_gen / sp_drive_chain: each saved frame becomes a generator object whose
 *      embedded frame runs the plain function's code from the saved position; a trampoline
 *      resumes them innermost first, sending each return value into its parent.
 *
 * Everything version-specific comes from cpython311.h.  Inputs that reach sp_build_gen are
 * validated by sp_check_frame first: a wrong offset or stack depth is a segfault, not an
 * exception, so nothing is trusted.
 */
#ifndef SAVEPOINT_FRAMES_H
#define SAVEPOINT_FRAMES_H

#include "cpython311.h"
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Module state, set once by the Cython module's init.
 */
static PyObject *sp_SavepointError = NULL;   /* engine.SavepointError */
static PyObject *sp_EMPTY = NULL;            /* marker for an empty (C NULL) slot */
static Py_ssize_t sp_extra_index = -1;       /* _PyEval_RequestCodeExtraIndex slot */

/* ---------------------------------------------------------------------------------------
 * 1. Static stack tables
 *
 * Kinds of value-stack items the eval loop (Python/ceval.c, 3.11) uses without checking
 * their type; a restored item of the wrong type in such a slot would crash the
 * interpreter, so restore validates them.
 */
enum {
    SP_K_NULLABLE,     /* lower slot of a pending call (PUSH_NULL, LOAD_METHOD, LOAD_GLOBAL) */
    SP_K_ITER,         /* GET_ITER result; FOR_ITER calls tp_iternext unchecked */
    SP_K_EXC_OR_NONE,  /* previous exception saved by PUSH_EXC_INFO; POP_EXCEPT restores it */
    SP_K_EXC,          /* exception pushed at handler entry; RERAISE reads its traceback */
    SP_K_LASTI,        /* int pushed at handler entry (lasti flag); RERAISE needs an int */
    SP_K_LIST,         /* BUILD_LIST result; LIST_APPEND/LIST_EXTEND assume a list */
    SP_K_DICT,         /* BUILD_MAP result; MAP_ADD assumes a dict */
    SP_K_SET,          /* BUILD_SET result; SET_UPDATE assumes a set */
    SP_NKINDS
};
#define SP_TRACKED 64   /* stack positions whose kinds are tracked (one uint64 per kind) */

typedef struct {
    uint64_t bits[SP_NKINDS];
} sp_kinds;

typedef struct {
    int call;        /* code unit of the CALL or CALL_FUNCTION_EX */
    int resume;      /* prev_instr of a frame waiting for this call's result */
    int below;       /* value-stack items below the callable (and its NULL/self slot) */
    int ex;          /* 1 for CALL_FUNCTION_EX: the stack holds [NULL, func] at `below` */
    sp_kinds kinds;  /* kinds of the items below the callable */
} sp_site;

typedef struct {
    int nunits;
    int nsites;
    int32_t *site_at;     /* per code unit: the site a frame there is in, or -1 */
    sp_site *sites;
    const char *error;    /* why the code could not be analysed, or NULL */
} sp_table;

static void
sp_table_free(void *ptr)
{
    sp_table *t = (sp_table *)ptr;
    if (t != NULL) {
        PyMem_RawFree(t->site_at);
        PyMem_RawFree(t->sites);
        PyMem_RawFree(t);
    }
}

static inline void
sp_kinds_set(sp_kinds *k, int kind, int pos)
{
    if (pos >= 0 && pos < SP_TRACKED) {
        k->bits[kind] |= (uint64_t)1 << pos;
    }
}

static inline void
sp_kinds_truncate(sp_kinds *k, int depth)
{
    uint64_t mask = depth >= SP_TRACKED ? ~(uint64_t)0
                  : depth <= 0 ? 0 : (((uint64_t)1 << depth) - 1);
    for (int i = 0; i < SP_NKINDS; i++) {
        k->bits[i] &= mask;
    }
}

static inline int
sp_kind_at(const sp_kinds *k, int kind, int pos)
{
    return pos < SP_TRACKED && ((k->bits[kind] >> pos) & 1);
}

/* Python/compile.c exception table (3.11): varints of 6-bit chunks, bit 6 = more. */
static const unsigned char *
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

/* How many items an instruction pushes (after popping), for tracking kinds.  Only
 * the non-default cases matter; an instruction that really pushes fewer than assumed
 * merely forgets a kind (restore checks less), never invents one. */
static int
sp_pushes(int op, int arg, int jump)
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

/* The kinds after one instruction: before-depth d, after-depth d2. */
static void
sp_transfer(int op, int arg, int jump, int d, int d2, sp_kinds *k)
{
    int pushes = sp_pushes(op, arg, jump);
    int copied[SP_NKINDS];
    if (op == COPY) {
        for (int i = 0; i < SP_NKINDS; i++) {
            copied[i] = sp_kind_at(k, i, d - arg);
        }
    }
    sp_kinds_truncate(k, d2 - pushes);
    switch (op) {
    case PUSH_NULL:
        sp_kinds_set(k, SP_K_NULLABLE, d2 - 1);
        break;
    case LOAD_METHOD:
        sp_kinds_set(k, SP_K_NULLABLE, d2 - 2);
        break;
    case LOAD_GLOBAL:
        if (arg & 1) {
            sp_kinds_set(k, SP_K_NULLABLE, d2 - 2);
        }
        break;
    case PUSH_EXC_INFO:
        sp_kinds_set(k, SP_K_EXC_OR_NONE, d2 - 2);
        sp_kinds_set(k, SP_K_EXC, d2 - 1);
        break;
    case GET_ITER:
        sp_kinds_set(k, SP_K_ITER, d2 - 1);
        break;
    case FOR_ITER:
        /* The iterator may come from LOAD_FAST (a comprehension's `.0` argument), not
         * GET_ITER: mark it where the loop body starts, so every call inside sees it. */
        if (!jump) {
            sp_kinds_set(k, SP_K_ITER, d2 - 2);
        }
        break;
    case BUILD_LIST:
        sp_kinds_set(k, SP_K_LIST, d2 - 1);
        break;
    case BUILD_MAP: case BUILD_CONST_KEY_MAP:
        sp_kinds_set(k, SP_K_DICT, d2 - 1);
        break;
    case BUILD_SET:
        sp_kinds_set(k, SP_K_SET, d2 - 1);
        break;
    case COPY:
        for (int i = 0; i < SP_NKINDS; i++) {
            if (copied[i]) {
                sp_kinds_set(k, i, d2 - 1);
            }
        }
        break;
    case SWAP: {
        int a = d - 1, b = d - arg;
        for (int i = 0; i < SP_NKINDS; i++) {
            int ka = sp_kind_at(k, i, a), kb = sp_kind_at(k, i, b);
            if (a < SP_TRACKED) k->bits[i] &= ~((uint64_t)1 << a);
            if (b >= 0 && b < SP_TRACKED) k->bits[i] &= ~((uint64_t)1 << b);
            if (kb) sp_kinds_set(k, i, a);
            if (ka) sp_kinds_set(k, i, b);
        }
        break;
    }
    default:
        break;
    }
}

static int
sp_jump_target(int op, int arg, int next, int *target)
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

static int
sp_falls_through(int op)
{
    switch (op) {
    case JUMP_FORWARD: case JUMP_BACKWARD: case JUMP_BACKWARD_NO_INTERRUPT:
    case RETURN_VALUE: case RAISE_VARARGS: case RERAISE:
        return 0;
    default:
        return 1;
    }
}

typedef struct {
    int n;
    uint8_t *op;        /* de-specialized opcode at each instruction start, 0xFF elsewhere */
    int *arg;           /* full oparg including EXTENDED_ARG prefixes */
    int *handler;       /* exception-table entry covering each unit, or -1 */
    int *depth;         /* stack depth before each instruction, -1 = not reached */
    sp_kinds *kinds;
    int *work;
    char *queued;
    int nwork;
    int (*entries)[4];  /* start, end, target, depth<<1|lasti */
    int stacksize;
} sp_pass;

/* Record the state flowing into `target`; returns -1 on an inconsistency. */
static int
sp_flow(sp_pass *p, int target, int depth, const sp_kinds *k)
{
    if (target < 0 || target >= p->n || p->op[target] == 0xFF ||
            depth < 0 || depth > p->stacksize) {
        return -1;
    }
    if (p->depth[target] < 0) {
        p->depth[target] = depth;
        p->kinds[target] = *k;
    }
    else if (p->depth[target] != depth) {
        return -1;
    }
    else {
        /* States must agree at merge points; where kinds differ, keep only what all
         * paths agree on, and revisit (the kinds only shrink, so this terminates). */
        int changed = 0;
        for (int i = 0; i < SP_NKINDS; i++) {
            uint64_t merged = p->kinds[target].bits[i] & k->bits[i];
            if (merged != p->kinds[target].bits[i]) {
                p->kinds[target].bits[i] = merged;
                changed = 1;
            }
        }
        if (!changed) {
            return 0;
        }
    }
    if (!p->queued[target]) {
        p->queued[target] = 1;
        p->work[p->nwork++] = target;
    }
    return 0;
}

static const char *
sp_analyse_pass(PyCodeObject *co, sp_pass *p)
{
    _Py_CODEUNIT *code = _PyCode_CODE(co);
    int n = p->n;
    int ext = 0;
    for (int i = 0; i < n;) {
        int op = _PyOpcode_Deopt[_Py_OPCODE(code[i])];
        int arg = _Py_OPARG(code[i]) | ext;
        p->op[i] = (uint8_t)op;
        p->arg[i] = arg;
        if (op == EXTENDED_ARG) {
            ext = arg << 8;
            i++;
            continue;
        }
        ext = 0;
        i += 1 + _PyOpcode_Caches[op];
    }

    /* Python/ceval.c get_exception_handler (3.11): start, length, target, depth<<1|lasti,
     * all in code units; ranges do not overlap. */
    const unsigned char *t = (const unsigned char *)PyBytes_AS_STRING(co->co_exceptiontable);
    const unsigned char *tend = t + PyBytes_GET_SIZE(co->co_exceptiontable);
    int nentries = 0;
    while (t < tend) {
        int start, size, target, dl;
        if (!(t = sp_parse_varint(t, tend, &start)) || !(t = sp_parse_varint(t, tend, &size)) ||
                !(t = sp_parse_varint(t, tend, &target)) || !(t = sp_parse_varint(t, tend, &dl))) {
            return "malformed exception table";
        }
        if (start + size > n || target >= n) {
            return "exception table entry out of range";
        }
        p->entries[nentries][0] = start;
        p->entries[nentries][1] = start + size;
        p->entries[nentries][2] = target;
        p->entries[nentries][3] = dl;
        for (int u = start; u < start + size; u++) {
            p->handler[u] = nentries;
        }
        nentries++;
    }

    sp_kinds empty;
    memset(&empty, 0, sizeof(empty));
    if (sp_flow(p, 0, 0, &empty) < 0) {
        return "empty code";
    }
    while (p->nwork > 0) {
        int i = p->work[--p->nwork];
        p->queued[i] = 0;
        int op = p->op[i], arg = p->arg[i], d = p->depth[i];
        int next = i + 1 + (op == EXTENDED_ARG ? 0 : _PyOpcode_Caches[op]);
        sp_kinds k = p->kinds[i];

        int eff = PyCompile_OpcodeStackEffectWithJump(op, arg, 0);
        int jeff = PyCompile_OpcodeStackEffectWithJump(op, arg, 1);
        if (eff == PY_INVALID_STACK_EFFECT || jeff == PY_INVALID_STACK_EFFECT) {
            return "unknown opcode";
        }
        if (op == RETURN_GENERATOR) {
            /* The compiler counts it as 0, but when the generator first runs, the value
             * sent in is on the stack (the POP_TOP after it removes it). */
            eff = jeff = 1;
        }
        int target;
        if (sp_jump_target(op, arg, next, &target)) {
            sp_kinds kj = k;
            sp_transfer(op, arg, 1, d, d + jeff, &kj);
            if (sp_flow(p, target, d + jeff, &kj) < 0) {
                return "inconsistent stack depth at a jump target";
            }
        }
        sp_kinds kf = k;
        sp_transfer(op, arg, 0, d, d + eff, &kf);
        if (p->handler[i] >= 0) {
            int *e = p->entries[p->handler[i]];
            int edepth = e[3] >> 1, lasti = e[3] & 1;
            /* PUSH_EXC_INFO heads the handler it is covered by: its exception edge leaves
             * from the state after it (the saved previous exception is already there). */
            sp_kinds ke = op == PUSH_EXC_INFO ? kf : k;
            sp_kinds_truncate(&ke, edepth);
            if (lasti) {
                sp_kinds_set(&ke, SP_K_LASTI, edepth);
            }
            sp_kinds_set(&ke, SP_K_EXC, edepth + lasti);
            if (sp_flow(p, e[2], edepth + lasti + 1, &ke) < 0) {
                return "inconsistent stack depth at an exception handler";
            }
        }
        if (sp_falls_through(op) && next < n) {
            if (sp_flow(p, next, d + eff, &kf) < 0) {
                return "inconsistent stack depth";
            }
        }
    }
    return NULL;
}

static sp_table *
sp_analyse(PyCodeObject *co)
{
    sp_table *table = (sp_table *)PyMem_RawCalloc(1, sizeof(sp_table));
    if (table == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    int n = (int)Py_SIZE(co);   /* code units (Include/cpython/code.h, 3.11) */
    table->nunits = n;
    sp_pass p;
    memset(&p, 0, sizeof(p));
    p.n = n;
    p.stacksize = co->co_stacksize;
    int nentries = (int)PyBytes_GET_SIZE(co->co_exceptiontable) / 4 + 1;
    p.op = PyMem_RawMalloc(n);
    p.arg = PyMem_RawMalloc(sizeof(int) * n);
    p.handler = PyMem_RawMalloc(sizeof(int) * n);
    p.depth = PyMem_RawMalloc(sizeof(int) * n);
    p.kinds = PyMem_RawMalloc(sizeof(sp_kinds) * n);
    p.work = PyMem_RawMalloc(sizeof(int) * n);
    p.queued = PyMem_RawCalloc(n, 1);
    p.entries = PyMem_RawMalloc(sizeof(int[4]) * nentries);
    table->site_at = PyMem_RawMalloc(sizeof(int32_t) * n);
    if (!p.op || !p.arg || !p.handler || !p.depth || !p.kinds || !p.work || !p.queued ||
            !p.entries || !table->site_at) {
        PyErr_NoMemory();
        goto fail;
    }
    memset(p.op, 0xFF, n);
    for (int i = 0; i < n; i++) {
        p.handler[i] = -1;
        p.depth[i] = -1;
        table->site_at[i] = -1;
    }
    table->error = sp_analyse_pass(co, &p);
    if (table->error == NULL) {
        int nsites = 0;
        for (int i = 0; i < n; i++) {
            if (p.depth[i] >= 0 && (p.op[i] == CALL || p.op[i] == CALL_FUNCTION_EX)) {
                nsites++;
            }
        }
        table->sites = PyMem_RawCalloc(nsites ? nsites : 1, sizeof(sp_site));
        if (table->sites == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            if (p.depth[i] < 0 || (p.op[i] != CALL && p.op[i] != CALL_FUNCTION_EX)) {
                continue;
            }
            sp_site *s = &table->sites[table->nsites];
            s->call = i;
            s->ex = p.op[i] == CALL_FUNCTION_EX;
            /* Python/compile.c stack_effect (3.11) models PRECALL as popping the
             * arguments and CALL as popping one more, so the items below the callable
             * are the depth after the call minus its result. */
            s->below = p.depth[i] + PyCompile_OpcodeStackEffectWithJump(p.op[i], p.arg[i], 0) - 1;
            s->resume = s->ex ? i : i + _PyOpcode_Caches[CALL];
            s->kinds = p.kinds[i];
            sp_kinds_truncate(&s->kinds, s->below);
            if (s->below < 0 || s->resume >= n) {
                continue;
            }
            table->site_at[i] = table->nsites;
            table->site_at[s->resume] = table->nsites;
            /* A specialized PRECALL_* makes the C call itself and leaves prev_instr on
             * the PRECALL (Python/ceval.c SKIP_CALL, 3.11): map it to its CALL. */
            int pre = i - 1 - _PyOpcode_Caches[PRECALL];
            if (!s->ex && pre >= 0 && p.op[pre] == PRECALL) {
                table->site_at[pre] = table->nsites;
            }
            table->nsites++;
        }
    }
    goto done;
fail:
    sp_table_free(table);
    table = NULL;
done:
    PyMem_RawFree(p.op); PyMem_RawFree(p.arg); PyMem_RawFree(p.handler);
    PyMem_RawFree(p.depth); PyMem_RawFree(p.kinds); PyMem_RawFree(p.work);
    PyMem_RawFree(p.queued); PyMem_RawFree(p.entries);
    return table;
}

/* The cached table of a code object (a borrowed pointer owned by the code object). */
static sp_table *
sp_table_get(PyCodeObject *co)
{
    void *extra = NULL;
    if (_PyCode_GetExtra((PyObject *)co, sp_extra_index, &extra) < 0) {
        return NULL;
    }
    if (extra != NULL) {
        return (sp_table *)extra;
    }
    sp_table *table = sp_analyse(co);
    if (table == NULL) {
        return NULL;
    }
    if (_PyCode_SetExtra((PyObject *)co, sp_extra_index, table) < 0) {
        sp_table_free(table);
        return NULL;
    }
    return table;
}

static inline const sp_site *
sp_site_at(const sp_table *t, int lasti)
{
    if (t->error != NULL || lasti < 0 || lasti >= t->nunits || t->site_at[lasti] < 0) {
        return NULL;
    }
    return &t->sites[t->site_at[lasti]];
}

/* ---------------------------------------------------------------------------------------
 * Error messages: every refusal names the function, file and line, then the reason.
 */
static PyObject *
sp_refuse(PyCodeObject *co, int lasti, const char *reason)
{
    int line = PyCode_Addr2Line(co, lasti * (int)sizeof(_Py_CODEUNIT));
    PyErr_Format(sp_SavepointError, "cannot take a savepoint in %U (%U:%d): %s",
                 co->co_qualname, co->co_filename, line, reason);
    return NULL;
}

static const char *
sp_code_refusal(PyCodeObject *co)
{
    if (co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR |
                        CO_ITERABLE_COROUTINE)) {
        return "generator and coroutine frames cannot be saved; "
               "call the Flow-API from plain functions";
    }
    if (!(co->co_flags & CO_OPTIMIZED)) {
        return "module-level and class-body code cannot be saved; "
               "call the Flow-API from inside a function";
    }
    return NULL;
}

static PyObject *
sp_refuse_current(PyThreadState *tstate, const char *reason)
{
    _PyInterpreterFrame *f = sp_current_frame(tstate);
    if (f == NULL) {
        PyErr_Format(sp_SavepointError, "cannot take a savepoint: %s", reason);
        return NULL;
    }
    return sp_refuse(f->f_code, sp_frame_lasti(f), reason);
}

/* ---------------------------------------------------------------------------------------
 * 2. Capture
 */
#define SP_FRAME_CODE(f) ((f)->f_code)
#define SP_FRAME_FUNC(f) ((PyObject *)(f)->f_func)

typedef struct {
    _PyInterpreterFrame *frame;
    const sp_site *site;
} sp_walk_item;

/* Whether the callable slots of `site` hold the Flow-API object `api`: as the function
 * itself, as the self of LOAD_METHOD's [method, self] pair, or bound to it. */
static int
sp_calls_api(PyObject **slots, const sp_site *site, PyObject *api)
{
    PyObject *low = slots[0], *high = slots[1];
    if (low == api || high == api) {
        return 1;
    }
    PyObject *callable = (site->ex || low == NULL) ? high : low;
    if (callable != NULL && PyCFunction_Check(callable) && PyCFunction_GET_SELF(callable) == api) {
        return 1;
    }
    /* this.wait_for(*children): CALL_FUNCTION_EX on a bound method object */
    if (callable != NULL && PyMethod_Check(callable) && PyMethod_GET_SELF(callable) == api) {
        return 1;
    }
    return 0;
}

/* Whether the callable slots of `site` hold a plain Python function running `code`:
 * the only C code allowed between two flow frames is the call machinery itself
 * (CALL_FUNCTION_EX for f(*a, **kw), or CALL with a PEP 523 eval hook). */
static int
sp_calls_code(PyObject **slots, const sp_site *site, PyCodeObject *code)
{
    PyObject *callable = (site->ex || slots[0] == NULL) ? slots[1] : slots[0];
    if (callable != NULL && PyMethod_Check(callable)) {
        callable = PyMethod_GET_FUNCTION(callable);
    }
    return callable != NULL && PyFunction_Check(callable) &&
           PyFunction_GET_CODE(callable) == (PyObject *)code;
}

static PyObject *
sp_refuse_c_between(PyCodeObject *co, int lasti, PyObject **slots, const sp_site *site,
                    PyCodeObject *child)
{
    char reason[512];
    PyObject *callable = NULL;
    if (site != NULL) {
        callable = (site->ex || slots[0] == NULL) ? slots[1] : slots[0];
    }
    PyOS_snprintf(reason, sizeof(reason),
        "C code (%.100s) runs between this frame and %.200s; a savepoint cannot cross C "
        "code such as sorted(key=...), map(), functools.partial, properties, operator "
        "methods or __init__ reached through a class call -- call the Flow-API from "
        "plain function calls",
        callable != NULL ? Py_TYPE(callable)->tp_name : "an implicit call",
        PyUnicode_AsUTF8(child->co_qualname));
    return sp_refuse(co, lasti, reason);
}

/* Walk from the current frame out to `boundary`, innermost first.  Returns the number of
 * flow frames, or -1 with SavepointError set. */
static Py_ssize_t
sp_walk(PyThreadState *tstate, _PyInterpreterFrame *boundary, PyObject *api,
        sp_walk_item **buf, Py_ssize_t *cap)
{
    _PyInterpreterFrame *f = sp_current_frame(tstate), *child = NULL;
    Py_ssize_t n = 0;
    while (f != boundary) {
        if (f == NULL) {
            PyErr_SetString(sp_SavepointError,
                "cannot take a savepoint: the Flow-API was called outside the running flow");
            return -1;
        }
        PyCodeObject *co = f->f_code;
        int lasti = sp_frame_lasti(f);
        const char *why = sp_code_refusal(co);
        if (why != NULL) {
            sp_refuse(co, lasti, why);
            return -1;
        }
        sp_table *table = sp_table_get(co);
        if (table == NULL) {
            return -1;
        }
        if (table->error != NULL) {
            char reason[200];
            PyOS_snprintf(reason, sizeof(reason), "its bytecode could not be analysed (%s)",
                          table->error);
            sp_refuse(co, lasti, reason);
            return -1;
        }
        const sp_site *site = sp_site_at(table, lasti);
        PyObject **slots = site ? _PyFrame_Stackbase(f) + site->below : NULL;
        if (child == NULL) {
            if (site == NULL || !sp_frame_is_executing(f)) {
                sp_refuse(co, lasti, "the Flow-API was not called directly here (it was "
                          "reached through an operator, attribute access, or another "
                          "implicit call)");
                return -1;
            }
            if (!sp_calls_api(slots, site, api)) {
                sp_refuse(co, lasti, "the Flow-API was called indirectly (through a "
                          "wrapper such as functools.partial or another C callable); "
                          "call it directly");
                return -1;
            }
        }
        else if (sp_frame_is_executing(f)) {
            if (site == NULL || !child->is_entry || !sp_calls_code(slots, site, child->f_code)) {
                sp_refuse_c_between(co, lasti, slots, site, child->f_code);
                return -1;
            }
        }
        else if (site == NULL || lasti != site->resume) {
            char reason[400];
            PyOS_snprintf(reason, sizeof(reason),
                "%.200s was called implicitly here (by __getitem__ or another special "
                "method the interpreter inlines), not by a call expression",
                PyUnicode_AsUTF8(child->f_code->co_qualname));
            sp_refuse(co, lasti, reason);
            return -1;
        }
        else if (f->stacktop != co->co_nlocalsplus + site->below) {
            sp_refuse(co, lasti, "internal error: the value stack disagrees with the "
                      "static stack table");
            return -1;
        }
        if (site->below > SP_TRACKED) {
            sp_refuse(co, lasti, "the expression around this call is nested too deeply "
                      "(more than 64 pending values)");
            return -1;
        }
        if (n == *cap) {
            Py_ssize_t ncap = *cap ? *cap * 2 : 64;
            sp_walk_item *nbuf = PyMem_Realloc(*buf, sizeof(sp_walk_item) * ncap);
            if (nbuf == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            *buf = nbuf;
            *cap = ncap;
        }
        (*buf)[n].frame = f;
        (*buf)[n].site = site;
        n++;
        child = f;
        f = f->previous;
    }
    if (n == 0) {
        PyErr_SetString(sp_SavepointError,
            "cannot take a savepoint: no flow frame lies between the Flow-API call and "
            "the flow's root");
        return -1;
    }
    return n;
}

/* A tuple of `count` slots starting at `slots`, with C NULL as the EMPTY marker. */
static PyObject *
sp_slots_tuple(PyObject **slots, int count)
{
    PyObject *t = PyTuple_New(count);
    if (t == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        PyObject *v = slots[i] != NULL ? slots[i] : sp_EMPTY;
        Py_INCREF(v);
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* The exception that was being handled when this frame made its call, given the one
 * being handled in its callee: the callee's outermost active `except` saved it in the
 * stack slot PUSH_EXC_INFO left (Python/ceval.c, 3.11).  Borrowed. */
static PyObject *
sp_exc_outside(_PyInterpreterFrame *f, const sp_site *site, PyObject *inner)
{
    uint64_t bits = site->kinds.bits[SP_K_EXC_OR_NONE];
    if (bits == 0) {
        return inner;
    }
    int pos = 0;
    while (!((bits >> pos) & 1)) {
        pos++;
    }
    return _PyFrame_Stackbase(f)[pos];
}

/* ---------------------------------------------------------------------------------------
 * 3. Restore
 */

/* Validate a saved frame against its code; returns the site or NULL with an exception.
 * Everything sp_build_gen relies on is checked here. */
static const sp_site *
sp_check_frame(PyObject *func, PyObject *code, int lasti, PyObject *locals, PyObject *stack,
               PyObject *exc)
{
    if (!PyFunction_Check(func)) {
        PyErr_Format(PyExc_TypeError, "frame func must be a function, not %.100s",
                     Py_TYPE(func)->tp_name);
        return NULL;
    }
    if (!PyCode_Check(code)) {
        PyErr_Format(PyExc_TypeError, "frame code must be a code object, not %.100s",
                     Py_TYPE(code)->tp_name);
        return NULL;
    }
    PyCodeObject *co = (PyCodeObject *)code;
    const char *why = sp_code_refusal(co);
    if (why != NULL) {
        PyErr_Format(PyExc_ValueError, "cannot restore a frame of %U: %s", co->co_qualname, why);
        return NULL;
    }
    sp_table *table = sp_table_get(co);
    if (table == NULL) {
        return NULL;
    }
    const sp_site *site = sp_site_at(table, lasti);
    if (site == NULL || site->resume != lasti) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: offset %d is not a call site of its code",
                     co->co_qualname, lasti);
        return NULL;
    }
    if (!PyTuple_CheckExact(locals) || PyTuple_GET_SIZE(locals) != co->co_nlocalsplus) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: it needs a tuple of %d local slots",
                     co->co_qualname, co->co_nlocalsplus);
        return NULL;
    }
    if (!PyTuple_CheckExact(stack) || PyTuple_GET_SIZE(stack) != site->below ||
            site->below + 1 > co->co_stacksize || site->below > SP_TRACKED) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: the value stack at offset %d holds %d "
                     "items, not %zd", co->co_qualname, lasti, site->below,
                     PyTuple_CheckExact(stack) ? PyTuple_GET_SIZE(stack) : (Py_ssize_t)-1);
        return NULL;
    }
    const char *kinds = PyBytes_AS_STRING(co->co_localspluskinds);
    for (int i = 0; i < co->co_nlocalsplus; i++) {
        PyObject *v = PyTuple_GET_ITEM(locals, i);
        /* Past the prologue, MAKE_CELL and COPY_FREE_VARS have filled every cell and free
         * slot with a cell; LOAD_DEREF would dereference anything else as one. */
        if ((kinds[i] & (SP_CO_FAST_CELL | SP_CO_FAST_FREE)) && !PyCell_Check(v)) {
            PyErr_Format(PyExc_ValueError,
                         "cannot restore a frame of %U: slot %d (%U) must hold a cell",
                         co->co_qualname, i, PyTuple_GET_ITEM(co->co_localsplusnames, i));
            return NULL;
        }
    }
    for (int i = 0; i < site->below; i++) {
        PyObject *v = PyTuple_GET_ITEM(stack, i);
        const sp_kinds *k = &site->kinds;
        const char *need = NULL;
        if (v == sp_EMPTY) {
            if (!sp_kind_at(k, SP_K_NULLABLE, i)) need = "a value (not an empty slot)";
        }
        else if (sp_kind_at(k, SP_K_ITER, i)) {
            if (!PyIter_Check(v)) need = "an iterator";
        }
        else if (sp_kind_at(k, SP_K_EXC_OR_NONE, i)) {
            if (v != Py_None && !PyExceptionInstance_Check(v)) need = "an exception or None";
        }
        else if (sp_kind_at(k, SP_K_EXC, i)) {
            if (!PyExceptionInstance_Check(v)) need = "an exception";
        }
        else if (sp_kind_at(k, SP_K_LASTI, i)) {
            /* RERAISE sets prev_instr from it unchecked (Python/ceval.c, 3.11). */
            int overflow = 0;
            long lasti_value = PyLong_CheckExact(v) ? PyLong_AsLongAndOverflow(v, &overflow) : -1;
            if (overflow || lasti_value < 0 || lasti_value >= table->nunits) {
                need = "an instruction index of its code";
            }
        }
        else if (sp_kind_at(k, SP_K_LIST, i)) {
            if (!PyList_Check(v)) need = "a list";
        }
        else if (sp_kind_at(k, SP_K_DICT, i)) {
            if (!PyDict_Check(v)) need = "a dict";
        }
        else if (sp_kind_at(k, SP_K_SET, i)) {
            if (!PySet_Check(v)) need = "a set";
        }
        if (need != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "cannot restore a frame of %U: value-stack item %d must be %s, "
                         "not %.100s", co->co_qualname, i, need, Py_TYPE(v)->tp_name);
            return NULL;
        }
    }
    if (exc != Py_None && !PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: the handled exception must be an "
                     "exception or None", co->co_qualname);
        return NULL;
    }
    return site;
}

/* A suspended generator whose embedded frame runs the plain function's code from
 * `lasti`, as Objects/genobject.c make_gen() and RETURN_GENERATOR (Python/ceval.c,
 * 3.11) would build it.  Arguments must have passed sp_check_frame. */
static PyGenObject *
sp_build_gen(PyObject *func, PyObject *code, int lasti, PyObject *locals, PyObject *stack,
             PyObject *exc)
{
    PyFunctionObject *fn = (PyFunctionObject *)func;
    PyCodeObject *co = (PyCodeObject *)code;
    int nlocalsplus = co->co_nlocalsplus;
    PyGenObject *gen = PyObject_GC_NewVar(PyGenObject, &PyGen_Type,
                                          nlocalsplus + co->co_stacksize);
    if (gen == NULL) {
        return NULL;
    }
    gen->gi_code = (PyCodeObject *)Py_NewRef(co);
    gen->gi_weakreflist = NULL;
    gen->gi_name = Py_NewRef(fn->func_name);
    gen->gi_qualname = Py_NewRef(fn->func_qualname);
    gen->gi_exc_state.exc_value = exc == Py_None ? NULL : Py_NewRef(exc);
    gen->gi_exc_state.previous_item = NULL;
    gen->gi_origin_or_finalizer = NULL;
    gen->gi_hooks_inited = 0;
    gen->gi_closed = 0;
    gen->gi_running_async = 0;

    _PyInterpreterFrame *frame = sp_gen_frame(gen);
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
    for (int i = 0; i < nlocalsplus; i++) {
        PyObject *v = PyTuple_GET_ITEM(locals, i);
        frame->localsplus[i] = v == sp_EMPTY ? NULL : Py_NewRef(v);
    }
    int depth = (int)PyTuple_GET_SIZE(stack);
    for (int i = 0; i < depth; i++) {
        PyObject *v = PyTuple_GET_ITEM(stack, i);
        frame->localsplus[nlocalsplus + i] = v == sp_EMPTY ? NULL : Py_NewRef(v);
    }
    frame->stacktop = nlocalsplus + depth;
    gen->gi_frame_state = FRAME_SUSPENDED;
    PyObject_GC_Track(gen);
    return gen;
}

/* Drop a restored frame without running it: no GeneratorExit (which would run user
 * `finally` blocks a second time) and no dangling `previous` pointer.  _PyGen_Finalize
 * skips generators at FRAME_COMPLETED; gen_dealloc then clears the frame. */
static void
sp_abandon(PyThreadState *tstate, PyGenObject *gen)
{
    _PyInterpreterFrame *frame = sp_gen_frame(gen);
    if (sp_current_frame(tstate) == frame) {
        sp_set_current_frame(tstate, frame->previous);
    }
    frame->previous = NULL;
    gen->gi_frame_state = FRAME_COMPLETED;
    Py_DECREF(gen);
}

/* Restored frames never execute RESUME, where Python/ceval.c (3.11) emits the 'call'
 * event (TRACE_FUNCTION_ENTRY); emit it here, as call_trace() does. */
static int
sp_emit_call_event(PyThreadState *tstate, _PyInterpreterFrame *frame)
{
    if (!tstate->cframe->use_tracing || tstate->tracing ||
            (tstate->c_tracefunc == NULL && tstate->c_profilefunc == NULL)) {
        return 0;
    }
    _PyInterpreterFrame *saved = sp_current_frame(tstate);
    sp_set_current_frame(tstate, frame);
    PyFrameObject *f = PyEval_GetFrame();    /* borrowed; made on demand */
    int err = f == NULL ? -1 : 0;
    if (f != NULL) {
        Py_INCREF(f);
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
        Py_DECREF(f);
    }
    sp_set_current_frame(tstate, saved);
    return err;
}

/* Run a restored chain: gens[0] is the root, gens[n-1] the innermost frame, which
 * receives `value` as its pending call's result (or, with `throwing`, has the exception
 * `value` raised at that call).  Each frame's result is sent into its parent; an exception
 * is raised in it.  Steals the references in gens.  An exception of class `unwind`
 * leaving a frame abandons the pending ones and propagates.  Returns what the root
 * returns, or NULL with its exception set. */
static PyObject *
sp_drive_chain(PyThreadState *tstate, PyGenObject **gens, Py_ssize_t n, PyObject *value,
               int throwing, PyObject *unwind)
{
    _PyInterpreterFrame *base = sp_current_frame(tstate);
    /* Link the logical chain so that f_back, tracebacks and the next capture see it. */
    for (Py_ssize_t k = 0; k < n; k++) {
        sp_gen_frame(gens[k])->previous = k ? sp_gen_frame(gens[k - 1]) : base;
    }
    _PyFrameEvalFunction eval = _PyInterpreterState_GetEvalFrameFunc(tstate->interp);
    PyObject *result = NULL;
    if (throwing) {
        PyErr_Restore(Py_NewRef(Py_TYPE(value)), Py_NewRef(value),
                      PyException_GetTraceback(value));
    }
    else {
        result = Py_NewRef(value);
    }
    for (Py_ssize_t k = n - 1; k >= 0; k--) {
        PyGenObject *gen = gens[k];
        gens[k] = NULL;
        _PyInterpreterFrame *frame = sp_gen_frame(gen);
        _PyInterpreterFrame *parent = frame->previous;
        int exc = result == NULL;
        if (!exc && sp_emit_call_event(tstate, frame) < 0) {
            Py_CLEAR(result);
            exc = 1;
        }
        /* Objects/genobject.c gen_send_ex2 (3.11), without the generator-only parts:
         * no PEP 479 rewrite of StopIteration, no StopIteration wrapping of returns. */
        sp_set_current_frame(tstate, parent);
        _PyFrame_StackPush(frame, exc ? Py_NewRef(Py_None) : result);
        result = NULL;
        gen->gi_exc_state.previous_item = tstate->exc_info;
        tstate->exc_info = &gen->gi_exc_state;
        gen->gi_frame_state = FRAME_EXECUTING;
        result = eval(tstate, frame, exc);
        if (gen->gi_frame_state == FRAME_EXECUTING) {
            gen->gi_frame_state = FRAME_COMPLETED;
        }
        tstate->exc_info = gen->gi_exc_state.previous_item;
        gen->gi_exc_state.previous_item = NULL;
        frame->previous = NULL;
        Py_DECREF(gen);    /* gen_dealloc clears the completed frame */
        if (result == NULL && unwind != NULL && PyErr_ExceptionMatches(unwind)) {
            sp_set_current_frame(tstate, base);
            for (Py_ssize_t j = k - 1; j >= 0; j--) {
                sp_abandon(tstate, gens[j]);
                gens[j] = NULL;
            }
            break;
        }
    }
    sp_set_current_frame(tstate, base);
    return result;
}

/* ---------------------------------------------------------------------------------------
 * 4. Leaving a flow without running its handlers
 *
 * To unload an idle execution, or to jump back to a savepoint, the runtime raises Unwind
 * through the flow's frames.  Those frames must not run `finally`, `except` or `with`
 * cleanup on the way out: the execution is not ending, it will go on from a savepoint.
 * Python/ceval.c (3.11) looks up handlers in frame->f_code->co_exceptiontable
 * (get_exception_handler), so each frame between the current one and the boundary gets a
 * copy of its code with an empty exception table: the exception then passes through,
 * popping each frame's stack.  prev_instr moves to the same offset in the copy, for
 * tracebacks.  The original code objects are returned: the eval loop of the innermost
 * frame still reads its bytecode, so the caller keeps them until the unwinding is over.
 */
static PyObject *
sp_strip_handlers(PyThreadState *tstate, _PyInterpreterFrame *boundary, PyObject *copies)
{
    PyObject *originals = PyList_New(0);
    if (originals == NULL) {
        return NULL;
    }
    for (_PyInterpreterFrame *f = sp_current_frame(tstate); f != NULL && f != boundary;
         f = f->previous) {
        PyCodeObject *co = f->f_code;
        if (PyBytes_GET_SIZE(co->co_exceptiontable) == 0) {
            continue;
        }
        PyObject *copy = PyDict_GetItemWithError(copies, (PyObject *)co);
        if (copy == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            /* code.replace(co_exceptiontable=b"") */
            PyObject *replace = PyObject_GetAttrString((PyObject *)co, "replace");
            PyObject *args = PyTuple_New(0);
            PyObject *kwargs = Py_BuildValue("{s:y}", "co_exceptiontable", "");
            copy = (replace && args && kwargs) ? PyObject_Call(replace, args, kwargs) : NULL;
            Py_XDECREF(replace);
            Py_XDECREF(args);
            Py_XDECREF(kwargs);
            if (copy == NULL || PyDict_SetItem(copies, (PyObject *)co, copy) < 0) {
                Py_XDECREF(copy);
                goto error;
            }
            Py_DECREF(copy);      /* the dict holds it */
        }
        if (PyList_Append(originals, (PyObject *)co) < 0) {
            goto error;
        }
        int lasti = sp_frame_lasti(f);
        f->f_code = (PyCodeObject *)Py_NewRef(copy);
        f->prev_instr = _PyCode_CODE((PyCodeObject *)copy) + lasti;
        Py_DECREF(co);            /* the list keeps the original alive */
    }
    return originals;
error:
    Py_DECREF(originals);
    return NULL;
}

#endif /* SAVEPOINT_FRAMES_H */
