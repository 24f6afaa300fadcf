"""Wake-ups from the PostgreSQL store: a thread that LISTENs on the store's channel, on a
connection of its own, and tells the engine when an execution may have become claimable.

What NOTIFYs is the database itself (pgschema: triggers on the run queue and the leases),
with the time from which the execution is due as the payload.  A lost connection is
opened again, with a growing pause; notifications sent meanwhile are lost, so after each
reconnection the engine is told to look at once.  The engine's slow poll
(PostgresStore.poll_seconds) stays as a safety net: a listener that has not noticed its
connection is dead yet (keepalives take ~25 s) misses nothing for longer than that.
"""
import logging
import os
import select
import threading

import psycopg
from psycopg import sql

from engine.store import pgconnect
from engine.store.pgpool import connection_options

FIRST_BACKOFF, LONGEST_BACKOFF = 0.1, 2.0      # between reconnection attempts (doubling)
log = logging.getLogger("engine.store")


class Listener:
    """Calls each of ``callbacks`` with a UNIX time (an execution is due from then) or
    None (look now: the listener reconnected), from its own thread, until close()."""

    def __init__(self, url, channel, shown):
        self.url, self.channel, self.shown = url, channel, shown
        self.callbacks = []
        self._closed = False
        self._wake_read, self._wake_write = os.pipe()     # close() interrupts the wait
        self._conn = None
        self._thread = None
        self._lock = threading.Lock()

    def add(self, callback):
        """Call ``callback`` too; the first one starts listening -- connected before
        this returns if the server can be reached, so no later notification is missed."""
        with self._lock:
            self.callbacks.append(callback)
            if self._thread is not None or self._closed:
                return
            try:
                self._conn = self._connect()
            except (psycopg.Error, OSError, ConnectionError) as e:
                log.warning("%s: cannot listen for new work yet: %s", self.shown, e)
            self._thread = threading.Thread(target=self._run, name="engine-listen",
                                            daemon=True)
            self._thread.start()

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.write(self._wake_write, b"x")
            thread = self._thread
        if thread is not None:
            thread.join()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _connect(self):
        conn = pgconnect.connect(self.url, **connection_options(self.url, autocommit=True))
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _tell(self, due):
        for callback in list(self.callbacks):
            try:
                callback(due)
            except Exception:            # an engine's trouble is not the listener's
                log.exception("%s: a wake-up callback failed", self.shown)

    def _run(self):
        pause = FIRST_BACKOFF
        try:
            while not self._closed:
                if self._conn is None:
                    try:
                        self._conn = self._connect()
                    except (psycopg.Error, OSError, ConnectionError):
                        if self._sleep(pause):
                            return
                        pause = min(LONGEST_BACKOFF, pause * 2)
                        continue
                    pause = FIRST_BACKOFF
                    log.info("%s: listening again for new work", self.shown)
                    self._tell(None)         # what was notified meanwhile is lost: look
                try:
                    self._receive()
                except (psycopg.Error, OSError) as e:
                    log.warning("%s: the connection waiting for new work was lost (%s); "
                                "connecting again", self.shown, " ".join(str(e).split()))
                    self._drop()
        finally:
            self._drop()

    def _receive(self):
        """Wait for notifications (or close()) and pass them on."""
        conn = self._conn
        ready, _, _ = select.select([conn.fileno(), self._wake_read], [], [])
        if self._closed or conn.fileno() not in ready:
            return
        for notify in conn.notifies(timeout=0):
            try:
                due = float(notify.payload)
            except ValueError:
                due = None
            self._tell(due)

    def _sleep(self, seconds):
        """Wait ``seconds`` unless close() comes first; whether it did."""
        select.select([self._wake_read], [], [], seconds)
        return self._closed

    def _drop(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
