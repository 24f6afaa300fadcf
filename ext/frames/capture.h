/* capture.h -- the capture walk: from the current frame out to a registered boundary,
 * refusing anything that cannot be rebuilt (C code between flow frames, generators,
 * module and class bodies).  Every refusal is a SavepointError naming the function, file
 * and line, then the reason.
 */
#ifndef SAVEPOINT_FRAMES_CAPTURE_H
#define SAVEPOINT_FRAMES_CAPTURE_H

#include "../cpython/py311.h"
#include "stacktable.h"

/* Set once by the Cython module's init. */
static PyObject *sp_SavepointError = NULL;   /* engine.SavepointError */
static PyObject *sp_EMPTY = NULL;            /* marker for an empty (C NULL) slot */

/* ---------------------------------------------------------------------------------------
 * Refusals
 */
static PyObject *
sp_refuse(PyCodeObject *co, int lasti, const char *reason)
{
    int line = PyCode_Addr2Line(co, lasti * SP_CODEUNIT_BYTES);
    PyErr_Format(sp_SavepointError, "cannot take a savepoint in %U (%U:%d): %s",
                 sp_code_qualname(co), sp_code_filename(co), line, reason);
    return NULL;
}

static const char *
sp_code_refusal(PyCodeObject *co)
{
    if (sp_code_flags(co) & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR |
                             CO_ITERABLE_COROUTINE)) {
        return "generator and coroutine frames cannot be saved; "
               "call the Flow-API from plain functions";
    }
    if (!(sp_code_flags(co) & CO_OPTIMIZED)) {
        return "module-level and class-body code cannot be saved; "
               "call the Flow-API from inside a function";
    }
    return NULL;
}

static PyObject *
sp_refuse_current(PyThreadState *tstate, const char *reason)
{
    sp_iframe *f = sp_current_frame(tstate);
    if (f == NULL) {
        PyErr_Format(sp_SavepointError, "cannot take a savepoint: %s", reason);
        return NULL;
    }
    return sp_refuse(sp_frame_code(f), sp_frame_lasti(f), reason);
}

/* ---------------------------------------------------------------------------------------
 * The walk
 */
typedef struct {
    sp_iframe *frame;
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
        PyUnicode_AsUTF8(sp_code_qualname(child)));
    return sp_refuse(co, lasti, reason);
}

/* Walk from the current frame out to `boundary`, innermost first.  Returns the number of
 * flow frames, or -1 with SavepointError set. */
static Py_ssize_t
sp_walk(PyThreadState *tstate, sp_iframe *boundary, PyObject *api,
        sp_walk_item **buf, Py_ssize_t *cap)
{
    sp_iframe *f = sp_current_frame(tstate), *child = NULL;
    Py_ssize_t n = 0;
    while (f != boundary) {
        if (f == NULL) {
            PyErr_SetString(sp_SavepointError,
                "cannot take a savepoint: the Flow-API was called outside the running flow");
            return -1;
        }
        PyCodeObject *co = sp_frame_code(f);
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
        PyObject **slots = site ? sp_frame_stack(f) + site->below : NULL;
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
            if (site == NULL || !sp_frame_is_entry(child) ||
                    !sp_calls_code(slots, site, sp_frame_code(child))) {
                sp_refuse_c_between(co, lasti, slots, site, sp_frame_code(child));
                return -1;
            }
        }
        else if (site == NULL || lasti != site->resume) {
            char reason[400];
            PyOS_snprintf(reason, sizeof(reason),
                "%.200s was called implicitly here (by __getitem__ or another special "
                "method the interpreter inlines), not by a call expression",
                PyUnicode_AsUTF8(sp_code_qualname(sp_frame_code(child))));
            sp_refuse(co, lasti, reason);
            return -1;
        }
        else if (sp_frame_stack_depth(f) != site->below) {
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
        f = sp_frame_previous(f);
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
sp_exc_outside(sp_iframe *f, const sp_site *site, PyObject *inner)
{
    uint64_t bits = site->kinds.bits[SP_K_EXC_OR_NONE];
    if (bits == 0) {
        return inner;
    }
    int pos = 0;
    while (!((bits >> pos) & 1)) {
        pos++;
    }
    return sp_frame_stack(f)[pos];
}

#endif /* SAVEPOINT_FRAMES_CAPTURE_H */
