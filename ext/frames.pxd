# Declarations of the C frame core (frames.h) for Cython.
from cpython.object cimport PyObject

cdef extern from "frames.h":
    ctypedef struct _PyInterpreterFrame:
        pass
    ctypedef struct sp_tstate "PyThreadState":
        pass
    ctypedef struct PyCodeObject:
        int co_nlocalsplus
        int co_stacksize
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
        _PyInterpreterFrame *frame
        const sp_site *site

    PyObject *sp_SavepointError
    PyObject *sp_EMPTY
    Py_ssize_t sp_extra_index
    void sp_table_free(void *)
    Py_ssize_t _PyEval_RequestCodeExtraIndex(void (*)(void *))

    sp_tstate *PyThreadState_Get()
    _PyInterpreterFrame *sp_current_frame(sp_tstate *)
    PyObject **_PyFrame_GetLocalsArray(_PyInterpreterFrame *)
    PyObject **_PyFrame_Stackbase(_PyInterpreterFrame *)
    PyCodeObject *sp_frame_code "SP_FRAME_CODE"(_PyInterpreterFrame *)
    PyObject *sp_frame_func "SP_FRAME_FUNC"(_PyInterpreterFrame *)

    sp_table *sp_table_get(PyCodeObject *) except NULL
    Py_ssize_t sp_walk(sp_tstate *, _PyInterpreterFrame *, PyObject *, sp_walk_item **,
                       Py_ssize_t *) except -1
    object sp_slots_tuple(PyObject **, int)
    PyObject *sp_exc_outside(_PyInterpreterFrame *, const sp_site *, PyObject *)
    const sp_site *sp_check_frame(PyObject *, PyObject *, int, PyObject *, PyObject *,
                                  PyObject *) except NULL
    PyGenObject *sp_build_gen(PyObject *, PyObject *, int, PyObject *, PyObject *,
                              PyObject *) except NULL
    void sp_abandon(sp_tstate *, PyGenObject *)
    object sp_drive_chain(sp_tstate *, PyGenObject **, Py_ssize_t, PyObject *, int, PyObject *)
    PyObject *PyErr_GetHandledException()
    PyObject *sp_refuse_current(sp_tstate *, const char *) except NULL
    int PyCode_Addr2Line(PyCodeObject *, int)
    object sp_strip_handlers(sp_tstate *, _PyInterpreterFrame *, object)
