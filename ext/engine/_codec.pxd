# The codec's signer, for the store's per-call commit (engine._commit), which seals at C
# level on its hot path.
from libc.stdint cimport uint64_t


cdef class Signer:
    cdef uint64_t k0, k1
    cdef void _tag(self, const unsigned char *p, Py_ssize_t n, char *out)
    cdef bint _verify(self, const unsigned char *p, Py_ssize_t n)
