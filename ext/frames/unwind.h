/* unwind.h -- leaving a flow without running its handlers.
 *
 * To unload an idle execution, or to jump back to a savepoint, the runtime raises Unwind
 * through the flow's frames.  Those frames must not run `finally`, `except` or `with`
 * cleanup on the way out: the execution is not ending, it will go on from a savepoint.
 * The eval loop looks up handlers in the exception table of the code a frame runs, so
 * each frame between the current one and the boundary is switched to a copy of its code
 * with an empty exception table (sp_frame_replace_code, py311.h): the exception then
 * passes through, popping each frame's stack.  The original code objects are returned:
 * the eval loop of the innermost frame still reads its bytecode, so the caller keeps
 * them until the unwinding is over.
 */
#ifndef SAVEPOINT_FRAMES_UNWIND_H
#define SAVEPOINT_FRAMES_UNWIND_H

#include "../cpython/py311.h"

/* Generators the leaving flow drops -- suspended ones held in its locals -- must not run
 * their `finally` blocks either: a restored flow runs them later, once.  CPython runs them
 * from PyGen_Type's finalizer (close() when a suspended generator is dropped), so the
 * frame core wraps that finalizer: while a thread is leaving a flow (sp_quiet > 0 on it),
 * a dropped generator is cleared without running any of its code, as gen_dealloc does
 * with a finished one.  Also used while decoding, so that generators built from a record
 * that turns out damaged are dropped the same way. */
static _Thread_local int sp_quiet = 0;
static destructor sp_gen_finalize_default = NULL;

static void
sp_gen_finalize(PyObject *self)
{
    /* a finished generator has nothing to run (the default returns at once too): most
     * are, and the thread-local read is the costlier test */
    if (sp_gen_status((PyGenObject *)self) == SP_GEN_FINISHED || sp_quiet > 0) {
        return;
    }
    sp_gen_finalize_default(self);
}

static void
sp_install_gen_finalizer(void)
{
    if (sp_gen_finalize_default == NULL) {
        sp_gen_finalize_default = sp_gen_finalizer();
        sp_gen_set_finalizer(sp_gen_finalize);
    }
}

static inline void
sp_quiet_enter(void)
{
    sp_quiet++;
}

static inline void
sp_quiet_exit(void)
{
    sp_quiet--;
}

static PyObject *
sp_strip_handlers(PyThreadState *tstate, sp_iframe *boundary, PyObject *copies)
{
    PyObject *originals = PyList_New(0);
    if (originals == NULL) {
        return NULL;
    }
    for (sp_iframe *f = sp_current_frame(tstate); f != NULL && f != boundary;
         f = sp_frame_previous(f)) {
        PyCodeObject *co = sp_frame_code(f);
        if (!sp_code_has_handlers(co)) {
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
        Py_DECREF(sp_frame_replace_code(f, copy));   /* the list keeps the original alive */
    }
    return originals;
error:
    Py_DECREF(originals);
    return NULL;
}

#endif /* SAVEPOINT_FRAMES_UNWIND_H */
