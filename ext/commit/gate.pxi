# The gate every LMDB transaction of this process passes, so that the map can be resized.
#
# mdb_env_set_mapsize may only run while no transaction of this process is open, and
# py-lmdb's set_mapsize (lmdb/cpython.c, env_reader_set_mapsize, issue #475) does not wait
# for them: it refuses while any thread holds the write transaction ("Cannot set_mapsize
# while a write transaction is active"), marks every open transaction of the environment
# invalid (a reader on another thread then fails with lmdb.Error mid-read), and makes an
# operation that starts meanwhile fail with EINVAL.  So every transaction enters the gate
# shared and a resize enters it alone: it closes the gate, waits for the transactions
# inside to leave, resizes, and opens it again.
#
# The counters change only under the GIL in statements that call no Python code (CPython
# 3.11: a thread gives the GIL up only between bytecodes or when C code lets it go), so
# entering and leaving cost a compare and an add; only a resize and whoever meets it
# sleep, on PyThread locks, with the GIL released.


@cython.final
cdef class Gate:
    """Transactions enter shared (enter/leave, or read); a resize runs alone
    (exclusive).  A thread inside must not ask for exclusive: it would wait for itself."""
    cdef Py_ssize_t inside            # transactions open now
    cdef bint closed                  # a resize waits for them or runs: no one enters
    cdef bint draining                # the resize sleeps on `drained` until inside is 0
    cdef PyThread_type_lock resizing  # held by a resize from closing to opening
    cdef PyThread_type_lock drained   # released by the last transaction out while draining

    def __cinit__(self):
        self.resizing = PyThread_allocate_lock()
        self.drained = PyThread_allocate_lock()
        if self.resizing == NULL or self.drained == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.resizing != NULL:
            PyThread_free_lock(self.resizing)
        if self.drained != NULL:
            PyThread_free_lock(self.drained)

    cdef inline int enter(self) except -1:
        while self.closed:
            with nogil:                   # until the resize opens the gate again
                PyThread_acquire_lock(self.resizing, WAIT_LOCK)
            PyThread_release_lock(self.resizing)
        self.inside += 1
        return 0

    cdef inline void leave(self) noexcept:
        self.inside -= 1
        if self.inside == 0 and self.draining:
            self.draining = False
            PyThread_release_lock(self.drained)

    def read(self, env, work):
        """work(txn) in a read transaction of ``env``, inside the gate."""
        self.enter()
        try:
            txn = env.begin()
            try:
                return work(txn)
            finally:
                txn.abort()
        finally:
            self.leave()

    def get(self, env, db, bytes key):
        """The value of ``key`` in ``db`` (a copy), or None: one read transaction."""
        self.enter()
        try:
            txn = env.begin()
            try:
                return txn.get(key, None, db)     # positional: no keyword dict per call
            finally:
                txn.abort()
        finally:
            self.leave()

    def exclusive(self, work, *args):
        """work(*args) while no transaction of this process is open (one at a time)."""
        with nogil:
            PyThread_acquire_lock(self.resizing, WAIT_LOCK)
        self.closed = True
        if self.inside:
            PyThread_acquire_lock(self.drained, NOWAIT_LOCK)   # free: only we take it
            self.draining = True
            with nogil:                   # the last transaction out releases it
                PyThread_acquire_lock(self.drained, WAIT_LOCK)
            PyThread_release_lock(self.drained)
        try:
            return work(*args)
        finally:
            self.closed = False
            PyThread_release_lock(self.resizing)

    @property
    def transactions(self):
        """How many transactions are open now (for tests)."""
        return self.inside
