/* restore.h -- generator-backed restore: each saved plain frame becomes a generator
 * object whose embedded frame runs the plain function's code from the saved position;
 * a saved generator frame is put back into its own generator object, the one the frames
 * around it hold.  A trampoline resumes them innermost first, handing each one's outcome
 * to the frame that drives it: a plain frame's return value (or exception) to its
 * caller, a generator's yield, return or exception to its for loop, yield from, or
 * next()/send()/throw()/close() call -- as the C code between them would.
 *
 * Inputs that reach sp_build_gen and sp_gen_fill are validated by sp_check_frame first:
 * a wrong offset or stack depth is a segfault, not an exception, so nothing is trusted.
 */
#ifndef SAVEPOINT_FRAMES_RESTORE_H
#define SAVEPOINT_FRAMES_RESTORE_H

#include "../cpython/py311.h"
#include "stacktable.h"
#include "capture.h"      /* sp_code_refusal, sp_EMPTY, SP_VIA_*: what capture saves */

static const char *
sp_site_words(int kind)
{
    switch (kind) {
    case SP_SITE_CALL: return "a call site";
    case SP_SITE_FOR: return "a for loop's FOR_ITER";
    case SP_SITE_SEND: return "a yield from's SEND";
    case SP_SITE_YIELD: return "a yield";
    default: return "the start of a generator";
    }
}

/* Validate a saved frame against its code: standing at `lasti`, a site of `kind`; a
 * generator's frame if `generator`.  Returns the site or NULL with an exception.
 * Everything sp_build_gen and sp_gen_fill rely on is checked here. */
static inline Py_ALWAYS_INLINE const sp_site *
sp_check_frame(PyObject *func, PyObject *code, int lasti, PyObject *locals, PyObject *stack,
               PyObject *exc, int kind, int generator)
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
        PyErr_Format(PyExc_ValueError, "cannot restore a frame of %U: %s",
                     sp_code_qualname(co), why);
        return NULL;
    }
    if (sp_code_is_generator(co) != (generator != 0)) {
        PyErr_Format(PyExc_ValueError, generator
                     ? "cannot restore a frame of %U: its generator's code is not a "
                       "generator function's"
                     : "cannot restore a frame of %U: a generator frame needs its "
                       "generator object (Frame.gen)", sp_code_qualname(co));
        return NULL;
    }
    sp_table *table = sp_table_get(co);
    if (table == NULL) {
        return NULL;
    }
    const sp_site *site = sp_site_waiting_at(table, lasti, kind);
    if (site == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: offset %d is not %s of its code",
                     sp_code_qualname(co), lasti, sp_site_words(kind));
        return NULL;
    }
    int nlocalsplus = sp_code_nlocalsplus(co);
    if (!PyTuple_CheckExact(locals) || PyTuple_GET_SIZE(locals) != nlocalsplus) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: it needs a tuple of %d local slots",
                     sp_code_qualname(co), nlocalsplus);
        return NULL;
    }
    if (!PyTuple_CheckExact(stack) || PyTuple_GET_SIZE(stack) != site->below ||
            site->below + 1 > sp_code_stacksize(co) || site->below > SP_TRACKED) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: the value stack at offset %d holds %d "
                     "items, not %zd", sp_code_qualname(co), lasti, site->below,
                     PyTuple_CheckExact(stack) ? PyTuple_GET_SIZE(stack) : (Py_ssize_t)-1);
        return NULL;
    }
    for (int i = 0; i < nlocalsplus; i++) {
        PyObject *v = PyTuple_GET_ITEM(locals, i);
        /* Past the prologue, MAKE_CELL and COPY_FREE_VARS have filled every cell and free
         * slot with a cell; LOAD_DEREF would dereference anything else as one. */
        if (sp_code_slot_holds_cell(co, i) && !PyCell_Check(v)) {
            PyErr_Format(PyExc_ValueError,
                         "cannot restore a frame of %U: slot %d (%U) must hold a cell",
                         sp_code_qualname(co), i, sp_code_slot_name(co, i));
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
        else if (sp_kind_at(k, SP_K_ITER, i) ||
                 (site->kind == SP_SITE_FOR && i == site->below - 1)) {
            if (!PyIter_Check(v)) need = "an iterator";
        }
        else if (sp_kind_at(k, SP_K_EXC_OR_NONE, i)) {
            if (v != Py_None && !PyExceptionInstance_Check(v)) need = "an exception or None";
        }
        else if (sp_kind_at(k, SP_K_EXC, i)) {
            if (!PyExceptionInstance_Check(v)) need = "an exception";
        }
        else if (sp_kind_at(k, SP_K_LASTI, i)) {
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
                         "not %.100s", sp_code_qualname(co), i, need, Py_TYPE(v)->tp_name);
            return NULL;
        }
    }
    if (exc != Py_None && !PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_ValueError,
                     "cannot restore a frame of %U: the handled exception must be an "
                     "exception or None", sp_code_qualname(co));
        return NULL;
    }
    return site;
}

/* Whether `gen` can take a saved frame of `code`: a generator (not a coroutine) whose
 * frame was sized for that very code and holds nothing now (finished, or just built).
 * Returns 0, or -1 with ValueError set. */
static int
sp_check_gen(PyObject *gen, PyObject *code)
{
    if (!PyGen_CheckExact(gen)) {
        PyErr_Format(PyExc_ValueError, "a generator frame's generator must be a generator, "
                     "not %.100s", Py_TYPE(gen)->tp_name);
        return -1;
    }
    PyGenObject *g = (PyGenObject *)gen;
    if ((PyObject *)sp_gen_code(g) != code) {
        PyErr_Format(PyExc_ValueError, "the generator %U does not run the code of the "
                     "frame saved for it", sp_gen_qualname(g));
        return -1;
    }
    if (!sp_gen_is_cleared(g)) {
        PyErr_Format(PyExc_ValueError, "the generator %U has run since this snapshot was "
                     "taken (it is %s); resume the snapshot's savepoint record instead",
                     sp_gen_qualname(g),
                     sp_gen_status(g) == SP_GEN_RUNNING ? "running" :
                     sp_gen_status(g) == SP_GEN_FINISHED ? "closed" : "suspended");
        return -1;
    }
    return 0;
}

/* Fill an interpreter frame to run `fn`'s code `co` from unit `lasti` with the given
 * local slots and value stack (EMPTY: C NULL). */
static inline Py_ALWAYS_INLINE void
sp_frame_fill(sp_iframe *frame, PyFunctionObject *fn, PyCodeObject *co, int lasti,
              PyObject *locals, PyObject *stack)
{
    sp_frame_init_in_gen(frame, fn, co, lasti);
    int nlocalsplus = sp_code_nlocalsplus(co);
    PyObject **slots = sp_frame_locals(frame);
    for (int i = 0; i < nlocalsplus; i++) {
        PyObject *v = PyTuple_GET_ITEM(locals, i);
        slots[i] = v == sp_EMPTY ? NULL : Py_NewRef(v);
    }
    int depth = (int)PyTuple_GET_SIZE(stack);
    PyObject **items = sp_frame_stack(frame);
    for (int i = 0; i < depth; i++) {
        PyObject *v = PyTuple_GET_ITEM(stack, i);
        items[i] = v == sp_EMPTY ? NULL : Py_NewRef(v);
    }
    sp_frame_set_stack_depth(frame, depth);
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
    PyGenObject *gen = sp_gen_new(fn, co, exc == Py_None ? NULL : exc);
    if (gen == NULL) {
        return NULL;
    }
    sp_frame_fill(sp_gen_frame(gen), fn, co, lasti, locals, stack);
    sp_gen_mark_suspended(gen);
    PyObject_GC_Track(gen);
    return gen;
}

/* A generator object for `code` (a generator function's), named `name` and `qualname`,
 * finished and holding nothing: safe to drop, to keep, or to fill with sp_gen_fill.
 * Tracked by the GC (gen_dealloc expects that). */
static PyObject *
sp_gen_blank(PyObject *code, PyObject *name, PyObject *qualname)
{
    if (!PyCode_Check(code) || !sp_code_is_generator((PyCodeObject *)code) ||
            sp_code_is_coroutine_like((PyCodeObject *)code)) {
        PyErr_SetString(PyExc_ValueError, "a generator needs a generator function's code");
        return NULL;
    }
    if (!PyUnicode_Check(name) || !PyUnicode_Check(qualname)) {
        PyErr_SetString(PyExc_ValueError, "a generator's name and qualname must be str");
        return NULL;
    }
    PyGenObject *gen = sp_gen_new_named((PyCodeObject *)code, name, qualname, NULL);
    if (gen == NULL) {
        return NULL;
    }
    sp_gen_mark_cleared(gen);
    PyObject_GC_Track(gen);
    return (PyObject *)gen;
}

/* Put a saved frame into `gen` (which passed sp_check_gen for this code; the rest passed
 * sp_check_frame): it stands at `lasti` again, suspended -- or not started yet, for
 * `created` -- with its own code handling `exc`. */
static void
sp_gen_fill(PyObject *gen, PyObject *func, int lasti, PyObject *locals, PyObject *stack,
            PyObject *exc, int created)
{
    PyGenObject *g = (PyGenObject *)gen;
    sp_frame_fill(sp_gen_frame(g), (PyFunctionObject *)func, sp_gen_code(g), lasti, locals,
                  stack);
    sp_gen_set_exc(g, exc == Py_None ? NULL : exc);
    if (created) {
        sp_gen_mark_created(g);
    }
    else {
        sp_gen_mark_suspended(g);
    }
}

/* Undo sp_gen_fill on a frame that never ran and that no frame object refers to: the
 * generator holds nothing again, ready for another fill.  Returns 0, or -1 if a frame
 * object refers to the frame (then only CPython can clear it). */
static int
sp_gen_unfill(PyGenObject *gen)
{
    sp_iframe *frame = sp_gen_frame(gen);
    if (sp_frame_has_object(frame)) {
        return -1;
    }
    PyObject **slots = sp_frame_locals(frame);
    int top = sp_code_nlocalsplus(sp_frame_code(frame)) + sp_frame_stack_depth(frame);
    sp_gen_mark_cleared(gen);
    sp_frame_set_previous(frame, NULL);
    for (int i = 0; i < top; i++) {
        Py_CLEAR(slots[i]);
    }
    sp_gen_set_exc(gen, NULL);
    Py_DECREF(sp_frame_func(frame));
    Py_DECREF(sp_frame_code(frame));
    return 0;
}

/* How a restored chain's frames link: one per frame, innermost last. */
typedef struct {
    PyGenObject *gen;     /* owned until driven: the frame's generator object */
    int real;             /* a generator's own frame (else a restored plain frame) */
    int via;              /* SP_VIA_*: how the frame before this one drives it */
    PyObject *deflt;      /* next()'s default (borrowed from the Frame), or NULL */
    PyObject *outer;      /* for a generator: the exception its driver handles (borrowed),
                             or NULL */
    const sp_site *site;  /* where this frame waits */
} sp_link;

/* Drop a restored frame without running it: no GeneratorExit (which would run user
 * `finally` blocks a second time) and no dangling `previous` pointer.  _PyGen_Finalize
 * skips generators at FRAME_COMPLETED; gen_dealloc then clears the frame.  A generator's
 * own frame is emptied instead when nothing else refers to it, so that the generator is
 * finished, as the original one was when the flow left. */
static void
sp_abandon(PyThreadState *tstate, PyGenObject *gen)
{
    sp_iframe *frame = sp_gen_frame(gen);
    if (sp_current_frame(tstate) == frame) {
        sp_set_current_frame(tstate, sp_frame_previous(frame));
    }
    sp_frame_set_previous(frame, NULL);
    if (!sp_code_is_generator(sp_frame_code(frame)) || sp_gen_unfill(gen) < 0) {
        sp_gen_mark_completed(gen);
    }
    Py_DECREF(gen);
}

/* Restored frames never execute RESUME, where Python/ceval.c (3.11) emits the 'call'
 * event (TRACE_FUNCTION_ENTRY); emit it here, as call_trace() does. */
static int
sp_emit_call_event(PyThreadState *tstate, sp_iframe *frame)
{
    if (!sp_call_hooks_wanted(tstate)) {
        return 0;
    }
    sp_iframe *saved = sp_current_frame(tstate);
    sp_set_current_frame(tstate, frame);
    PyFrameObject *f = PyEval_GetFrame();    /* borrowed; made on demand */
    int err = f == NULL ? -1 : 0;
    if (f != NULL) {
        Py_INCREF(f);
        err = sp_call_hooks(tstate, f);
        Py_DECREF(f);
    }
    sp_set_current_frame(tstate, saved);
    return err;
}

/* What running one frame of the chain came to. */
enum { SP_OUT_RETURN, SP_OUT_YIELD, SP_OUT_RAISE };

/* Run a restored plain frame with `input` (stolen) as its pending call's result, or with
 * the error set when `input` is NULL: Objects/genobject.c gen_send_ex2 (3.11) without the
 * generator-only parts (no PEP 479 rewrite of StopIteration, no StopIteration wrapping
 * of returns). */
static int
sp_run_plain(PyThreadState *tstate, PyGenObject *gen, PyObject *input, PyObject **result)
{
    sp_iframe *frame = sp_gen_frame(gen);
    int exc = input == NULL;
    sp_frame_push(frame, exc ? Py_NewRef(Py_None) : input);
    sp_gen_push_exc_state(tstate, gen);
    sp_gen_mark_executing(gen);
    *result = sp_eval_frame(tstate)(tstate, frame, exc);
    if (sp_gen_is_executing(gen)) {
        sp_gen_mark_completed(gen);
    }
    sp_gen_pop_exc_state(tstate, gen);
    sp_frame_set_previous(frame, NULL);
    return *result != NULL ? SP_OUT_RETURN : SP_OUT_RAISE;
}

/* Resume a generator's own frame through the generator protocol -- send `input`
 * (stolen), or throw the error set when `input` is NULL -- as its driver would: CPython
 * then does the rest (exception state, PEP 479, clearing a finished frame).  `outer` is
 * the exception its driver handles: what its code sees when it handles none itself. */
static int
sp_run_generator(PyThreadState *tstate, PyGenObject *gen, PyObject *input, PyObject *outer,
                 PyObject **result)
{
    sp_exc_item item;
    if (outer != NULL) {
        sp_exc_item_push(tstate, &item, outer);
    }
    int out;
    if (input != NULL) {
        PySendResult sent = PyIter_Send((PyObject *)gen, input, result);
        Py_DECREF(input);
        out = sent == PYGEN_NEXT ? SP_OUT_YIELD : sent == PYGEN_RETURN ? SP_OUT_RETURN
                                                                     : SP_OUT_RAISE;
    }
    else {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        *result = PyObject_CallFunctionObjArgs(sp_gen_throw, (PyObject *)gen, value, NULL);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        out = SP_OUT_YIELD;
        if (*result == NULL) {
            /* a generator that returns ends throw() with StopIteration (PEP 479 turns its
             * own StopIteration into RuntimeError) */
            out = SP_OUT_RAISE;
            if (sp_gen_status(gen) == SP_GEN_FINISHED &&
                    PyErr_ExceptionMatches(PyExc_StopIteration) &&
                    _PyGen_FetchStopIterationValue(result) == 0) {
                out = SP_OUT_RETURN;
            }
        }
    }
    if (outer != NULL) {
        sp_exc_item_pop(tstate, &item);
    }
    return out;
}

/* Hand the outcome of a generator (`out`, `result` stolen or the error set) to the frame
 * that drives it (`driver`, waiting at its site), as the C code of `via` does with it:
 * returns what the driver's pending instruction receives -- a new reference, or NULL
 * with an error to raise there.  FOR_ITER and SEND go on elsewhere when the generator
 * returns: the driver's frame is moved there first. */
static PyObject *
sp_deliver(sp_link *driver, int via, PyObject *deflt, int out, PyObject *result)
{
    sp_iframe *frame = sp_gen_frame(driver->gen);
    switch (via) {
    case SP_VIA_FOR:
        if (out == SP_OUT_RETURN) {
            /* FOR_ITER runs again on the finished generator, which ends the loop there
             * (its tp_iternext returns NULL without an error) */
            Py_DECREF(result);
            PyObject *iterator = sp_frame_pop(frame);
            sp_frame_set_lasti(frame, driver->site->start - 1);
            return iterator;
        }
        return result;
    case SP_VIA_YIELD_FROM:
        if (out == SP_OUT_RETURN) {
            /* Python/ceval.c TARGET(SEND): the receiver's place takes the return value,
             * and the loop of the yield from is left */
            Py_DECREF(sp_frame_pop(frame));
            sp_frame_set_lasti(frame, driver->site->target - 1);
        }
        return result;
    case SP_VIA_NEXT:
        if (out == SP_OUT_RETURN) {
            if (deflt != NULL) {                /* next(g, default) */
                Py_DECREF(result);
                return Py_NewRef(deflt);
            }
            sp_set_stop_iteration(result);
            Py_DECREF(result);
            return NULL;
        }
        if (out == SP_OUT_RAISE && deflt != NULL &&
                PyErr_ExceptionMatches(PyExc_StopIteration)) {
            PyErr_Clear();                      /* Python/bltinmodule.c builtin_next */
            return Py_NewRef(deflt);
        }
        return result;
    case SP_VIA_CLOSE:
        if (out == SP_OUT_YIELD) {
            Py_DECREF(result);
            PyErr_SetString(PyExc_RuntimeError, SP_GEN_IGNORED_EXIT);
            return NULL;
        }
        if (out == SP_OUT_RETURN) {
            Py_DECREF(result);
            return Py_NewRef(Py_None);
        }
        if (PyErr_ExceptionMatches(PyExc_StopIteration) ||
                PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
            PyErr_Clear();                      /* Objects/genobject.c gen_close */
            return Py_NewRef(Py_None);
        }
        return NULL;
    default:                                    /* SP_VIA_CALL: a plain call returned */
        return result;
    }
}

/* Run a restored chain: links[0] is the root, links[n-1] the innermost frame, which
 * receives `value` as its pending call's result (or, with `throwing`, has the exception
 * `value` raised at that call).  Each frame's outcome goes to the frame that drives it
 * (sp_deliver).  Steals the references to the generators in links.  An exception of
 * class `unwind` leaving a frame abandons the pending ones and propagates.  Returns
 * what the root returns, or NULL with its exception set. */
static PyObject *
sp_drive_chain(PyThreadState *tstate, sp_link *links, Py_ssize_t n, PyObject *value,
               int throwing, PyObject *unwind)
{
    sp_iframe *base = sp_current_frame(tstate);
    /* Link the logical chain so that f_back, tracebacks and the next capture see it. */
    for (Py_ssize_t k = 0; k < n; k++) {
        sp_frame_set_previous(sp_gen_frame(links[k].gen),
                              k ? sp_gen_frame(links[k - 1].gen) : base);
    }
    PyObject *input = NULL;
    if (throwing) {
        PyErr_Restore(Py_NewRef(Py_TYPE(value)), Py_NewRef(value),
                      PyException_GetTraceback(value));
    }
    else {
        input = Py_NewRef(value);
    }
    PyObject *result = NULL;
    for (Py_ssize_t k = n - 1; k >= 0; k--) {
        sp_link *link = &links[k];
        PyGenObject *gen = link->gen;
        link->gen = NULL;
        sp_iframe *frame = sp_gen_frame(gen);
        if (input != NULL && sp_emit_call_event(tstate, frame) < 0) {
            Py_CLEAR(input);
        }
        sp_set_current_frame(tstate, sp_frame_previous(frame));
        int out = link->real ? sp_run_generator(tstate, gen, input, link->outer, &result)
                             : sp_run_plain(tstate, gen, input, &result);
        input = NULL;
        Py_DECREF(gen);    /* a restored plain frame: gen_dealloc clears it */
        if (out == SP_OUT_RAISE && unwind != NULL && PyErr_ExceptionMatches(unwind)) {
            sp_set_current_frame(tstate, base);
            for (Py_ssize_t j = k - 1; j >= 0; j--) {
                sp_abandon(tstate, links[j].gen);
                links[j].gen = NULL;
            }
            break;
        }
        if (k == 0) {
            break;          /* the root: a plain frame, which returns or raises */
        }
        input = sp_deliver(&links[k - 1], link->via, link->deflt, out, result);
        result = NULL;
    }
    sp_set_current_frame(tstate, base);
    return result;
}

#endif /* SAVEPOINT_FRAMES_RESTORE_H */
