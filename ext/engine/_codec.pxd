# The codec's savepoint layout, for the store's per-call commit (engine._commit), which
# calls these at C level on its hot path instead of repeating them.
from libc.stdint cimport int64_t


cpdef tuple seal_savepoint(dict execution, dict meta, bytes record, list chunks,
                           int64_t version)
cpdef apply_state(dict execution, list state)
