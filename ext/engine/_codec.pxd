# The codec's savepoint layout, for the store's per-call commit (engine._commit), which
# calls these at C level on its hot path instead of repeating them.
from libc.stdint cimport int64_t, uint64_t


cdef class Signer:
    cdef uint64_t k0, k1
    cdef void _tag(self, const unsigned char *p, Py_ssize_t n, char *out)
    cdef bint _verify(self, const unsigned char *p, Py_ssize_t n)


cpdef tuple seal_savepoint(dict execution, dict meta, bytes record, list chunks,
                           int64_t version, Signer signer)
cpdef apply_state(dict execution, list state)
