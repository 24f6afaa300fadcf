# Declarations of the C frame core (frames/frames.h) for Cython, and the names it takes
# from cpython/py311.h.
from cpython.object cimport PyObject

cdef extern from "frames/frames.h":
    ctypedef struct sp_iframe:
        pass
    ctypedef struct sp_tstate "PyThreadState":
        pass
    ctypedef struct PyCodeObject:
        pass
    ctypedef struct PyGenObject:
        pass
    ctypedef struct sp_site:
        int call
        int resume
        int below
        int ex
    ctypedef struct sp_table:
        int nunits
        int nsites
        sp_site *sites
        const char *error
    ctypedef struct sp_walk_item:
        sp_iframe *frame
        const sp_site *site

    PyObject *sp_SavepointError
    PyObject *sp_EMPTY
    Py_ssize_t sp_extra_index
    void sp_table_free(void *)
    Py_ssize_t sp_request_code_extra_index(void (*)(void *))
    int SP_CODEUNIT_BYTES

    sp_tstate *PyThreadState_Get()
    sp_iframe *sp_current_frame(sp_tstate *)
    PyObject **sp_frame_locals(sp_iframe *)
    PyObject **sp_frame_stack(sp_iframe *)
    PyCodeObject *sp_frame_code(sp_iframe *)
    PyObject *sp_frame_func(sp_iframe *)
    int sp_code_nlocalsplus(PyCodeObject *)

    sp_table *sp_table_get(PyCodeObject *) except NULL
    Py_ssize_t sp_walk(sp_tstate *, sp_iframe *, PyObject *, sp_walk_item **,
                       Py_ssize_t *) except -1
    object sp_slots_tuple(PyObject **, int)
    PyObject *sp_exc_outside(sp_iframe *, const sp_site *, PyObject *)
    const sp_site *sp_check_frame(PyObject *, PyObject *, int, PyObject *, PyObject *,
                                  PyObject *) except NULL
    PyGenObject *sp_build_gen(PyObject *, PyObject *, int, PyObject *, PyObject *,
                              PyObject *) except NULL
    void sp_abandon(sp_tstate *, PyGenObject *)
    object sp_drive_chain(sp_tstate *, PyGenObject **, Py_ssize_t, PyObject *, int, PyObject *)
    PyObject *PyErr_GetHandledException()
    PyObject *sp_refuse_current(sp_tstate *, const char *) except NULL
    int PyCode_Addr2Line(PyCodeObject *, int)
    object sp_strip_handlers(sp_tstate *, sp_iframe *, object)
