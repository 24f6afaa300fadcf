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
        int kind
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
        PyGenObject *gen
        int via
        PyObject *deflt
        PyObject *exc
    ctypedef struct sp_link:
        PyGenObject *gen
        int real
        int via
        PyObject *deflt
        PyObject *outer
        const sp_site *site
    enum:
        SP_SITE_CALL
        SP_SITE_FOR
        SP_SITE_SEND
        SP_SITE_YIELD
        SP_SITE_START
        SP_VIA_CALL
        SP_VIA_FOR
        SP_VIA_YIELD_FROM
        SP_VIA_NEXT
        SP_VIA_CLOSE
        SP_GEN_CREATED
        SP_GEN_SUSPENDED
        SP_GEN_RUNNING
        SP_GEN_FINISHED

    PyObject *sp_SavepointError
    PyObject *sp_EMPTY
    PyObject *sp_builtin_next
    PyObject *sp_gen_send
    PyObject *sp_gen_throw
    PyObject *sp_gen_close
    PyObject *sp_gen_next
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
    Py_ssize_t sp_walk(sp_tstate *, sp_iframe *, PyObject *, PyObject *, sp_walk_item **,
                       Py_ssize_t *) except -1
    object sp_slots_tuple(PyObject **, int)
    const sp_site *sp_check_frame(PyObject *, PyObject *, int, PyObject *, PyObject *,
                                  PyObject *, int, int) except NULL
    int sp_check_gen(PyObject *, PyObject *) except -1
    PyGenObject *sp_build_gen(PyObject *, PyObject *, int, PyObject *, PyObject *,
                              PyObject *) except NULL
    object sp_gen_blank(PyObject *, PyObject *, PyObject *)
    void sp_gen_fill(PyObject *, PyObject *, int, PyObject *, PyObject *, PyObject *, int)
    void sp_abandon(sp_tstate *, PyGenObject *)
    object sp_drive_chain(sp_tstate *, sp_link *, Py_ssize_t, PyObject *, int, PyObject *)
    int sp_gen_status(PyGenObject *)
    void sp_gen_mark_completed(PyGenObject *)
    PyObject *sp_gen_exc(PyGenObject *)
    PyObject *sp_gen_name(PyGenObject *)
    PyObject *sp_gen_qualname(PyGenObject *)
    PyCodeObject *sp_gen_code(PyGenObject *)
    sp_iframe *sp_gen_frame(PyGenObject *)
    int sp_frame_lasti(sp_iframe *)
    int sp_frame_stack_depth(sp_iframe *)
    int sp_frame_is_executing(sp_iframe *)
    bint sp_code_is_generator(PyCodeObject *)
    const sp_site *sp_site_waiting_at(const sp_table *, int, int)
    void sp_install_gen_finalizer()
    void sp_quiet_enter()
    void sp_quiet_exit()
    PyObject *PyErr_GetHandledException()
    PyObject *sp_refuse_current(sp_tstate *, const char *) except NULL
    int PyCode_Addr2Line(PyCodeObject *, int)
    object sp_strip_handlers(sp_tstate *, sp_iframe *, object)
