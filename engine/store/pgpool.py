"""The PostgreSQL store's connections, and what happens when the server goes away.

Every store operation runs through Pool.retrying: when the connection is lost (the server
restarted, crashed, or cannot be reached) or the server rolled the transaction back (a
deadlock, a serialization failure), the operation runs again -- with a fresh connection,
waiting for the server to come back -- for up to ``retry_seconds`` from its first failure;
then it fails with StoreUnavailable naming the store, never a psycopg traceback.  Each
operation is one transaction, so a failed attempt wrote nothing -- except when the
connection was lost while COMMIT was on its way: then whether it committed is not known.
A transaction that must not run twice says how to tell (``written_if``: this row holds
these bytes, e.g. a savepoint's); after such a loss, that is looked up before anything
runs again, and a transaction found committed counts as done (the operation returns as
if the commit had answered).  Other operations are idempotent, or harmless when repeated
(a claim repeated leaves the first claim's leases to run out).

Operations take connections through pgwarm.WarmConnections (the one given back last
first).  Broken connections leave the pool: one that fails is discarded when it comes
back, and a failure has the pool test its idle connections (``ConnectionPool.check``, the
kept ones given back first) so that the next attempt does not pick up another dead one.  The pool does not retry connecting on its own
(reconnect_timeout 0: its backoff grows to minutes, and the server would be back long
before the pool looked again): an operation waiting for a connection makes it try, at
each attempt -- so a connection is made again within about a second of the server's
return.  Connections are opened with TCP keepalives and a user timeout, so that a server
that vanished without closing them is noticed in seconds, not when TCP gives up.
"""
import logging
import os
import threading
import time
from contextlib import contextmanager

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from engine.errors import StoreClosed, StoreUnavailable
from engine.store.pgwarm import WarmConnections
from engine.store.location import redacted

RETRY_SECONDS = 30.0         # how long an operation waits for a lost server (default)
RETRY_ENV = "ENGINE_PG_RETRY_SECONDS"
FIRST_BACKOFF, LONGEST_BACKOFF = 0.05, 1.0   # between attempts (doubling)
ATTEMPT_WAIT = 2.0           # longest wait for a connection in one attempt
# libpq settings each connection gets unless the URL says otherwise: notice a server gone
# silently (no FIN, no RST: a host down, a network cut) in about 25 s idle, 10 s busy
CONNECTION_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "10",
                       "keepalives_interval": "5", "keepalives_count": "3",
                       "tcp_user_timeout": "10000"}
# SQLSTATEs of a connection the server ended (admin shutdown, crash shutdown, starting up)
_SERVER_WENT = ("57P01", "57P02", "57P03")
log = logging.getLogger("engine.store")


def connection_options(url, **options):
    """``options`` with CONNECTION_DEFAULTS added where neither they nor ``url`` set one."""
    given = psycopg.conninfo.conninfo_to_dict(url)
    for name, value in CONNECTION_DEFAULTS.items():
        if name not in given:
            options.setdefault(name, value)
    return options


def lost(error):
    """Whether ``error`` means the connection is gone (or none could be had): the server
    may be back a moment later."""
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in _SERVER_WENT


def rolled_back(error):
    """Whether the server rolled the transaction back for a conflict (deadlock,
    serialization failure): nothing was written, it may simply run again."""
    return isinstance(error, (errors.DeadlockDetected, errors.SerializationFailure))


def retry_bound(value=None):
    """The bound: ``value``, else $ENGINE_PG_RETRY_SECONDS, else RETRY_SECONDS."""
    where = "retry_seconds"
    if value is None:
        value, where = os.environ.get(RETRY_ENV) or RETRY_SECONDS, f"${RETRY_ENV}"
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number of seconds, not {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{where} must be a finite number of seconds >= 0, not {value!r}")
    return seconds


class _Operation:
    """One store operation in progress on a thread: when it gives up, and the rows that
    tell whether a transaction of it whose COMMIT went unanswered was committed."""
    __slots__ = ("deadline", "unknown", "attempts")

    def __init__(self):
        self.deadline = None         # monotonic; set at the first failure
        self.unknown = []            # (query, params, bytes) of attempts that may have landed
        self.attempts = 0


class Pool:
    """A psycopg ConnectionPool whose operations outlast a lost connection: ``retrying``
    runs one, ``connection`` and ``transaction`` are what its body uses."""

    def __init__(self, url, *, shown, retry, max_size, options):
        self.shown = shown              # the store, as messages name it
        self.retry_seconds = retry
        self._local = threading.local()
        self._pool = ConnectionPool(url, min_size=1, max_size=max_size, open=True,
                                    timeout=ATTEMPT_WAIT, reconnect_timeout=0,
                                    kwargs=connection_options(url, autocommit=True,
                                                              **options))
        self._conns = WarmConnections(self._pool)   # what operations take and give back

    def close(self):
        self._conns.flush()
        self._pool.close()

    # -- inside an operation -----------------------------------------------------------
    def _operation(self):
        return getattr(self._local, "operation", None)

    def _wait(self, operation):
        """How long to wait for a connection of the pool: ATTEMPT_WAIT at most (then
        PoolTimeout: the operation tries again, and the pool connects again), and no
        longer than the operation may."""
        left = self.retry_seconds          # the first wait too: no longer than the bound
        if operation is not None and operation.deadline is not None:
            left = operation.deadline - time.monotonic()
        return min(ATTEMPT_WAIT, max(0.1, left))

    @contextmanager
    def connection(self):
        """A connection of the pool (waiting for one as _wait says)."""
        conn = self._conns.take(self._wait(self._operation()))
        try:
            yield conn
        finally:
            self._conns.give(conn)

    @contextmanager
    def transaction(self):
        """A connection in a transaction, committed at the end.  If the connection is
        lost on the way and a ``written_if`` row of this transaction (or of an earlier
        attempt of the operation) is found written, it committed: the loss is swallowed,
        and what follows the ``with`` runs as after a commit."""
        operation = self._operation()
        marks = []
        self._local.marks = marks
        try:
            with self.connection() as conn, conn.transaction():
                yield conn
        except Exception as e:
            if operation is None or not lost(e):
                raise
            operation.unknown += marks
            if not operation.unknown or not self._landed(operation, e):
                raise
            log.warning("%s: the connection was lost at COMMIT, which had been "
                        "carried out", self.shown)
        finally:
            self._local.marks = None

    def execute(self, query, params, *, written_if):
        """One statement, a transaction of its own (the connections are autocommit): one
        round trip.  If the connection is lost on the way, it counts as made when
        ``written_if`` (query, params, value) reads value, as in transaction() (None: a
        statement harmless when made twice runs again).  (Not
        connection(): a context manager costs a Flow-API call microseconds.)"""
        self._once(lambda conn: conn.execute(query, params), written_if)

    def execute_prepared(self, statement, params, *, written_if):
        """execute() of a pgprepared.Statement."""
        self._once(lambda conn: statement.run(conn, params), written_if)

    def _once(self, send, written_if):
        operation = self._operation()
        conn = self._conns.take(self._wait(operation))
        try:
            send(conn)
        except Exception as e:
            if operation is None or not lost(e) or written_if is None:
                raise                        # None: harmless made twice, it runs again
            operation.unknown.append(written_if)
            if not self._landed(operation, e):
                raise
            log.warning("%s: the connection was lost at COMMIT, which had been "
                        "carried out", self.shown)
        finally:
            self._conns.give(conn)

    def written_if(self, query, params, value):
        """Inside transaction(): after a lost COMMIT, this transaction counts as committed
        if ``query`` (one row, one column) reads ``value`` -- bytes nothing else writes."""
        marks = getattr(self._local, "marks", None)
        if marks is not None:
            marks.append((query, params, value))

    def _landed(self, operation, error):
        """Whether one of the operation's unanswered transactions committed (waiting for
        the server, within the operation's bound)."""
        while True:
            try:
                with self.connection() as conn:
                    for query, params, value in operation.unknown:
                        row = conn.execute(query, params).fetchone()
                        if row is not None and bytes(row[0]) == value:
                            return True
                    return False
            except Exception as e:
                if not lost(e):
                    raise
                error = e
                self._pause(operation, error, "whether its last write was made is "
                                              "not known")

    # -- around an operation -----------------------------------------------------------
    def retrying(self, work, *args, **kwargs):
        """``work(*args, **kwargs)``, again while the connection is lost or the server
        rolls it back, for up to retry_seconds from the first failure; then
        StoreUnavailable.  Nested operations are retried by the outermost."""
        if self._operation() is not None:
            return work(*args, **kwargs)
        if self._pool.closed:       # not a lost connection: no use trying again
            raise StoreClosed(f"{self.shown} is closed: open a new Engine")
        operation = self._local.operation = _Operation()
        try:
            while True:
                try:
                    return work(*args, **kwargs)
                except Exception as e:
                    if not (lost(e) or rolled_back(e)):
                        raise
                    self._pause(operation, e)
        finally:
            self._local.operation = None

    def _pause(self, operation, error, unknown=None):
        """After a failed attempt: drop the pool's broken connections and wait a moment;
        StoreUnavailable once the operation's time is up."""
        now = time.monotonic()
        if operation.deadline is None:
            operation.deadline = now + self.retry_seconds
            if lost(error):
                log.warning("%s: lost the connection (%s); trying again for up to %g s",
                            self.shown, _one_line(error), self.retry_seconds)
        if now >= operation.deadline:
            if not lost(error):
                raise error                  # rolled back again and again: as it is
            raise StoreUnavailable(
                f"{self.shown} could not be reached for {self.retry_seconds:g} s"
                + (f" ({unknown})" if unknown else "") + f": {_one_line(error)}") from None
        if lost(error):
            try:
                self._conns.flush()          # with the pool's, to be checked
                self._pool.check()           # the other idle connections are dead too
            except Exception:                # closed meanwhile: the next attempt says so
                pass
        delay = min(LONGEST_BACKOFF, FIRST_BACKOFF * 2 ** operation.attempts)
        operation.attempts += 1
        time.sleep(max(0.0, min(delay, operation.deadline - now)))


def _one_line(error):
    return " ".join(redacted(str(error)).split()) or type(error).__name__
