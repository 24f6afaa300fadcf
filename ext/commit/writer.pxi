# Group commit: the writes that threads of this process make at the same time go into one
# LMDB write transaction and one commit -- with durability "sync", one pair of fsyncs for
# all of them.  Each caller returns when its own write is committed.
#
# The first writer to find no group being written leads: it opens the write transaction
# (inside the Gate), takes every write that waits by then, runs them in order, commits,
# and wakes their callers.  A writer that finds a leader waits (on a PyThread lock, GIL
# released); when the leader is done, the first waiting writer leads the next group.  A
# lone writer only checks a flag on its way: it pays what a plain transaction does.
#
# Failures stay with their writer: when a group fails (a write raises, or the commit
# does), it is rolled back and its writes are run one transaction each, so each caller
# gets its own result or error.  A full map is grown and the group run again, as is one
# that another process grew (MapResizedError).  An exception that is the leader's own
# and no write's (KeyboardInterrupt, an exception another thread raised in it) rolls the
# group back, leaves the others' writes to the next leader, and is raised in the leader.
#
# busy, leader and waiting change only under the GIL in statements that call no Python
# code (see Gate): taking and handing over the lead is a few compares and list operations.


# The writers of a committed group are woken this many at a time, each of them waking
# the one this many places behind it once it runs: a whole group woken at once fights for
# the GIL (each lost round a context switch, ~25 us on a small VM), one at a time makes
# their wake-ups wait for each other.
cdef enum:
    WAKE_AT_ONCE = 2


@cython.freelist(16)
@cython.final
cdef class _Write:
    """One write: ``work(txn)`` (its result is the write's), or with work None one put."""
    cdef object work, db, key, value
    cdef object result, error
    cdef unsigned long thread
    cdef bint lead                    # woken to lead the next group (no result yet)
    cdef _Write then                  # the writer it wakes once it runs (WAKE_AT_ONCE)
    cdef PyThread_type_lock woken     # held until a leader wakes the writer

    def __dealloc__(self):
        if self.woken != NULL:
            PyThread_free_lock(self.woken)


@cython.final
cdef class Writer:
    """The write side of one LMDB environment in this process (every store on it shares
    it).  ``grow()``: a full map, grow it; ``follow()``: another process grew the map,
    follow it (both run with the gate closed: no transaction of this process is open);
    ``failed(error)``: the exception to raise for an error a write met (StoreFull for a
    full disk), or None to raise the error itself."""
    cdef object env, grow, follow, failed
    cdef Gate gate
    cdef bint busy                    # a leader is writing a group
    cdef unsigned long leader         # its thread
    cdef list waiting                 # _Write, in the order they came
    cdef list gathered                # the leader's: taken from waiting into its group
    cdef readonly unsigned long long transactions, writes    # committed, so far

    def __init__(self, env, Gate gate not None, grow, follow, failed):
        self.env, self.gate = env, gate
        self.grow, self.follow, self.failed = grow, follow, failed
        self.waiting = []

    def write(self, work):
        """work(txn) in a write transaction, with what other threads write meanwhile;
        returns its result once committed.  ``work`` may run on another thread, and
        again if the transaction is retried: it must only write through ``txn``."""
        return self.submit(work, None, None, None)

    cdef object submit(self, work, db, key, value):
        cdef _Write me = _Write.__new__(_Write)
        me.work, me.db, me.key, me.value = work, db, key, value
        me.thread = PyThread_get_thread_ident()
        if not self.busy:
            self.busy, self.leader = True, me.thread
        elif self.leader == me.thread:
            raise RuntimeError("a store write inside a store write would wait for itself")
        else:
            me.woken = PyThread_allocate_lock()
            if me.woken == NULL:
                raise MemoryError()
            PyThread_acquire_lock(me.woken, NOWAIT_LOCK)
            if not self.busy:             # the leader finished meanwhile
                self.busy, self.leader = True, me.thread
            else:
                self.waiting.append(me)
                with nogil:
                    PyThread_acquire_lock(me.woken, WAIT_LOCK)
                if me.then is not None:
                    PyThread_release_lock(me.then.woken)
                    me.then = None
                if not me.lead:
                    if me.error is not None:
                        raise me.error
                    return me.result
        self.lead(me)
        if me.error is not None:
            raise me.error
        return me.result

    cdef void lead(self, _Write first) except *:
        """Write ``first`` with the writes gathered meanwhile; wake their writers."""
        cdef list done = None             # the others, written (or failed) and to wake
        cdef _Write w
        self.gathered = None
        try:
            try:
                self.run(first, True)
                done = self.gathered
            except Exception as e:
                if not self.gathered:
                    first.error = self.failed(e) or e
                else:
                    done = []                 # each alone, each with its own outcome
                    for w in [first] + self.gathered:
                        try:
                            self.run(w, False)
                        except Exception as e:
                            w.error = self.failed(e) or e
                        if w is not first:
                            done.append(w)
        except BaseException:
            # not written (or written one by one, up to ``done``): the rest waits for
            # the next leader
            if self.gathered:
                self.requeue([w for w in self.gathered if done is None or w not in done])
            raise
        finally:
            self.gathered = None
            self.hand_over()
            if done:
                self.wake(done)

    cdef void wake(self, list done) except *:
        cdef Py_ssize_t i
        cdef _Write w
        for i in range(len(done) - WAKE_AT_ONCE):
            (<_Write>done[i]).then = done[i + WAKE_AT_ONCE]
        for i in range(min(len(done), WAKE_AT_ONCE)):
            w = done[i]
            PyThread_release_lock(w.woken)

    cdef void requeue(self, list writes) except *:
        if writes:
            self.waiting[:0] = writes

    cdef void hand_over(self) noexcept:
        cdef _Write nxt
        if self.waiting:
            nxt = self.waiting.pop(0)
            nxt.lead = True
            self.leader = nxt.thread
            PyThread_release_lock(nxt.woken)
        else:
            self.busy, self.leader = False, 0

    cdef void run(self, _Write first, bint gather) except *:
        """``first`` (and with ``gather``, every write waiting by the time the
        transaction is open, added to ``gathered``) in one committed transaction."""
        cdef _Write w
        cdef bint inside
        while True:
            self.gate.enter()
            inside = True
            try:
                try:
                    # positional (db, parent, write): a keyword would cost a dict per call
                    txn = self.env.begin(None, None, True)
                except MapResizedError:
                    self.gate.leave()
                    inside = False
                    self.gate.exclusive(self.follow)
                    continue
                try:
                    if gather and self.waiting:
                        if self.gathered is None:
                            self.gathered = []
                        self.gathered.extend(self.waiting)
                        del self.waiting[:]
                    self.write_one(txn, first)
                    if gather and self.gathered:
                        for w in self.gathered:
                            self.write_one(txn, w)
                except BaseException as e:
                    # py-lmdb's abort of a write transaction (lmdb/cpython.c, trans_abort)
                    # waits until no LMDB call of this process is in flight: readers
                    # busy on other threads could starve it, so it aborts with the gate
                    # closed (and grows the map there, if that is what failed)
                    self.gate.leave()
                    inside = False
                    self.gate.exclusive(self.abort_then, txn,
                                        self.grow if isinstance(e, MapFullError) else None)
                    if isinstance(e, MapFullError):
                        continue
                    raise
                try:
                    txn.commit()          # a failed commit ends the transaction itself
                except MapFullError:
                    self.gate.leave()
                    inside = False
                    self.gate.exclusive(self.grow)
                    continue
                self.transactions += 1
                self.writes += 1 + (len(self.gathered) if gather and self.gathered else 0)
                return
            finally:
                if inside:
                    self.gate.leave()

    cdef inline void write_one(self, txn, _Write w) except *:
        if w.work is None:
            txn.put(w.key, w.value, True, True, False, w.db)  # (dupdata, overwrite, append)
        else:
            w.result = w.work(txn)

    def abort_then(self, txn, then):
        txn.abort()
        if then is not None:
            then()

    @property
    def waiting_writes(self):
        """How many writes wait for the leader now (for tests)."""
        return len(self.waiting)
