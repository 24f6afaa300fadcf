# cython: language_level=3, boundscheck=False, wraparound=False
"""The LMDB store's savepoint commit, in Cython: the savepoint layout, the common case,
and the transactions of many threads.

engine.store.lmdb.LmdbStore.commit_savepoint runs at every Flow-API call.  In the common
case -- its code already pinned, no chunks, no name, no older savepoint to drop, the due
time and the status unchanged -- a savepoint is one LMDB put, and the Python around that
put cost more than the put itself (benchmarks/bench_store.py).  try_commit is that path, compiled;
everything else stays in engine/store/lmdb.py.  Both seal the savepoint and update the
execution with one SavepointLayout, built from engine/store/records.py's field orders.

Every transaction of the store passes a Gate (ext/commit/gate.pxi: the map is resized
only while none is open), and every write goes through a Writer (ext/commit/writer.pxi:
writes that threads make at the same time share one transaction and one commit).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_New
from cpython.object cimport PyObject
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock,
                               PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_get_thread_ident, PyThread_release_lock,
                               PyThread_type_lock)
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from engine._codec cimport Signer

from lmdb import MapFullError, MapResizedError

from engine._codec import seal

include "commit/gate.pxi"
include "commit/writer.pxi"

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int, timespec *)
    int CLOCK_REALTIME



cdef int64_t _now_ns():
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int64_t _version_after(dict execution) except? -1:
    cdef int64_t last = execution.get("version", 0) or 0
    cdef int64_t now = _now_ns()
    return now if now > last else last + 1


def version_after(dict execution):
    """A version stamp for the execution's next state: nanoseconds since the epoch,
    never below its last stamp + 1."""
    return _version_after(execution)


cdef extern from "Python.h":
    # borrowed references, without the refcounting Cython would add around each item
    PyObject *_dict_get "PyDict_GetItemWithError"(PyObject *d, PyObject *key) except? NULL
    PyObject *_tuple_item "PyTuple_GET_ITEM"(PyObject *t, Py_ssize_t i)
    void _incref "Py_INCREF"(PyObject *o)
    void _list_set "PyList_SET_ITEM"(PyObject *l, Py_ssize_t i, PyObject *o)


cdef list _gather(dict source, tuple names):
    """[source.get(name) for name in names], where a None name leaves its item empty
    (NULL) for _put.  This runs twice at every Flow-API call: one allocation, no
    growing, no refcounting of the names."""
    cdef Py_ssize_t i, n = len(names)
    cdef list out = PyList_New(n)
    cdef PyObject *name
    cdef PyObject *value
    for i in range(n):
        name = _tuple_item(<PyObject *>names, i)
        if name != <PyObject *>None:
            value = _dict_get(<PyObject *>source, name)
            if value == NULL:
                value = <PyObject *>None
            _incref(value)
            _list_set(<PyObject *>out, i, value)
    return out


cdef inline void _put(list items, Py_ssize_t i, object value):
    """Fill an item _gather left empty."""
    _incref(<PyObject *>value)
    _list_set(<PyObject *>items, i, <PyObject *>value)


cdef tuple _copied(tuple fields, tuple own):
    """``fields`` with the names in ``own`` (the commit's own fields) as None."""
    return tuple(None if name in own else name for name in fields)


@cython.final
cdef class SavepointLayout:
    """A savepoint as the store keeps it: [meta, record, state], meta and state as lists
    in the orders given (engine.store.records.META_FIELDS / STATE_FIELDS).  The fields the
    commit sets itself are found by name; every other one is copied from the meta dict or
    the execution."""
    cdef readonly tuple meta_fields, state_fields
    cdef tuple meta_copied, state_copied
    cdef Py_ssize_t m_seq, m_size, m_chunks
    cdef Py_ssize_t s_version, s_last_seq, s_last_implicit, s_last_implicit_chunks

    def __init__(self, tuple meta_fields not None, tuple state_fields not None):
        self.meta_fields, self.state_fields = meta_fields, state_fields
        self.m_seq = meta_fields.index("seq")
        self.m_size = meta_fields.index("size")
        self.m_chunks = meta_fields.index("chunks")
        self.s_version = state_fields.index("version")
        self.s_last_seq = state_fields.index("last_seq")
        self.s_last_implicit = state_fields.index("last_implicit")
        self.s_last_implicit_chunks = state_fields.index("last_implicit_chunks")
        self.meta_copied = _copied(meta_fields, ("seq", "size", "chunks"))
        self.state_copied = _copied(state_fields, ("version", "last_seq", "last_implicit",
                                                   "last_implicit_chunks"))

    cpdef tuple seal(self, dict execution, dict meta, bytes record, list chunks,
                     int64_t version, Signer signer):
        """Seal [meta, record, state] for the savepoint after the execution's last one.
        Returns (sealed bytes, seq, state list)."""
        seq = execution.get("last_seq", 0) + 1
        cdef list state = _gather(execution, self.state_copied)
        cdef list fields = _gather(meta, self.meta_copied)
        _put(state, self.s_version, version)
        _put(state, self.s_last_seq, seq)
        if meta.get("kind") == "implicit":
            _put(state, self.s_last_implicit, seq)
            _put(state, self.s_last_implicit_chunks, chunks)
        else:
            _put(state, self.s_last_implicit, execution.get("last_implicit"))
            _put(state, self.s_last_implicit_chunks, execution.get("last_implicit_chunks"))
        _put(fields, self.m_seq, seq)
        _put(fields, self.m_size, len(record))
        _put(fields, self.m_chunks, chunks)
        return seal([fields, record, state], signer), seq, state

    cpdef apply(self, dict execution, list state):
        """Write a savepoint's state into the execution dict.  A savepoint of a store
        from before a field was added carries fewer: the others stay as they are."""
        cdef Py_ssize_t i
        for i in range(min(len(self.state_fields), len(state))):
            execution[self.state_fields[i]] = state[i]


def try_commit(SavepointLayout layout not None, Writer writer not None, db, dict known,
               dict execution, dict meta, bytes record, codes, chunks, str retention,
               Signer signer):
    """Commit the savepoint as one put (through ``writer``: with what other threads
    write meanwhile) and return its seq; or return None, having done nothing, when the
    slow path (engine.store.lmdb) is needed."""
    cdef str exec_id = execution["id"]
    if chunks or meta.get("name") is not None:
        return None
    if meta.get("kind") == "implicit" and retention == "last" and \
            execution.get("last_implicit"):
        return None
    due = execution.get("due")
    if "_due_written" not in execution or execution["_due_written"] != due:
        return None
    # a new status changes the listing indexes (engine.store.lmdblisting): slow path
    if execution.get("_status_written") != execution.get("status"):
        return None
    ids = known.get(exec_id)
    if ids is None:
        return None
    for code in codes:
        if id(code) not in ids:
            return None
    sealed, seq, state = layout.seal(execution, meta, record, [], _version_after(execution),
                                     signer)
    prefix = exec_id.encode()
    cdef Py_ssize_t n = len(prefix)
    key = PyBytes_FromStringAndSize(NULL, n + 9)
    cdef char *k = PyBytes_AS_STRING(key)
    memcpy(k, PyBytes_AS_STRING(prefix), n)
    k[n] = 0
    cdef int i
    cdef uint64_t useq = seq
    for i in range(8):
        k[n + 1 + i] = <char>(<unsigned char>((useq >> (8 * (7 - i))) & 0xFF))
    writer.submit(None, db, key, sealed)
    layout.apply(execution, state)
    return seq
