"""The PostgreSQL backend: the same records as the LMDB store (records.py; every value
sealed with the store's key, engine._codec.seal) in tables of one schema, so workers on
many hosts can share a store.

Tables (schema ``savepoint_engine`` unless told otherwise; ids and names COLLATE "C" so
they sort as the LMDB keys do):
    meta        name -> value              "format" (FORMAT), "key-check" (see _KEY_CHECK)
    executions  id -> record, status, flow, created_at, parent
                                           sealed execution record; the listing's
                                           columns (pglisting.py) as its head says
    savepoints  (exec_id, seq) -> value    sealed [meta, record, state]
    names       (exec_id, name) -> seq
    code        digest -> value            sealed engine._codec.encode_code
    code_users  (exec_id, digest)          which executions pin which code
    chunks      digest -> value, refs      sealed bytes, reference count
    queue       exec_id -> due             executions with a due time (index on due)
    leases      exec_id -> owner, expires  owner: pid, start (-1: unknown), boot (its
                                           host: leases.this_host), label
    settings    name -> value              sealed
    status_counts  (status, shard) -> n    executions of each status (kept by a trigger)

The run queue is ``queue`` minus the leased executions: a leased one with a due time
stays in ``queue`` and only its owner claims it (LMDB's ``held``).  Claims lock queue
rows FOR UPDATE SKIP LOCKED, so two claimers never take the same execution and never
wait for each other.  Whether a lease is held: not expired, and -- for an owner on this
host (leases.this_host: the boot id, or $ENGINE_HOST_ID) -- the owner alive; an owner on
another host is trusted until its lease runs out (its pid cannot be looked up here).
Leases are recovered by the look before a claim (claim_many): at every claim that finds
nothing more to hand out, else every RECOVER_SECONDS.

Durability "async" opens the pool's connections with synchronous_commit off: the same as
SET LOCAL in every write transaction, without the extra round trip.  (A killed worker
loses nothing; a crash of the database server may lose the last moments' commits.)

Around it:
    pgschema.py   the tables, the store's format and the migrations from older formats
    pgpool.py     the connections: an operation outlasts a lost connection (retry_seconds,
                  $ENGINE_PG_RETRY_SECONDS, default 30 s), then fails with StoreUnavailable
    pgwarm.py     which connection an operation gets: the one given back last
    pgprepared.py a call's savepoint row, sent through libpq itself (a statement
                  prepared once per connection): a psycopg cursor cost as much as the
                  round trip
    pglisten.py   wake-ups: idle engines LISTEN for work the database NOTIFYs (on_work),
                  and look at the queue by themselves only every poll_seconds
    pgkey.py      where this host keeps the signing key when the environment names none
    pglisting.py  the Savepoints page's listing, in SQL over the listing's columns

The signing key: $ENGINE_SECRET_KEY / $ENGINE_SECRET_KEY_FILE (what hosts sharing the
store must use), else a key file of the user's per store (pgkey.py).

TODO (not done yet):
  - check(): verifies that every sealed value reads; repair does nothing yet.
  - the pool is not fork-safe: a forked child must open its own store.
  - head() and damaged heads reuse lmdbtables.Tables' transaction-free methods; they
    belong in a backend-neutral module.
"""
import functools
import logging
import os
import threading
import time

from engine import _codec, _commit, signing
from engine.config import DURABILITIES, RETENTIONS
from engine.errors import CorruptSavepoint, SavepointError
from engine.store import pgkey, pglisting, pgpool, pgprepared, pgschema, records
from engine.store.base import StoreProtocol, retention_error
from engine.store.leases import Lease, Owner, this_host
from engine.store.lmdbtables import Tables
from engine.store.location import shown
from engine.store.pglisten import Listener

FORMAT = pgschema.FORMAT    # of the PostgreSQL schema; a newer one is refused
SLOW_POLL_SECONDS = 1.0     # an idle engine looks at the queue unasked (see on_work)
RECOVER_SECONDS = 0.5       # claims with work to hand out look for leases to recover
                            # this often (claim_many); with none, at every claim
_KEY_CHECK = b"savepoint-engine: the key this store is signed with"
LAYOUT = _commit.SavepointLayout(records.META_FIELDS, records.STATE_FIELDS)
_NO_START = -1              # Owner.start None (no /proc to read it from)
log = logging.getLogger("engine.store")

_OWNER_IS = "pid = %s AND start = %s AND boot = %s"


def _owner_row(owner):
    return owner.pid, _NO_START if owner.start is None else owner.start, owner.host


def _owner_of(pid, start, host, label=""):
    return Owner(pid, None if start == _NO_START else start, host, label)


def held(lease, now):
    """Whether a lease holds: not run out, and its owner alive if it is on this host
    (one on another host is trusted until its lease runs out)."""
    if lease.expires <= now:
        return False
    return not lease.owner.here() or lease.owner.alive()


def _retried(operation):
    """A store operation that runs again while the connection is lost, up to
    retry_seconds (pgpool.Pool.retrying)."""
    @functools.wraps(operation)
    def run(self, *args, **kwargs):
        return self._pool.retrying(operation, self, *args, **kwargs)
    return run


class PostgresStore(StoreProtocol):
    """A store in a PostgreSQL database (engine.store.base.StoreProtocol says what each
    method promises).  ``url``: a libpq connection string; ``schema``: where the tables
    are; ``pool_size``: connections at most (threads beyond it wait for one);
    ``retry_seconds``: how long an operation waits for a lost server before it fails
    with StoreUnavailable (default $ENGINE_PG_RETRY_SECONDS, else 30)."""

    poll_seconds = SLOW_POLL_SECONDS

    def __init__(self, url, *, durability="sync", schema="savepoint_engine",
                 pool_size=8, retry_seconds=None):
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        self.path, self.durability, self.schema = url, durability, schema
        self._open = False
        self._code = {}             # fingerprint -> code object (verified when loaded)
        self._pinned = {}           # execution id -> fingerprints known pinned for it
        self._pins_lock = threading.Lock()
        self._looked_until = 0.0    # claim_many: monotonic time of the next look
        retry = pgpool.retry_bound(retry_seconds)
        options = f"-c search_path={schema}"
        if durability == "async":
            options += " -c synchronous_commit=off"
        pgschema.prepare(url, schema, self._shown())
        self._pool = pgpool.Pool(url, shown=self._shown(), retry=retry,
                                 max_size=pool_size,
                                 options={"options": options,
                                          **pgprepared.CONNECTION_SETTINGS})
        self._listener = Listener(url, pgschema.channel(schema), self._shown())
        self._open = True
        try:
            self._pool.retrying(self._check_key)
            self._pool.retrying(self._list_unlisted)
        except BaseException:
            self.close()
            raise

    def _check_key(self):
        """Sign with this process's key -- the store's first opener sets it (a key file
        of this host's if the environment names none); refuse another."""
        with self._pool.connection() as conn:
            found = conn.execute("SELECT value FROM meta WHERE name = 'key-check'").fetchone()
        key_dir = pgkey.key_dir(self.path, self.schema)
        if found is None:
            os.makedirs(key_dir, mode=0o700, exist_ok=True)
        self._signer = _codec.Signer(signing.store_key(key_dir, create=found is None, missing=(
            f"{self._shown()} holds a store, and this host has no key for it: set "
            f"$ENGINE_SECRET_KEY or $ENGINE_SECRET_KEY_FILE to the secret it was made with "
            f"(hosts sharing a store share its key), or copy its key file to "
            f"{os.path.join(key_dir, signing.KEY_FILE)}")))
        self.tables = Tables(None, self._signer, LAYOUT)   # its transaction-free part
        check = self._signer.tag(_KEY_CHECK)
        with self._transaction() as conn:
            conn.execute("INSERT INTO meta VALUES ('key-check', %s) ON CONFLICT DO NOTHING",
                         (check,))
            found = conn.execute("SELECT value FROM meta WHERE name = 'key-check'").fetchone()
        if bytes(found[0]) != check:
            raise SavepointError(f"{self._shown()} was signed with another key than this "
                                 f"process has ($ENGINE_SECRET_KEY, $ENGINE_SECRET_KEY_FILE "
                                 f"or a key file in {key_dir}): its records cannot be "
                                 f"trusted here")

    def _list_unlisted(self):
        """Fill in the listing columns of the rows a migration to format 3 added them
        to, from their heads (the migration has no key to read them with).  A writer
        meanwhile sets them itself: only rows still unlisted are written."""
        with self._pool.connection() as conn:
            ids = pglisting.unlisted(conn)
        for start in range(0, len(ids), 1000):
            with self._transaction() as conn:
                for head in self._heads(conn, ids[start:start + 1000]):
                    conn.execute(pglisting.RELIST + " AND status IS NULL",
                                 pglisting.relist_statement(head)[1])

    def _shown(self):
        """The store as messages name it: its URL without a password, and its schema."""
        return f"{shown(self.path)} (schema {self.schema})"

    def on_work(self, callback):
        """callback(due) when an execution may have become claimable from ``due`` (None:
        now), from the listener's thread (pglisten.py); True: the database tells."""
        self._listener.add(callback)
        return True

    def close(self):
        if self._open:
            self._open = False
            self._listener.close()
            self._pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _transaction(self):
        """A pooled connection in a transaction (pgpool.Pool.transaction)."""
        return self._pool.transaction()

    # -- sealed values --
    def _execution_row(self, conn, exec_id, lock=False):
        """(record bytes or None, (seq, value bytes) of the newest savepoint or None).
        Unless ``lock`` (the record's row locked first), one statement: one snapshot, as
        LMDB reads both in one transaction -- two would pair a record with a savepoint
        committed after a newer record."""
        if not lock:
            raw, seq, value = conn.execute(
                "SELECT (SELECT record FROM executions WHERE id = %s), s.seq, s.value FROM "
                "(SELECT 1) AS one LEFT JOIN LATERAL (SELECT seq, value FROM savepoints "
                "WHERE exec_id = %s ORDER BY seq DESC LIMIT 1) AS s ON true",
                (exec_id, exec_id)).fetchone()
            return (None if raw is None else bytes(raw),
                    None if seq is None else (seq, bytes(value)))
        row = conn.execute("SELECT record FROM executions WHERE id = %s FOR UPDATE",
                           (exec_id,)).fetchone()
        latest = conn.execute("SELECT seq, value FROM savepoints WHERE exec_id = %s "
                              "ORDER BY seq DESC LIMIT 1", (exec_id,)).fetchone()
        return (None if row is None else bytes(row[0]),
                None if latest is None else (latest[0], bytes(latest[1])))

    def _sealed(self, execution):
        """(id, sealed record) of an execution about to be written, its version new."""
        execution["version"] = _commit.version_after(execution)
        for note in records.NOT_STORED:
            execution.pop(note, None)
        return execution["id"], self.tables.seal(execution)

    def _put_execution(self, conn, execution):
        exec_id, sealed = self._sealed(execution)
        # a COMMIT lost on the way counts as made if this record (its version is new) is there
        self._pool.written_if("SELECT record FROM executions WHERE id = %s", (exec_id,),
                              sealed)
        conn.execute(pglisting.PUT, (exec_id, sealed, *pglisting.columns_of(execution)))
        self._schedule(conn, exec_id, execution.get("due"))

    @staticmethod
    def _schedule(conn, exec_id, due):
        conn.execute(*_schedule_statement(exec_id, due))

    @staticmethod
    def _lease(conn, exec_id, lock=False):
        row = conn.execute("SELECT pid, start, boot, label, expires FROM leases WHERE "
                           "exec_id = %s" + (" FOR UPDATE" if lock else ""),
                           (exec_id,)).fetchone()
        return None if row is None else Lease(_owner_of(*row[:4]), row[4])

    # -- executions --
    @_retried
    def put_execution(self, execution):
        with self._transaction() as conn:
            self._put_execution(conn, execution)

    @_retried
    def add_execution(self, execution):
        exec_id, sealed = self._sealed(execution)
        with self._transaction() as conn:
            # the row lock of a racing INSERT makes this wait for it, then add nothing;
            # a retry after a lost COMMIT finds its own record (True: it was added)
            if conn.execute("INSERT INTO executions VALUES (%s, %s) ON CONFLICT (id) DO "
                            "NOTHING", (exec_id, sealed)).rowcount == 0:
                row = conn.execute("SELECT record FROM executions WHERE id = %s",
                                   (exec_id,)).fetchone()
                return row is not None and bytes(row[0]) == sealed
            self._schedule(conn, exec_id, execution.get("due"))
        return True

    @_retried
    def get_execution(self, exec_id):
        with self._pool.connection() as conn:
            return self.tables.head_of(exec_id, *self._execution_row(conn, exec_id))

    @_retried
    def executions(self):
        with self._pool.connection() as conn:
            return self._heads(conn)

    def _heads(self, conn, ids=None):
        """The heads of the executions ``ids`` (None: all), in id order.  One statement:
        every head from one snapshot (as LMDB's read transaction), in one round trip
        instead of two per execution."""
        rows = conn.execute(
            "SELECT e.id, e.record, s.seq, s.value FROM executions e LEFT JOIN LATERAL "
            "(SELECT seq, value FROM savepoints WHERE exec_id = e.id ORDER BY seq DESC "
            "LIMIT 1) AS s ON true" + ("" if ids is None else " WHERE e.id = ANY(%s)") +
            " ORDER BY e.id", () if ids is None else (list(ids),)).fetchall()
        return [self.tables.head_of(exec_id, bytes(raw),
                           None if seq is None else (seq, bytes(value)))
                for exec_id, raw, seq, value in rows]

    # -- the listing (pglisting.py) --
    @_retried
    def list_executions(self, status=None, flow=None, offset=0, limit=50):
        with self._pool.connection() as conn:
            ids, total = pglisting.page(conn, status, flow, offset, limit)
            heads = {h["id"]: h for h in self._heads(conn, ids)} if ids else {}
        return [heads[exec_id] for exec_id in ids if exec_id in heads], total

    @_retried
    def status_counts(self):
        with self._pool.connection() as conn:
            return pglisting.counts(conn)

    @_retried
    def children(self, exec_id):
        with self._pool.connection() as conn:
            return pglisting.children(conn, exec_id)

    @_retried
    def savepoint_page(self, exec_id, offset=0, limit=100, newest=True):
        with self._pool.connection() as conn:
            rows, total = pglisting.savepoint_rows(conn, exec_id, offset, limit, newest)
        metas = []
        for seq, raw in rows:
            try:
                metas.append(records.meta_dict(
                    self.tables.savepoint_value(raw, seq, exec_id)[0]))
            except CorruptSavepoint as e:
                metas.append(records.damaged_meta(seq, len(raw), str(e)))
        return metas, total

    @_retried
    def ids_with_prefix(self, prefix, limit=2):
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT id FROM executions WHERE starts_with(id, %s) "
                                "ORDER BY id <> %s, id LIMIT %s",
                                (prefix, prefix, limit)).fetchall()
        return [r[0] for r in rows]

    @_retried
    def update_unless_leased(self, exec_id, change, now=None):
        now = time.time() if now is None else now
        with self._transaction() as conn:
            head = self.tables.head_of(exec_id, *self._execution_row(conn, exec_id, lock=True))
            if head is None:
                return "missing", None
            lease = self._lease(conn, exec_id, lock=True)
            if lease is not None and held(lease, now):
                return "leased", head
            change(head)
            conn.execute("DELETE FROM leases WHERE exec_id = %s", (exec_id,))
            self._put_execution(conn, head)
            conn.execute("DELETE FROM settings WHERE name = %s",
                         (records.SIGNAL_PREFIX + exec_id,))
            return "done", head

    @_retried
    def wake_if(self, exec_id, wanted, now=None):
        now = time.time() if now is None else now
        with self._transaction() as conn:
            # the row lock: the record cannot change between the look and the write
            head = self.tables.head_of(exec_id, *self._execution_row(conn, exec_id, lock=True))
            if head is None or not wanted(head):
                return False
            head["due"] = now
            self._put_execution(conn, head)
        return True

    # -- messages --
    @_retried
    def add_message(self, exec_id, topic, value, accept, now=None):
        now = time.time() if now is None else now
        sealed = self.tables.seal([topic, value, now])
        with self._transaction() as conn:
            # the row lock orders this with a receiver's look (message): either it sees
            # this message, or this sees it waiting and wakes it
            head = self.tables.head_of(exec_id, *self._execution_row(conn, exec_id, lock=True))
            if head is None:
                return "missing"
            wake = accept(head)                 # raises for an ended one: nothing written
            conn.execute("INSERT INTO messages SELECT %s, coalesce(max(n), 0) + 1, %s, %s "
                         "FROM messages WHERE exec_id = %s",
                         (exec_id, topic, sealed, exec_id))
            if not wake:
                return "sent"
            head["due"] = now
            self._put_execution(conn, head)
        return "woke"

    @_retried
    def message(self, exec_id, topic, after=0):
        with self._transaction() as conn:
            # waits for a send in progress (add_message): see there
            conn.execute("SELECT 1 FROM executions WHERE id = %s FOR SHARE", (exec_id,))
            row = conn.execute("SELECT n, value FROM messages WHERE exec_id = %s AND "
                               "topic = %s AND n > %s ORDER BY n LIMIT 1",
                               (exec_id, topic, after)).fetchone()
        if row is None:
            return None
        n, raw = row
        return n, self.tables.unseal(bytes(raw), f"message {n} of execution {exec_id}")[1]

    @_retried
    def delete_unless_leased(self, exec_id, now=None):
        now = time.time() if now is None else now
        with self._transaction() as conn:
            conn.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE", (exec_id,))
            lease = self._lease(conn, exec_id, lock=True)
            if lease is not None and held(lease, now):
                return "leased"
            return "done" if self._delete_execution(conn, exec_id) else "missing"

    @_retried
    def delete_execution(self, exec_id):
        with self._transaction() as conn:
            return self._delete_execution(conn, exec_id)

    def _delete_execution(self, conn, exec_id):
        found = conn.execute("DELETE FROM executions WHERE id = %s", (exec_id,)).rowcount
        gone = conn.execute("DELETE FROM savepoints WHERE exec_id = %s RETURNING seq, value",
                            (exec_id,)).fetchall()
        if not found and not gone:
            return False
        unused = []
        for seq, raw in gone:
            try:
                meta = records.meta_dict(self.tables.savepoint_value(bytes(raw), seq,
                                                                     exec_id)[0])
            except CorruptSavepoint:
                meta = {}             # a damaged savepoint goes all the same
            unused += meta.get("chunks") or ()
        self._unref_chunks(conn, unused)                # all at once: in one order
        conn.execute("DELETE FROM names WHERE exec_id = %s", (exec_id,))
        conn.execute("DELETE FROM messages WHERE exec_id = %s", (exec_id,))
        digests = [r[0] for r in conn.execute(
            "DELETE FROM code_users WHERE exec_id = %s RETURNING digest", (exec_id,))]
        if digests:
            conn.execute("DELETE FROM code c WHERE c.digest = ANY(%s) AND NOT EXISTS "
                         "(SELECT 1 FROM code_users u WHERE u.digest = c.digest)",
                         (digests,))
        conn.execute("DELETE FROM leases WHERE exec_id = %s", (exec_id,))
        conn.execute("DELETE FROM queue WHERE exec_id = %s", (exec_id,))
        conn.execute("DELETE FROM settings WHERE name = %s",
                     (records.SIGNAL_PREFIX + exec_id,))
        self.forget_pins(exec_id)
        return True

    # -- savepoints --
    @_retried
    def commit_savepoint(self, execution, meta, record, codes=(), chunks=None, *,
                         retention="all"):
        if retention not in RETENTIONS:
            raise retention_error(retention)
        exec_id = execution["id"]
        version = _commit.version_after(execution)
        chunk_list = list(chunks) if chunks else []
        previous = execution.get("last_implicit")
        sealed, seq, state = LAYOUT.seal(execution, meta, record, chunk_list, version,
                                         self._signer)
        name = meta.get("name")
        due = execution.get("due")
        reschedule = "_due_written" not in execution or execution["_due_written"] != due
        # the listing follows the status the savepoint carries
        status = execution.get("status")
        relist = ("_status_written" not in execution or
                  execution["_status_written"] != status)
        drop = retention == "last" and previous and meta.get("kind") == "implicit"
        known = self._pinned.get(exec_id, ())
        new_codes = {}
        for code in codes:
            digest = _codec.fingerprint(code)
            if digest not in known:
                new_codes[digest] = code
        written = ("SELECT value FROM savepoints WHERE exec_id = %s AND seq = %s",
                   (exec_id, seq), sealed)   # a lost COMMIT counts as made if this reads
        dropped = (execution.get("last_implicit_chunks") or ()) if drop else ()
        if dropped:
            self._commit_dropping_chunks(exec_id, seq, sealed, name, previous, new_codes,
                                         chunks, dropped, due if reschedule else _KEEP,
                                         relist and execution, written)
        elif not (new_codes or chunks or name is not None or drop or reschedule or relist):
            # the most common case (a call like the one before): the row alone, through
            # libpq itself (pgprepared.py)
            self._pool.execute_prepared(_SAVEPOINT_ROW_PREPARED, (exec_id, seq, sealed),
                                        written_if=written)
        else:
            # the common case: one statement, one round trip.  Code and chunk rows are
            # shared by executions: locked in one order (by digest) -- commits locking the
            # same chunks in other orders deadlocked, where LMDB's one writer never fails
            self._pool.execute(*_savepoint_statement(
                exec_id, seq, sealed, name=name, dropped=previous if drop else None,
                codes={digest: self.tables.seal(_codec.encode_code(code))
                       for digest, code in sorted(new_codes.items())},
                chunks={digest: self.tables.seal(blob) for digest, blob in
                        sorted((chunks or {}).items())},
                schedule=_schedule_statement(exec_id, due) if reschedule else None,
                relist=pglisting.relist_statement(execution) if relist else None),
                written_if=written)
        if new_codes:                              # once committed
            with self._pins_lock:
                self._pinned.setdefault(exec_id, set()).update(new_codes)
            for digest, code in new_codes.items():
                self._code.setdefault(digest, code)
        LAYOUT.apply(execution, state)
        execution["_due_written"] = due
        execution["_status_written"] = status
        return seq

    def _commit_dropping_chunks(self, exec_id, seq, sealed, name, previous, new_codes,
                                chunks, dropped, due, relisted, written):
        """commit_savepoint when retention "last" drops a savepoint holding chunks: a
        chunk's count is read as it is decremented, so statements of their own -- taking
        the chunk rows, added and dropped alike, in one order (by digest).  ``relisted``:
        the execution whose listing columns change, or False."""
        with self._transaction() as conn:
            self._pool.written_if(*written)
            for digest, code in sorted(new_codes.items()):
                conn.execute("INSERT INTO code VALUES (%s, %s) ON CONFLICT DO NOTHING",
                             (digest, self.tables.seal(_codec.encode_code(code))))
                conn.execute("INSERT INTO code_users VALUES (%s, %s) ON CONFLICT DO "
                             "NOTHING", (exec_id, digest))
            for digest in sorted({*(chunks or ()), *dropped}):
                if chunks and digest in chunks:
                    conn.execute("INSERT INTO chunks VALUES (%s, %s, 1) ON CONFLICT "
                                 "(digest) DO UPDATE SET refs = chunks.refs + 1",
                                 (digest, self.tables.seal(chunks[digest])))
                self._unref_chunks(conn, [d for d in dropped if d == digest])
            conn.execute(_SAVEPOINT_ROW, (exec_id, seq, sealed))
            if name is not None:
                conn.execute("INSERT INTO names VALUES (%s, %s, %s) ON CONFLICT "
                             "(exec_id, name) DO UPDATE SET seq = excluded.seq",
                             (exec_id, name, seq))
            conn.execute("DELETE FROM savepoints WHERE exec_id = %s AND seq = %s",
                         (exec_id, previous))
            if due is not _KEEP:
                self._schedule(conn, exec_id, due)
            if relisted:
                conn.execute(*pglisting.relist_statement(relisted))

    @staticmethod
    def _unref_chunks(conn, digests):
        for digest in sorted(digests):                  # in one order: see commit_savepoint
            left = conn.execute("UPDATE chunks SET refs = refs - 1 WHERE digest = %s "
                                "RETURNING refs", (digest,)).fetchone()
            if left is not None and left[0] <= 0:
                conn.execute("DELETE FROM chunks WHERE digest = %s", (digest,))

    @_retried
    def savepoints(self, exec_id):
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT seq, value FROM savepoints WHERE exec_id = %s "
                                "ORDER BY seq", (exec_id,)).fetchall()
        found = []
        for seq, raw in rows:
            try:
                meta = self.tables.savepoint_value(bytes(raw), seq, exec_id)[0]
                found.append(records.meta_dict(meta))
            except CorruptSavepoint as e:
                found.append(records.damaged_meta(seq, len(raw), str(e)))
        return found

    @_retried
    def savepoint(self, exec_id, seq):
        with self._pool.connection() as conn:
            row = conn.execute("SELECT value FROM savepoints WHERE exec_id = %s AND "
                               "seq = %s", (exec_id, seq)).fetchone()
        if row is None:
            return None
        meta, record, _ = self.tables.savepoint_value(bytes(row[0]), seq, exec_id)
        return records.meta_dict(meta), record

    @_retried
    def seq_of(self, exec_id, name):
        with self._pool.connection() as conn:
            row = conn.execute("SELECT seq FROM names WHERE exec_id = %s AND name = %s",
                               (exec_id, name)).fetchone()
        return None if row is None else row[0]

    # -- pinned code and chunks --
    @_retried
    def code(self, digest):
        code = self._code.get(digest)
        if code is None:
            with self._pool.connection() as conn:
                row = conn.execute("SELECT value FROM code WHERE digest = %s",
                                   (digest,)).fetchone()
            if row is None:
                return None
            data = self.tables.unseal(bytes(row[0]), f"pinned code {digest.hex()}")
            code = self._code.setdefault(digest, _codec.decode_code(data, digest))
        return code

    @_retried
    def chunk(self, digest):
        with self._pool.connection() as conn:
            row = conn.execute("SELECT value FROM chunks WHERE digest = %s",
                               (digest,)).fetchone()
        return None if row is None else self.tables.unseal(bytes(row[0]),
                                                           f"chunk {digest.hex()}")

    def forget_pins(self, exec_id):
        """Forget what this process knows is pinned for the execution (released or
        deleted): its next commit, if any, pins again.  Keeps the cache bounded."""
        with self._pins_lock:
            self._pinned.pop(exec_id, None)

    # -- run queue and leases --
    @_retried
    def lease(self, exec_id):
        with self._pool.connection() as conn:
            return self._lease(conn, exec_id)

    def _look(self, now, owner):
        """(when a claim by ``owner`` could next hand something out or None, whether
        there are leases to recover: run out, or of dead owners on this host).  One
        statement, writing nothing."""
        me = _owner_row(owner) if owner is not None else (None, None, None)
        with self._pool.connection() as conn:
            host = this_host()
            free, mine, expiry, pids, starts = conn.execute(_LOOK, {
                "host": host, "pid": me[0], "start": me[1], "boot": me[2]}).fetchone()
        dead = [(pid, start) for pid, start in zip(pids or (), starts or ())
                if not _owner_of(pid, start, host).alive()]
        recover = bool(dead) or (expiry is not None and expiry <= now)
        when = [t for t in (free, mine, expiry) if t is not None]
        if dead:
            when.append(now)
        return (min(when) if when else None), recover, dead

    def _recover(self, now, dead):
        """The leases of the ``dead`` owners ((pid, start) of this host) and those run
        out go; their executions go back on the queue -- at their due time if they have
        one, else due now.  One statement."""
        self._pool.execute(_RECOVER, ([pid for pid, _ in dead], [start for _, start in dead],
                                      this_host(), now, now), written_if=None)

    def claim(self, owner, *, lease_seconds=30.0, now=None):
        taken = self.claim_many(owner, 1, lease_seconds=lease_seconds, now=now)
        return taken[0] if taken else None

    @_retried
    def claim_many(self, owner, limit, *, lease_seconds=30.0, now=None):
        """A claim straight away when this store looked lately (RECOVER_SECONDS); when
        that claim falls short of ``limit`` (nothing more to claim), or it did not look
        lately: the look (_look), the recovery of leases it found to recover, and a
        claim again if it says something is due.  So a dead owner's executions wait at
        most RECOVER_SECONDS while there is other work, and none when there is none."""
        now = time.time() if now is None else now
        if limit <= 0:
            return []
        expires = now + lease_seconds
        taken = []
        if time.monotonic() < self._looked_until:
            taken = self._claim(owner, limit, now, expires)
            if len(taken) == limit:
                return taken
        due, recover, dead = self._look(now, owner)
        self._looked_until = time.monotonic() + RECOVER_SECONDS
        if due is None or due > now:
            return taken
        if recover:
            self._recover(now, dead)
        return taken + self._claim(owner, limit - len(taken), now, expires)

    def _claim(self, owner, limit, now, expires):
        """Up to ``limit`` due executions: the owner's own first, then free ones (one
        statement: _CLAIM)."""
        pid, start, boot = _owner_row(owner)
        with self._pool.connection() as conn:
            return [r[0] for r in conn.execute(_CLAIM, {
                "pid": pid, "start": start, "boot": boot, "label": owner.label,
                "now": now, "limit": limit, "expires": expires})]

    @_retried
    def next_due(self, now=None, *, owner=None):
        now = time.time() if now is None else now
        return self._look(now, owner)[0]

    @_retried
    def claim_one(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        now = time.time() if now is None else now
        try:
            return self._claim_one(exec_id, owner, now + lease_seconds, now)
        except _Refused:                 # raised inside: the queue row comes back
            return False

    def _claim_one(self, exec_id, owner, expires, now):
        with self._transaction() as conn:
            # the execution's row serializes claim_one and update_unless_leased; the
            # queue row waits for a claim_many holding it
            if conn.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE",
                            (exec_id,)).fetchone() is None:
                return False
            conn.execute("DELETE FROM queue WHERE exec_id = %s", (exec_id,))
            lease = self._lease(conn, exec_id, lock=True)
            if lease is not None and lease.owner != owner and held(lease, now):
                raise _Refused
            conn.execute("INSERT INTO leases VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                         "(exec_id) DO UPDATE SET pid = excluded.pid, start = excluded.start,"
                         " boot = excluded.boot, label = excluded.label, "
                         "expires = excluded.expires",
                         (exec_id, *_owner_row(owner), owner.label, expires))
            return True

    def renew(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        return exec_id in self.renew_many((exec_id,), owner, lease_seconds=lease_seconds,
                                          now=now)

    @_retried
    def renew_many(self, exec_ids, owner, *, lease_seconds=30.0, now=None):
        now = time.time() if now is None else now
        exec_ids = list(exec_ids)
        if not exec_ids:
            return set()
        with self._transaction() as conn:
            return {r[0] for r in conn.execute(
                "UPDATE leases SET expires = %s WHERE exec_id = ANY(%s) AND " + _OWNER_IS
                + " RETURNING exec_id", (now + lease_seconds, exec_ids,
                                         *_owner_row(owner)))}

    @_retried
    def release(self, exec_id, owner, execution=None):
        unleased = ("DELETE FROM leases WHERE exec_id = %s AND " + _OWNER_IS,
                    (exec_id, *_owner_row(owner)))
        if execution is None:       # a statement alone: no BEGIN and COMMIT round trips
            self._pool.execute(*unleased, written_if=None)
        else:
            with self._transaction() as conn:
                conn.execute(*unleased)
                self._put_execution(conn, execution)
        self.forget_pins(exec_id)

    @_retried
    def queue_depth(self, now=None):
        now = time.time() if now is None else now
        with self._pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM queue q WHERE q.due <= %s AND NOT "
                                "EXISTS (SELECT 1 FROM leases l WHERE l.exec_id = "
                                "q.exec_id)", (now,)).fetchone()[0]

    # -- settings --
    @_retried
    def get_setting(self, name, default=None):
        with self._pool.connection() as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = %s",
                               (name,)).fetchone()
        return default if row is None else self.tables.unseal(bytes(row[0]),
                                                              f"setting {name!r}")

    @_retried
    def set_setting(self, name, value):
        sealed = self.tables.seal(value)
        with self._transaction() as conn:
            conn.execute("INSERT INTO settings VALUES (%s, %s) ON CONFLICT (name) DO "
                         "UPDATE SET value = excluded.value", (name, sealed))

    @_retried
    def delete_setting(self, name):
        with self._transaction() as conn:
            conn.execute("DELETE FROM settings WHERE name = %s", (name,))

    @_retried
    def settings(self, prefix="", damaged=None):
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT name, value FROM settings WHERE starts_with(name, "
                                "%s) ORDER BY name", (prefix,)).fetchall()
        found = {}
        for name, raw in rows:
            try:
                found[name] = self.tables.unseal(bytes(raw), f"setting {name!r}")
            except CorruptSavepoint as e:
                if damaged is None:
                    log.warning("settings: left out: %s", e)
                else:
                    damaged[name] = e
        return found

    # -- engine doctor --
    @_retried
    def check(self, repair=False):
        """Every sealed value is read; a damaged one is a Problem (repair: TODO), and
        listing columns out of step with their heads (repair: written from the head)."""
        checked, problems = {}, []
        tables = {"executions": "SELECT id, id, record FROM executions",
                  "savepoints": "SELECT exec_id || ':' || seq, exec_id, value FROM "
                                "savepoints",
                  "code": "SELECT encode(digest, 'hex'), NULL, value FROM code",
                  "chunks": "SELECT encode(digest, 'hex'), NULL, value FROM chunks",
                  "settings": "SELECT name, NULL, value FROM settings"}
        with self._pool.connection() as conn, conn.transaction():
            for table, query in tables.items():
                rows = conn.execute(query).fetchall()
                checked[table] = len(rows)
                for key, exec_id, raw in rows:
                    try:
                        self.tables.unseal(bytes(raw), f"{table} {key}")
                    except CorruptSavepoint as e:
                        problems.append({"db": table, "key": key, "execution": exec_id,
                                         "problem": str(e), "repair": None,
                                         "repaired": False})
            heads = {head["id"]: head for head in self._heads(conn)}
            wrong = pglisting.out_of_step(conn, heads)
            for exec_id, text in wrong:
                if repair and exec_id is not None:
                    conn.execute(*pglisting.relist_statement(heads[exec_id]))
                problems.append({"db": "listing", "key": exec_id or "counts",
                                 "execution": exec_id, "problem": text,
                                 "repair": "write the listing columns from the heads and "
                                 "count them again", "repaired": repair})
            if repair and wrong:
                conn.execute(pglisting.COUNT_ALL)
        return {"checked": checked, "problems": problems}


def _schedule_statement(exec_id, due):
    """(query, params) putting the execution on the run queue at ``due``, or off it."""
    if due is None:
        return "DELETE FROM queue WHERE exec_id = %s", (exec_id,)
    return ("INSERT INTO queue VALUES (%s, %s) ON CONFLICT (exec_id) DO UPDATE SET "
            "due = excluded.due", (exec_id, float(due)))


# as LMDB's put: a process that lost the lease while inside a call (stopped, say) may still
# commit the seq its successor wrote -- not fail the execution
_SAVEPOINT_ROW = ("INSERT INTO savepoints VALUES (%s, %s, %s) ON CONFLICT (exec_id, seq) "
                  "DO UPDATE SET value = excluded.value")
_SAVEPOINT_ROW_PREPARED = pgprepared.Statement(
    "savepoint_engine_savepoint_row", _SAVEPOINT_ROW % ("$1", "$2", "$3"),
    (pgprepared.TEXT_OID, pgprepared.BIGINT_OID, pgprepared.BYTEA_OID))
_KEEP = object()            # _commit_dropping_chunks: the run queue as it is


def _savepoint_statement(exec_id, seq, sealed, *, name, dropped, codes, chunks, schedule,
                         relist=None):
    """(query, params): a savepoint's commit as one statement -- one round trip, and a
    transaction of its own.  Every write besides the savepoint's row is a data-modifying
    WITH part: the code it pins ({digest: sealed}), its chunks (counted once more), its
    name, the savepoint it replaces (``dropped``: a seq), the run queue (``schedule``:
    a (query, params)) and the listing columns (``relist``: a (query, params)).  Each
    part writes rows no other part writes."""
    parts, params = [], []
    if codes:
        parts += ["INSERT INTO code SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
                  "ON CONFLICT DO NOTHING",
                  "INSERT INTO code_users SELECT %s, d FROM unnest(%s::bytea[]) AS d "
                  "ON CONFLICT DO NOTHING"]
        params += [list(codes), list(codes.values()), exec_id, list(codes)]
    if chunks:
        parts.append("INSERT INTO chunks SELECT d, v, 1 FROM unnest(%s::bytea[], "
                     "%s::bytea[]) AS c(d, v) ON CONFLICT (digest) DO UPDATE SET "
                     "refs = chunks.refs + 1")
        params += [list(chunks), list(chunks.values())]
    if name is not None:
        parts.append("INSERT INTO names VALUES (%s, %s, %s) ON CONFLICT (exec_id, name) "
                     "DO UPDATE SET seq = excluded.seq")
        params += [exec_id, name, seq]
    if dropped is not None:
        parts.append("DELETE FROM savepoints WHERE exec_id = %s AND seq = %s")
        params += [exec_id, dropped]
    for statement in (schedule, relist):
        if statement is not None:
            parts.append(statement[0])
            params += statement[1]
    query = _SAVEPOINT_ROW
    if parts:
        query = "WITH " + ", ".join(f"w{i} AS ({part})" for i, part in
                                    enumerate(parts)) + " " + query
    return query, (*params, exec_id, seq, sealed)


# -- claims: each a statement of its own ------------------------------------------------
# The look (next_due): the earliest free due time (along the queue_due index: min() over
# a join read the whole queue), the owner's own earliest, the first lease to run out, and
# this host's owners -- each (pid, start) once, found by skipping along the leases_owner
# index, not by reading every lease (a process may hold thousands).
_LOOK = """
WITH RECURSIVE owners AS (
    (SELECT pid, start FROM leases WHERE boot = %(host)s ORDER BY pid, start LIMIT 1)
  UNION ALL
    SELECT n.pid, n.start FROM owners o CROSS JOIN LATERAL (
        SELECT pid, start FROM leases WHERE boot = %(host)s
            AND (boot, pid, start) > (%(host)s, o.pid, o.start)
        ORDER BY boot, pid, start LIMIT 1) AS n)
SELECT (SELECT q.due FROM queue q WHERE NOT EXISTS
            (SELECT 1 FROM leases l WHERE l.exec_id = q.exec_id) ORDER BY q.due LIMIT 1),
       (SELECT min(q.due) FROM queue q JOIN leases l USING (exec_id)
            WHERE l.pid = %(pid)s AND l.start = %(start)s AND l.boot = %(boot)s),
       (SELECT min(expires) FROM leases),
       (SELECT array_agg(pid) FROM owners), (SELECT array_agg(start) FROM owners)"""
# the leases of dead owners of this host and those run out go; their executions back on
# the queue (at their own due time if they have one: a row there stays)
_RECOVER = """
WITH dead AS (DELETE FROM leases l USING unnest(%s::integer[], %s::bigint[]) AS d(pid, start)
              WHERE l.boot = %s AND l.pid = d.pid AND l.start = d.start RETURNING l.exec_id),
     expired AS (DELETE FROM leases WHERE expires <= %s RETURNING exec_id)
INSERT INTO queue SELECT id, %s FROM executions WHERE id = ANY(ARRAY(
    SELECT exec_id FROM dead UNION SELECT exec_id FROM expired)) ON CONFLICT DO NOTHING"""
# a claim: the owner's own due executions first (leased to it, parked; made due by a
# child that ended elsewhere): renewed; then free ones: leased to it (those a claim_one
# leased meanwhile are not inserted, and stay); all of them off the queue (by their keys:
# as a join, the planner read the whole queue)
_CLAIM = """
WITH mine AS (SELECT q.exec_id, q.due FROM queue q JOIN leases l USING (exec_id)
              WHERE l.pid = %(pid)s AND l.start = %(start)s AND l.boot = %(boot)s
                  AND q.due <= %(now)s
              ORDER BY q.due, q.exec_id LIMIT %(limit)s FOR UPDATE OF q SKIP LOCKED),
     renewed AS (UPDATE leases SET expires = %(expires)s, label = %(label)s
                 WHERE exec_id IN (SELECT exec_id FROM mine)),
     free AS (SELECT q.exec_id, q.due FROM queue q WHERE q.due <= %(now)s AND NOT EXISTS
                  (SELECT 1 FROM leases l WHERE l.exec_id = q.exec_id)
              ORDER BY q.due, q.exec_id LIMIT %(limit)s - (SELECT count(*) FROM mine)
              FOR UPDATE OF q SKIP LOCKED),
     taken AS (INSERT INTO leases SELECT exec_id, %(pid)s, %(start)s, %(boot)s,
                   %(label)s, %(expires)s FROM free ON CONFLICT DO NOTHING
               RETURNING exec_id),
     dequeued AS (DELETE FROM queue WHERE exec_id = ANY(ARRAY(
                  SELECT exec_id FROM mine UNION ALL SELECT exec_id FROM taken)))
SELECT exec_id FROM (SELECT exec_id, 0 AS k, due FROM mine UNION ALL
                     SELECT f.exec_id, 1, f.due FROM free f JOIN taken USING (exec_id)) AS c
ORDER BY k, due, exec_id"""

class _Refused(Exception):
    """claim_one: another live owner holds it (rolls the transaction back)."""

