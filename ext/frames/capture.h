/* capture.h -- the capture walk: from the current frame out to a registered boundary,
 * refusing anything that cannot be rebuilt (C code between flow frames, coroutines,
 * module and class bodies).  Every refusal is a SavepointError naming the function, file
 * and line, then the reason.
 *
 * A generator's frame may sit in the chain when a flow frame drives it directly: a `for`
 * loop (FOR_ITER), `yield from` (SEND), or a call of next(), send(), throw() or close()
 * on it.  Each such link is recorded (SP_VIA_*) so that restore can hand the
 * generator's yield, return or exception to its driver the way that C code would have.
 */
#ifndef SAVEPOINT_FRAMES_CAPTURE_H
#define SAVEPOINT_FRAMES_CAPTURE_H

#include "../cpython/py311.h"
#include "stacktable.h"

/* Set once by the Cython module's init. */
static PyObject *sp_SavepointError = NULL;   /* engine.SavepointError */
static PyObject *sp_EMPTY = NULL;            /* marker for an empty (C NULL) slot */
static PyObject *sp_builtin_next = NULL;     /* builtins.next */
static PyObject *sp_gen_send = NULL;         /* the generator type's method descriptors */
static PyObject *sp_gen_throw = NULL;
static PyObject *sp_gen_close = NULL;
static PyObject *sp_gen_next = NULL;         /* generator.__next__ (a slot wrapper) */

/* How a frame drives the generator whose frame is the next one in: the C code between
 * them, whose handling of the generator's outcome restore reproduces. */
enum {
    SP_VIA_CALL,        /* not a generator: a plain call */
    SP_VIA_FOR,         /* FOR_ITER: yield -> next item; return -> loop ends */
    SP_VIA_YIELD_FROM,  /* SEND: yield -> yielded outward; return -> value of the yield from */
    SP_VIA_NEXT,        /* next(g), g.__next__(), g.send(v), g.throw(e): yield -> result;
                           return -> StopIteration(value); with a default (next(g, d)):
                           return -> d */
    SP_VIA_CLOSE,       /* g.close(): yield -> RuntimeError; return or GeneratorExit -> None */
    SP_NVIA
};

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

/* Why frames of `co` cannot be saved at all, or NULL (generator frames can, where a flow
 * frame drives them: the walk and restore check that). */
static const char *
sp_code_refusal(PyCodeObject *co)
{
    if (sp_code_is_coroutine_like(co)) {
        return "coroutines and async generators cannot be saved (not yet); "
               "call the Flow-API from plain functions or generators";
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
    PyGenObject *gen;     /* the generator this is the frame of, or NULL: a plain frame */
    int via;              /* for a generator: how the next frame out drives it (SP_VIA_*) */
    PyObject *deflt;      /* next()'s default (borrowed), or NULL */
    PyObject *exc;        /* the exception being handled here (borrowed), or NULL; for a
                             generator, the one its own code handles */
} sp_walk_item;

/* The generator a frame belongs to if it runs generator code, else NULL (a plain frame,
 * or a restored plain frame, which a generator object carries too). */
static PyGenObject *
sp_frame_real_generator(sp_iframe *f)
{
    return sp_code_is_generator(sp_frame_code(f)) ? sp_frame_generator(f) : NULL;
}

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

/* The exception that was being handled when this frame made its call, given the one
 * being handled in its callee: the callee's outermost active `except` saved it in the
 * stack slot PUSH_EXC_INFO left (Python/ceval.c, 3.11).  Borrowed. */
static PyObject *
sp_exc_outside(sp_iframe *f, const sp_site *site, PyObject *inner)
{
    if (site == NULL) {
        return inner;
    }
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

/* What the C code a frame is calling is, in words: a function's name, else a type's. */
static const char *
sp_callable_name(PyObject *callable)
{
    if (callable == NULL) {
        return "an implicit call";
    }
    if (PyCFunction_Check(callable)) {
        return ((PyCFunctionObject *)callable)->m_ml->ml_name;
    }
    if (PyType_Check(callable)) {
        return ((PyTypeObject *)callable)->tp_name;
    }
    return Py_TYPE(callable)->tp_name;
}

static PyObject *
sp_refuse_gen_driver(PyCodeObject *co, int lasti, const char *driver, PyGenObject *gen)
{
    char reason[600];
    PyOS_snprintf(reason, sizeof(reason),
        "C code (%.100s) drives the generator %.200s here; a savepoint inside a generator "
        "needs a flow frame to drive it directly -- iterate it with a for loop, next(), "
        "send(), throw(), close() or yield from, not sum(), list(), sorted(), zip() or "
        "other C code", driver, PyUnicode_AsUTF8(sp_gen_qualname(gen)));
    return sp_refuse(co, lasti, reason);
}

/* The via of a call made with `slots` (the callable's two slots, then the arguments) on
 * `gen`: next(gen[, default]), gen.send/throw/__next__/close -- as a method call, or
 * through a bound method.  -1 if the call is something else. */
static int
sp_call_via(PyObject **slots, const sp_site *site, PyGenObject *gen, PyObject **deflt)
{
    PyObject *g = (PyObject *)gen;
    *deflt = NULL;
    if (site->ex) {
        return -1;
    }
    /* CALL: [method, self, args...] or [NULL, callable, args...] (Python/ceval.c, 3.11) */
    PyObject *callable = slots[0] != NULL ? slots[0] : slots[1];
    PyObject **args = slots[0] != NULL ? slots + 1 : slots + 2;
    int nargs = site->argc + (slots[0] != NULL);
    if (callable == sp_builtin_next && nargs >= 1 && args[0] == g) {
        if (nargs == 2) {
            *deflt = args[1];
        }
        return nargs <= 2 ? SP_VIA_NEXT : -1;
    }
    if (nargs >= 1 && args[0] == g) {
        if (callable == sp_gen_send || callable == sp_gen_throw || callable == sp_gen_next) {
            return SP_VIA_NEXT;
        }
        if (callable == sp_gen_close) {
            return SP_VIA_CLOSE;
        }
    }
    if (PyCFunction_Check(callable) && PyCFunction_GET_SELF(callable) == g) {
        const char *name = ((PyCFunctionObject *)callable)->m_ml->ml_name;
        if (strcmp(name, "send") == 0 || strcmp(name, "throw") == 0) {
            return SP_VIA_NEXT;
        }
        if (strcmp(name, "close") == 0) {
            return SP_VIA_CLOSE;
        }
    }
    return -1;
}

/* How frame `f`, at `site`, drives the generator `gen` whose frame is the next one in;
 * `links` ({generator: (via, default)} of a restored chain still pending, or NULL) tells
 * it for a restored frame waiting in a call.  Returns SP_VIA_* (and *deflt), or -1 with
 * SavepointError set. */
static int
sp_walk_via(sp_iframe *f, int lasti, const sp_site *site, PyGenObject *gen, PyObject *links,
            PyObject **deflt)
{
    PyCodeObject *co = sp_frame_code(f);
    int executing = sp_frame_is_executing(f);
    PyObject **stack = sp_frame_stack(f);
    *deflt = NULL;
    if (site == NULL) {
        sp_refuse_gen_driver(co, lasti, "an implicit call", gen);
        return -1;
    }
    if (!executing && lasti != site->resume) {
        sp_refuse_gen_driver(co, lasti, "an implicit call", gen);
        return -1;
    }
    switch (site->kind) {
    case SP_SITE_FOR:
    case SP_SITE_SEND:
        if (stack[site->below - 1] != (PyObject *)gen) {
            sp_refuse_gen_driver(co, lasti, sp_callable_name((PyObject *)Py_TYPE(
                stack[site->below - 1])), gen);
            return -1;
        }
        return site->kind == SP_SITE_FOR ? SP_VIA_FOR : SP_VIA_YIELD_FROM;
    case SP_SITE_CALL:
        if (executing) {
            PyObject **slots = stack + site->below;
            int via = sp_call_via(slots, site, gen, deflt);
            if (via < 0) {
                PyObject *callable = (site->ex || slots[0] == NULL) ? slots[1] : slots[0];
                sp_refuse_gen_driver(co, lasti, sp_callable_name(callable), gen);
            }
            return via;
        }
        else {
            /* a restored frame still waiting: its call's callable is gone from the stack;
             * the restore that built it says how it drives the generator */
            PyObject *link = links != NULL ? PyDict_GetItemWithError(links, (PyObject *)gen)
                                           : NULL;
            if (link == NULL || !PyTuple_Check(link) || PyTuple_GET_SIZE(link) != 2) {
                if (!PyErr_Occurred()) {
                    sp_refuse(co, lasti, "internal error: a restored frame waits on a "
                              "generator without a recorded link");
                }
                return -1;
            }
            int via = (int)PyLong_AsLong(PyTuple_GET_ITEM(link, 0));
            PyObject *d = PyTuple_GET_ITEM(link, 1);
            *deflt = d == sp_EMPTY ? NULL : d;
            return via;
        }
    case SP_SITE_YIELD:
        sp_refuse(co, lasti, "throw() or close() passed through this generator's `yield "
                  "from` into the one it delegates to; a savepoint cannot be taken there");
        return -1;
    default:
        sp_refuse_gen_driver(co, lasti, "an implicit call", gen);
        return -1;
    }
}

/* Walk from the current frame out to `boundary`, innermost first.  Returns the number of
 * flow frames, or -1 with SavepointError set. */
static Py_ssize_t
sp_walk(PyThreadState *tstate, sp_iframe *boundary, PyObject *api, PyObject *links,
        sp_walk_item **buf, Py_ssize_t *cap)
{
    sp_iframe *f = sp_current_frame(tstate), *child = NULL;
    PyGenObject *child_gen = NULL;
    Py_ssize_t n = 0;
    /* the exception handled where the walk stands (borrowed: exc_info items hold it);
     * after a restored generator that is still waiting, a restored frame's own */
    PyObject *handled = PyErr_GetHandledException();
    Py_XDECREF(handled);
    int handled_own = 0;
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
        PyGenObject *gen = sp_frame_real_generator(f);
        int via = SP_VIA_CALL;
        PyObject *deflt = NULL;
        if (sp_code_is_generator(co) && gen == NULL) {
            sp_refuse(co, lasti, "internal error: a generator frame without its generator");
            return -1;
        }
        if (child_gen != NULL) {
            via = sp_walk_via(f, lasti, site, child_gen, links, &deflt);
            if (via < 0) {
                return -1;
            }
            if (!sp_frame_is_executing(f) && sp_frame_stack_depth(f) != site->below) {
                sp_refuse(co, lasti, "internal error: the value stack disagrees with the "
                          "static stack table");
                return -1;
            }
        }
        else if (child != NULL && site != NULL && site->kind != SP_SITE_CALL) {
            /* e.g. a for loop over an iterator whose __next__ is a Python function */
            sp_refuse_c_between(co, lasti, slots, NULL, sp_frame_code(child));
            return -1;
        }
        else if (child == NULL) {
            if (site == NULL || site->kind != SP_SITE_CALL || !sp_frame_is_executing(f)) {
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
        if (gen != NULL && sp_frame_previous(f) == boundary) {
            sp_refuse(co, lasti, "the flow's own function is a generator; a flow must be a "
                      "plain function");
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
        if (n > 0) {
            (*buf)[n - 1].via = via;          /* how this frame drives the one inside */
            (*buf)[n - 1].deflt = deflt;
        }
        sp_walk_item *item = &(*buf)[n];
        item->frame = f;
        item->site = site;
        item->gen = gen;
        item->via = SP_VIA_CALL;
        item->deflt = NULL;
        if (gen != NULL) {
            item->exc = sp_gen_exc(gen);
            if (sp_gen_is_executing(gen)) {
                handled = sp_gen_outer_exc(gen);
                handled_own = 0;
            }
            else {              /* waiting in a restored chain: its driver knows */
                handled = NULL;
                handled_own = 1;
            }
        }
        else {
            PyGenObject *owner = sp_frame_generator(f);
            if (handled_own && owner != NULL && !sp_frame_is_executing(f)) {
                handled = sp_gen_exc(owner);      /* a restored frame keeps its own */
            }
            handled_own = 0;
            item->exc = handled;
            handled = sp_exc_outside(f, site, handled);
        }
        n++;
        child = f;
        child_gen = gen;
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

#endif /* SAVEPOINT_FRAMES_CAPTURE_H */
