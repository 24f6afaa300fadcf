# cython: language_level=3, boundscheck=False, wraparound=False
"""The store's commit of a savepoint, for the common case, in Cython.

engine.store.Store.commit_savepoint runs at every Flow-API call.  In the common case --
its code already pinned, no chunks, no name, no older savepoint to drop, the due time
unchanged -- a savepoint is one LMDB put, and the Python around that put cost more than
the put itself (benchmarks/bench_store.py).  This is that path, compiled; everything
else stays in engine/store.py.  It seals the savepoint and updates the execution with
the same _codec.seal_savepoint / apply_state as that slow path, called at C level.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from engine._codec cimport Signer, apply_state, seal_savepoint

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


def try_commit(env, db, dict known, dict execution, dict meta, bytes record, codes, chunks,
               str retention, Signer signer):
    """Commit the savepoint as one put and return its seq; or return None, having done
    nothing, when the slow path (engine.store) is needed."""
    cdef str exec_id = execution["id"]
    if chunks or meta.get("name") is not None:
        return None
    if meta.get("kind") == "implicit" and retention == "last" and \
            execution.get("last_implicit"):
        return None
    due = execution.get("due")
    if "_due_written" not in execution or execution["_due_written"] != due:
        return None
    ids = known.get(exec_id)
    if ids is None:
        return None
    for code in codes:
        if id(code) not in ids:
            return None
    sealed, seq, state = seal_savepoint(execution, meta, record, [], _version_after(execution),
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
    txn = env.begin(write=True)
    try:
        txn.put(key, sealed, db=db)
    except BaseException:
        txn.abort()
        raise
    txn.commit()
    apply_state(execution, state)
    return seq
