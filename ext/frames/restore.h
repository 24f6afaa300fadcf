/* restore.h -- generator-backed restore: each saved frame becomes a generator object
 * whose embedded frame runs the plain function's code from the saved position; a
 * trampoline resumes them innermost first, sending each return value into its parent.
 *
 * Inputs that reach sp_build_gen are validated by sp_check_frame first: a wrong offset or
 * stack depth is a segfault, not an exception, so nothing is trusted.
 */
#ifndef SAVEPOINT_FRAMES_RESTORE_H
#define SAVEPOINT_FRAMES_RESTORE_H

#include "../cpython/py311.h"
#include "stacktable.h"
#include "capture.h"      /* sp_code_refusal, sp_EMPTY: what cannot be saved is not restored */

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
        PyErr_Format(PyExc_ValueError, "cannot restore a frame of %U: %s",
                     sp_code_qualname(co), why);
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
                     sp_code_qualname(co), lasti);
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
    sp_iframe *frame = sp_gen_frame(gen);
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
    sp_gen_mark_suspended(gen);
    PyObject_GC_Track(gen);
    return gen;
}

/* Drop a restored frame without running it: no GeneratorExit (which would run user
 * `finally` blocks a second time) and no dangling `previous` pointer.  _PyGen_Finalize
 * skips generators at FRAME_COMPLETED; gen_dealloc then clears the frame. */
static void
sp_abandon(PyThreadState *tstate, PyGenObject *gen)
{
    sp_iframe *frame = sp_gen_frame(gen);
    if (sp_current_frame(tstate) == frame) {
        sp_set_current_frame(tstate, sp_frame_previous(frame));
    }
    sp_frame_set_previous(frame, NULL);
    sp_gen_mark_completed(gen);
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
    sp_iframe *base = sp_current_frame(tstate);
    /* Link the logical chain so that f_back, tracebacks and the next capture see it. */
    for (Py_ssize_t k = 0; k < n; k++) {
        sp_frame_set_previous(sp_gen_frame(gens[k]), k ? sp_gen_frame(gens[k - 1]) : base);
    }
    sp_eval_frame_func eval = sp_eval_frame(tstate);
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
        sp_iframe *frame = sp_gen_frame(gen);
        sp_iframe *parent = sp_frame_previous(frame);
        int exc = result == NULL;
        if (!exc && sp_emit_call_event(tstate, frame) < 0) {
            Py_CLEAR(result);
            exc = 1;
        }
        /* Objects/genobject.c gen_send_ex2 (3.11), without the generator-only parts:
         * no PEP 479 rewrite of StopIteration, no StopIteration wrapping of returns. */
        sp_set_current_frame(tstate, parent);
        sp_frame_push(frame, exc ? Py_NewRef(Py_None) : result);
        result = NULL;
        sp_gen_push_exc_state(tstate, gen);
        sp_gen_mark_executing(gen);
        result = eval(tstate, frame, exc);
        if (sp_gen_is_executing(gen)) {
            sp_gen_mark_completed(gen);
        }
        sp_gen_pop_exc_state(tstate, gen);
        sp_frame_set_previous(frame, NULL);
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

#endif /* SAVEPOINT_FRAMES_RESTORE_H */
