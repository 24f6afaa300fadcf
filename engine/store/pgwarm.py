"""The connections a store hands out: the one given back last first.

psycopg_pool hands its idle connections out oldest first, so a thread committing one
savepoint after another goes round every connection of the pool -- a different server
process each time, whose caches (and this process's) are cold: a Flow-API call took ~10 %
longer than on one connection.  Its getconn/putconn also cost a few microseconds of
bookkeeping each.  WarmConnections keeps a few connections given back on a stack in front
of the pool: the next taker gets the one given back last, without the pool's bookkeeping.

Nothing waits on a connection kept here while another is idle: a connection is kept only
while no thread waits for one of the pool (it goes back to the pool, which hands it to
the waiter), and a thread waits on the pool only when nothing is kept.  A connection
goes back to the pool now and then (RECYCLE_SECONDS after it was taken from it), so the
pool's own care of its connections (their lifetime, shrinking when idle) goes on; and
one that is not idle (broken, or in a transaction) always goes back (the pool replaces,
or rolls back, it), as does one given back once the pool is closed (which closes it).
"""
import threading
import time

from psycopg import pq

KEPT = 2                     # connections kept at most (one per thread in a burst)
RECYCLE_SECONDS = 60.0       # a connection goes back to the pool once this old


class WarmConnections:
    """take() and give() of a psycopg_pool.ConnectionPool's connections."""

    def __init__(self, pool):
        self._pool = pool
        self._kept = []                 # the last given back on top
        self._taken_at = {}             # connection -> when taken from the pool
        self._lock = threading.Lock()
        self._waiting = 0               # threads in the pool's getconn

    def take(self, timeout):
        """A connection: the one given back last, else one of the pool (waiting up to
        ``timeout`` seconds; PoolTimeout after)."""
        with self._lock:
            if self._kept:
                return self._kept.pop()
            self._waiting += 1
        try:
            conn = self._pool.getconn(timeout=timeout)
        finally:
            with self._lock:
                self._waiting -= 1
        self._taken_at[conn] = time.monotonic()
        return conn

    def give(self, conn):
        """Give back a connection take() gave."""
        if conn.pgconn.transaction_status == pq.TransactionStatus.IDLE and \
                time.monotonic() - self._taken_at.get(conn, 0.0) < RECYCLE_SECONDS and \
                not self._pool.closed:      # closed: the pool closes it
            with self._lock:
                if not self._waiting and len(self._kept) < KEPT:
                    self._kept.append(conn)
                    return
        self._taken_at.pop(conn, None)
        self._pool.putconn(conn)

    def flush(self):
        """Every kept connection back to the pool (before it checks or closes them)."""
        with self._lock:
            kept, self._kept = self._kept, []
        for conn in kept:
            self._taken_at.pop(conn, None)
            self._pool.putconn(conn)
