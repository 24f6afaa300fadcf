"""The LMDB backend: executions, savepoints, pinned code, chunks, the run queue, leases and
settings in one LMDB environment that any number of processes on this machine share.

A savepoint is one LMDB put: its value carries the execution's state change
(records.STATE_FIELDS), so the two commit together and a savepoint costs about what a
bare put does (the common case runs compiled: engine._commit.try_commit).  put_execution
writes the whole record; the head is the record, updated with the newest savepoint's
state when that is newer.  Many threads use a store at once: writes go through the
environment's Writer, which commits the writes of threads that write at the same time in
one transaction (group commit), grows a full map and retries; every transaction passes
its Gate, so the map is resized only while none is open.  Claiming happens inside LMDB's
single write transaction, so two processes never claim the same execution.  The named
databases, their keys and the reading of records inside a transaction are
engine.store.lmdbtables; leases and claims engine.store.lmdbclaims; the data file's
checks and allocation engine.store.lmdbfile; `engine doctor` engine.store.check.
"""
import logging
import os
import threading
import time

import lmdb

from engine import _codec, _commit, signing
from engine.config import DURABILITIES, RETENTIONS, default_path
from engine.errors import CorruptSavepoint, SavepointError, StoreClosed
from engine.store import check as store_check, lmdbclaims, lmdbfile, lmdblisting, records
from engine.store.base import StoreProtocol, retention_error
from engine.store.lmdbtables import (DATABASES, U64, Tables, code_user_key, due_key,
                                     exec_code_key, exec_key, id_of, message_key,
                                     name_key,
                                     savepoint_key, shown, signal_key, with_prefix)

FORMAT = 2                   # 2: every value signed (engine.signing); 1 had checksums
_KEY_CHECK = b"savepoint-engine: the key this store is signed with"
# meta: set once the leases are indexed (lmdbtables' lease_owners, lease_expiry); a store
# of this format written before them is indexed when opened
_LEASES_INDEXED = b"leases-indexed"
# meta: set once the executions are in the listing indexes (engine.store.lmdblisting); a
# store written before them is indexed when opened
_LISTING_INDEXED = b"listing-indexed"
# records.py's savepoint layout, compiled: both commit paths seal and apply with it
LAYOUT = _commit.SavepointLayout(records.META_FIELDS, records.STATE_FIELDS)
_UNCHANGED = object()        # commit_savepoint: the due time stays as it is
log = logging.getLogger("engine.store")
# What this process remembers as pinned (LmdbStore._pinned_ids, read at every commit)
# covers at most this many executions; the oldest are forgotten first (they pin again).
PINNED_EXECUTIONS = 1024


# --- one environment per path and process ---------------------------------------------------

class _Environment:
    """One LMDB environment of this process (py-lmdb allows one per path and process: the
    stores on a path share it), with what its threads share: the Gate its transactions
    pass (its map is resized only while none is open) and the Writer its writes go
    through (writes made at the same time share one transaction)."""

    def __init__(self, path, env, dbs, durability, room):
        self.path, self.env, self.db, self.durability, self.room = \
            path, env, dbs, durability, room
        self.users = 0
        self.gate = _commit.Gate()
        self.writer = _commit.Writer(env, self.gate, self.grow, self.follow, self.failed)

    # grow, follow and make_room run with the gate closed (no transaction open): the
    # Writer closes it for its own; readers meeting MapResizedError close it (follow_now)

    def grow(self):
        """The map is full: double it."""
        lmdbfile.set_map(self.path, self.env, self.room, self.env.info()["map_size"] * 2)

    def follow(self):
        """Another process grew the map: follow it."""
        lmdbfile.set_map(self.path, self.env, self.room, 0)

    def follow_now(self):
        self.gate.exclusive(self.follow)

    def make_room(self):
        """Before a write, while the map another process grew is not allocated here."""
        self.gate.exclusive(lmdbfile.make_room, self.path, self.env, self.room)

    def failed(self, error):
        """What a write that met ``error`` raises: StoreFull for a full device, else
        None (the error itself)."""
        return lmdbfile.store_full(self.path, error) if isinstance(error, lmdb.Error) \
            else None


# real path -> _Environment; opened and closed under _ENVIRONMENTS_LOCK (threads may open
# stores on one path at once)
_ENVIRONMENTS: dict[str, _Environment] = {}
_ENVIRONMENTS_LOCK = threading.Lock()


def _open_environment(path, map_size, durability):
    with _ENVIRONMENTS_LOCK:
        return _open_environment_locked(path, map_size, durability)


def _open_environment_locked(path, map_size, durability):
    entry = _ENVIRONMENTS.get(path)
    if entry is None:
        # "sync" is LMDB's own: data pages are flushed before the meta page that makes
        # them current, so a power cut leaves either transaction, never a torn one.
        # "async" adds writemap: commits write into the shared map instead of pwrite()ing
        # each page (1.3 us instead of 7.5 us here).  LMDB warns against mixing processes
        # with and without writemap because msync and fsync may not see each other's
        # pages; Linux has one page cache for both, so sync and async engines may share
        # a store there.  (writemap's msync covers the whole map: slower for "sync".)
        # Before LMDB maps anything: a truncated or emptied data.mdb is refused, lock.mdb
        # allocated, and with writemap the map (engine.store.lmdbfile).
        sync = durability == "sync"
        found = lmdbfile.check_data_file(path)
        if found is not None:               # never below the file: see lmdbfile.set_map
            map_size = max(map_size, found[1], -(-found[2] // found[0]) * found[0])
        lmdbfile.allocate_lock_file(path)
        env, room = lmdbfile.open_lmdb(path, map_size, len(DATABASES), sync, found is None)
        try:
            with env.begin(write=True) as txn:    # one transaction for all of them
                dbs = {n: env.open_db(n.encode(), txn=txn) for n in DATABASES}
        except BaseException as e:
            env.close()
            full = lmdbfile.store_full(path, e) if isinstance(e, lmdb.Error) else None
            if full is None:
                raise
            raise full from None
        entry = _ENVIRONMENTS[path] = _Environment(path, env, dbs, durability, room)
    elif entry.durability != durability:
        raise ValueError(f"{path} is already open in this process with durability "
                         f"{entry.durability!r}; close that first to use {durability!r}")
    entry.users += 1
    return entry


def _forget_environments():
    """In a forked child: the parent's environments are not usable here (LMDB forbids
    it); forget them without closing, so the child opens its own."""
    global _ENVIRONMENTS_LOCK
    _ENVIRONMENTS.clear()
    _ENVIRONMENTS_LOCK = threading.Lock()     # another thread may have held it


os.register_at_fork(after_in_child=_forget_environments)


def _close_environment(path):
    with _ENVIRONMENTS_LOCK:
        entry = _ENVIRONMENTS.get(path)
        if entry is not None:
            entry.users -= 1
            if entry.users == 0:
                del _ENVIRONMENTS[path]
                entry.env.close()


# --- the store ------------------------------------------------------------------------------

class LmdbStore(StoreProtocol):
    """One LMDB environment (engine.store.base.StoreProtocol says what each method
    promises).  ``durability``: "sync" fsyncs every commit (survives power loss);
    "async" commits without fsync (survives a killed process, not an OS crash).
    ``env``, ``db`` (name -> database) and ``tables`` are LMDB-level access, for tests
    and engine doctor."""

    poll_seconds = 0.02     # no process can wake another: idle engines look this often

    def __init__(self, path=None, *, durability="sync", map_size=64 << 20):
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        self.path = os.path.realpath(path or default_path())
        self.durability = durability
        os.makedirs(self.path, exist_ok=True)
        self._environment = _open_environment(self.path, map_size, durability)
        self.env, self.db = self._environment.env, self._environment.db
        self._gate, self._writer = self._environment.gate, self._environment.writer
        self._room = self._environment.room
        self._savepoints = self.db["savepoints"]
        self._open = True
        self._code = {}             # fingerprint -> code object (verified when loaded)
        # What this process knows is pinned, by execution: forgotten when the execution is
        # released or deleted, and beyond PINNED_EXECUTIONS executions (_remember_pins).
        self._pinned = {}           # execution id -> fingerprints known recorded for it
        self._pinned_ids = {}       # execution id -> ids of its code objects known pinned
        self._keep = {}             # id -> [code object behind it, executions using it]
        self._pins_lock = threading.Lock()
        self._writes = 0
        try:
            self._reader_check()        # clear reader slots of dead processes
            meta = self.db["meta"]
            found = self._read(lambda txn: (txn.get(b"format", db=meta),
                                            txn.get(b"key-check", db=meta),
                                            txn.get(_LEASES_INDEXED, db=meta),
                                            txn.get(_LISTING_INDEXED, db=meta)))
            if found[0] is not None and found[0] != U64.pack(FORMAT):
                self._write(self._check_format)          # says which format it is
            # a new store makes its key; an existing one must find the key it was signed with
            self._signer = _codec.Signer(signing.store_key(self.path,
                                                           create=found[0] is None))
            self.tables = Tables(self.db, self._signer, LAYOUT)
            if found != (U64.pack(FORMAT), self._signer.tag(_KEY_CHECK), b"1", b"1"):
                self._write(self._check_format)
        except BaseException:
            self.close()
            raise

    def _check_format(self, txn):
        found = txn.get(b"format", db=self.db["meta"])
        if found is not None and found != U64.pack(FORMAT):
            raise SavepointError(f"{self.path} holds a savepoint-engine store of another "
                                 f"format ({bytes(found).hex()}; this engine reads format "
                                 f"{FORMAT})")
        check = self._signer.tag(_KEY_CHECK)
        if found is None:
            txn.put(b"format", U64.pack(FORMAT), db=self.db["meta"])
            txn.put(b"key-check", check, db=self.db["meta"])
            txn.put(_LEASES_INDEXED, b"1", db=self.db["meta"])
            txn.put(_LISTING_INDEXED, b"1", db=self.db["meta"])
        elif txn.get(b"key-check", db=self.db["meta"]) != check:
            raise SavepointError(f"{self.path} was signed with another key than this "
                                 f"process has ($ENGINE_SECRET_KEY, $ENGINE_SECRET_KEY_FILE "
                                 f"or {signing.KEY_FILE} beside it): its records cannot be "
                                 f"trusted here")
        if txn.get(_LEASES_INDEXED, db=self.db["meta"]) is None:
            # a store written before the lease indexes: index its leases (and take the
            # leased executions off the queue) once
            lmdbclaims.index_leases(self.tables, txn)
            txn.put(_LEASES_INDEXED, b"1", db=self.db["meta"])
        if txn.get(_LISTING_INDEXED, db=self.db["meta"]) is None:
            # a store written before the listing indexes: index its executions once
            lmdblisting.index_all(self.tables, txn, self._heads(txn))
            txn.put(_LISTING_INDEXED, b"1", db=self.db["meta"])

    def on_work(self, callback):
        """Nothing tells of new work here (base.StoreProtocol.on_work)."""
        return False

    def close(self):
        if self._open:
            self._open = False
            _close_environment(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transactions --
    # Many threads call the store at once.  Each transaction passes the environment's
    # Gate, so that the map is resized only while none is open (ext/commit/gate.pxi says
    # why py-lmdb needs that); each write goes through its Writer, which writes what
    # threads write at the same time in one transaction (ext/commit/writer.pxi).  While a
    # thread waits for LMDB's write lock it does not hold the GIL: py-lmdb (3.0,
    # lmdb/cpython.c trans_new) begins a write transaction inside ENV_UNLOCKED_WRITE_BEGIN,
    # Py_BEGIN_ALLOW_THREADS around mdb_txn_begin, and commits with the GIL released too.
    # The in-process caches: _code is filled with setdefault (a code object per
    # fingerprint, any will do); _pinned, _pinned_ids and _keep change under _pins_lock;
    # _writes only paces reader_check.
    def _write(self, work):
        """Run ``work(txn)`` in a write transaction and commit (with other threads'
        writes of the moment: ``work`` may run on another thread, and again); a full map
        is grown and the whole transaction retried, so nothing is lost.  A full device
        raises StoreFull, and nothing was written."""
        self._check_open()
        if self._room.short:
            self._environment.make_room()
        return self._writer.write(work)

    def _check_open(self):
        if not self._open:
            raise StoreClosed(f"the store at {self.path} is closed: open a new Engine")

    def _read(self, work):
        self._check_open()
        while True:
            try:
                return self._gate.read(self.env, work)
            except lmdb.MapResizedError:
                self._environment.follow_now()

    def _reader_check(self):
        """Clear the reader slots of dead processes."""
        self._gate.read(self.env, lambda txn: self.env.reader_check())

    # -- executions --
    def put_execution(self, execution):
        self._write(lambda txn: self.tables.put_execution(txn, execution))

    def add_execution(self, execution):
        def work(txn):
            exec_id = execution["id"]
            if txn.get(exec_key(exec_id), db=self.db["executions"]) is not None or \
                    self.tables.newest_savepoint(txn, exec_id) is not None:
                return False
            self.tables.put_execution(txn, execution)
            return True
        return self._write(work)

    def get_execution(self, exec_id):
        return self._read(lambda txn: self.tables.head(txn, exec_id))

    def ids_with_prefix(self, prefix, limit=2):
        start = prefix.encode()

        def scan(txn):
            if txn.get(start, db=self.db["executions"]) is not None:
                found = [prefix]
            else:
                found = []
            cursor = txn.cursor(db=self.db["executions"])
            if cursor.set_range(start):
                for key in cursor.iternext(values=False):
                    if not key.startswith(start) or len(found) >= limit:
                        break
                    if bytes(key) != start:
                        exec_id = id_of(key)
                        if exec_id is not None:
                            found.append(exec_id)
            return found
        return self._read(scan)

    def update_unless_leased(self, exec_id, change, now=None):
        now = time.time() if now is None else now

        def work(txn):
            head = self.tables.head(txn, exec_id)
            if head is None:
                return "missing", None
            lease = self.tables.lease(txn, exec_id)
            if lease is not None and lease.held(now):
                return "leased", head
            change(head)
            self.tables.drop_lease(txn, exec_id)     # a void one: its owner is gone
            self.tables.put_execution(txn, head)
            txn.delete(signal_key(exec_id), db=self.db["settings"])
            return "done", head
        return self._write(work)

    def wake_if(self, exec_id, wanted, now=None):
        now = time.time() if now is None else now

        def work(txn):
            head = self.tables.head(txn, exec_id)
            if head is None or not wanted(head):
                return False
            head["due"] = now
            self.tables.put_execution(txn, head)
            return True
        return self._write(work)

    # -- messages --
    def add_message(self, exec_id, topic, value, accept, now=None):
        now = time.time() if now is None else now
        sealed = self.tables.seal([topic, value, now])

        def work(txn):
            head = self.tables.head(txn, exec_id)
            if head is None:
                return "missing"
            wake = accept(head)                 # raises for an ended one: nothing written
            prefix = exec_key(exec_id) + b"\0"
            cursor = txn.cursor(db=self.db["messages"])
            # the execution's newest message: the entry before the first key past them
            found = cursor.prev() if cursor.set_range(prefix + b"\xff" * 8) \
                else cursor.last()
            last = 0
            if found and bytes(cursor.key()).startswith(prefix):
                last = U64.unpack(bytes(cursor.key())[len(prefix):])[0]
            txn.put(message_key(exec_id, last + 1), sealed, db=self.db["messages"])
            if wake:
                head["due"] = now
                self.tables.put_execution(txn, head)
                return "woke"
            return "sent"
        return self._write(work)

    def message(self, exec_id, topic, after=0):
        prefix = exec_key(exec_id) + b"\0"

        def scan(txn):
            cursor = txn.cursor(db=self.db["messages"])
            if not cursor.set_range(message_key(exec_id, after + 1)):
                return None
            for key, raw in cursor:
                if not key.startswith(prefix):
                    return None
                n = U64.unpack(bytes(key)[len(prefix):])[0]
                found = self.tables.unseal(raw, f"message {n} of execution {exec_id}")
                if found[0] == topic:
                    return n, found[1]
            return None
        return self._read(scan)

    def delete_unless_leased(self, exec_id, now=None):
        now = time.time() if now is None else now

        def work(txn):
            lease = self.tables.lease(txn, exec_id)
            if lease is not None and lease.held(now):
                return "leased"
            return "done" if self._delete_execution(txn, exec_id) else "missing"
        return self._write(work)

    def executions(self):
        return self._read(self._heads)

    def _heads(self, txn):
        """Every execution's head, in id order.  A key that is not an execution id (not
        UTF-8: damage) is passed over and logged; `engine doctor` reports it."""
        ids = []
        for key in txn.cursor(db=self.db["executions"]).iternext(values=False):
            exec_id = id_of(key)
            if exec_id is None:
                log.warning("executions: passed over a record whose key is not an "
                            "execution id (%s)", shown(key))
            else:
                ids.append(exec_id)
        return [self.tables.head(txn, exec_id) for exec_id in ids]

    def list_executions(self, status=None, flow=None, offset=0, limit=50):
        return self._read(lambda txn: lmdblisting.page(self.tables, txn, status, flow,
                                                       offset, limit))

    def status_counts(self):
        return self._read(lambda txn: lmdblisting.counts(self.db, txn))

    def children(self, exec_id):
        return self._read(lambda txn: lmdblisting.children(self.db, txn, exec_id))

    def delete_execution(self, exec_id):
        return self._write(lambda txn: self._delete_execution(txn, exec_id))

    def _delete_execution(self, txn, exec_id):
        if txn.get(exec_key(exec_id), db=self.db["executions"]) is None and \
                self.tables.newest_savepoint(txn, exec_id) is None:
            return False
        prefix = exec_key(exec_id) + b"\0"
        for key, raw in with_prefix(txn, self.db["savepoints"], prefix):
            try:
                tail = key[len(prefix):]
                seq = U64.unpack(tail)[0] if len(tail) == 8 else shown(tail)
                meta = records.meta_dict(self.tables.savepoint_value(raw, seq, exec_id)[0])
            except CorruptSavepoint:
                meta = {}             # a damaged savepoint goes all the same
            for digest in meta.get("chunks") or ():
                self.tables.unref_chunk(txn, digest)
            txn.delete(key, db=self.db["savepoints"])
        for name in ("names", "messages"):
            for key, _ in with_prefix(txn, self.db[name], prefix):
                txn.delete(key, db=self.db[name])
        self._unpin(txn, exec_id)
        self.tables.drop_lease(txn, exec_id, requeue=False)
        self.tables.schedule(txn, exec_id, None)
        lmdblisting.unlist(self.db, txn, exec_id)
        txn.delete(exec_key(exec_id), db=self.db["executions"])
        txn.delete(signal_key(exec_id), db=self.db["settings"])
        return True

    # -- savepoints --
    def commit_savepoint(self, execution, meta, record, codes=(), chunks=None, *,
                         retention="all"):
        if retention not in RETENTIONS:
            raise retention_error(retention)
        if self._room.short:
            self._environment.make_room()
        seq = _commit.try_commit(LAYOUT, self._writer, self._savepoints, self._pinned_ids,
                                 execution, meta, record, codes, chunks, retention,
                                 self._signer)
        if seq is not None:
            return seq
        version = _commit.version_after(execution)
        exec_id = execution["id"]
        chunk_list = list(chunks) if chunks else []
        previous = execution.get("last_implicit")
        # encode outside the write transaction: it holds the lock of every process
        sealed, seq, state = LAYOUT.seal(execution, meta, record, chunk_list, version,
                                         self._signer)
        name = meta.get("name")
        # the queue changes only when this commit changes the due time
        due = execution.get("due")
        reschedule = "_due_written" not in execution or execution["_due_written"] != due
        drop = retention == "last" and previous and meta.get("kind") == "implicit"
        known = self._pinned_ids.get(exec_id)
        new_codes = [code for code in codes if known is None or id(code) not in known]
        # the listing follows the status the savepoint carries (the compiled path runs
        # only while it is the status this process last wrote)
        listed = {f: execution.get(f) for f in ("id", "status", "flow", "created_at",
                                                "parent")}
        self._commit_slow(exec_id, savepoint_key(exec_id, seq), sealed, seq, name,
                          new_codes, chunks, previous if drop else None,
                          execution.get("last_implicit_chunks"),
                          due if reschedule else _UNCHANGED, listed)
        LAYOUT.apply(execution, state)
        execution["_due_written"] = due
        execution["_status_written"] = listed["status"]
        return seq

    def _commit_slow(self, exec_id, sp_key, sealed, seq, name, new_codes, chunks, drop,
                     drop_chunks, due, listed):
        """commit_savepoint when it pins code, stores chunks or a name, drops the previous
        savepoint, moves the execution on the queue or changes its status (``listed``:
        what the listing indexes take from the execution)."""
        db, tables = self.db, self.tables

        def work(txn):
            pinned = self._pin(txn, exec_id, new_codes) if new_codes else ()
            if chunks:
                for digest, blob in chunks.items():
                    tables.ref_chunk(txn, digest, blob)
            txn.put(sp_key, sealed, db=db["savepoints"])
            if name is not None:
                txn.put(name_key(exec_id, name), U64.pack(seq), db=db["names"])
            if drop:
                tables.drop_savepoint(txn, exec_id, drop, drop_chunks)
            if due is not _UNCHANGED:
                tables.schedule(txn, exec_id, due)
            lmdblisting.keep_listed(db, txn, listed)
            return pinned

        pinned = self._write(work)
        if new_codes:                             # once committed: a retry redoes it
            self._remember_pins(exec_id, pinned, new_codes)

    def savepoints(self, exec_id):
        prefix = exec_key(exec_id) + b"\0"

        def scan(txn):
            found = []
            for key, raw in with_prefix(txn, self.db["savepoints"], prefix):
                if len(key) != len(prefix) + 8:
                    continue                     # no savepoint key (engine doctor says)
                seq = U64.unpack(key[len(prefix):])[0]
                try:
                    meta = self.tables.savepoint_value(raw, seq, exec_id)[0]
                    found.append(records.meta_dict(meta))
                except CorruptSavepoint as e:
                    found.append(records.damaged_meta(seq, len(raw), str(e)))
            return found
        return self._read(scan)

    def savepoint_page(self, exec_id, offset=0, limit=100, newest=True):
        return self._read(lambda txn: lmdblisting.savepoint_page(self.tables, txn, exec_id,
                                                                 offset, limit, newest))

    def savepoint(self, exec_id, seq):
        try:
            raw = self._gate.get(self.env, self._savepoints, savepoint_key(exec_id, seq))
        except lmdb.MapResizedError:
            self._environment.follow_now()
            return self.savepoint(exec_id, seq)
        if raw is None:
            return None
        meta, record, _ = self.tables.unseal(raw, f"savepoint {seq} of execution {exec_id}")
        return records.meta_dict(meta), record

    def seq_of(self, exec_id, name):
        raw = self._read(lambda txn: txn.get(name_key(exec_id, name), db=self.db["names"]))
        if raw is not None and len(raw) != 8:
            raise CorruptSavepoint(f"the savepoint name {name!r} of execution {exec_id} is "
                                   f"damaged (engine doctor --repair deletes it)")
        return None if raw is None else U64.unpack(raw)[0]

    # -- pinned code and chunks --
    def code(self, digest):
        code = self._code.get(digest)
        if code is None:
            blob = self._read(lambda txn: txn.get(digest, db=self.db["code"]))
            if blob is None:
                return None
            data = self.tables.unseal(blob, f"pinned code {digest.hex()}")
            code = self._code.setdefault(digest, _codec.decode_code(data, digest))
        return code

    def chunk(self, digest):
        raw = self._read(lambda txn: txn.get(digest, db=self.db["chunks"]))
        return None if raw is None else self.tables.unseal(raw, f"chunk {digest.hex()}")

    def _pin(self, txn, exec_id, codes):
        """Store each code object once, and note that this execution uses it."""
        pinned = []
        known = self._pinned.get(exec_id, ())
        for code in codes:
            digest = _codec.fingerprint(code)
            if digest in known:
                continue
            if txn.get(digest, db=self.db["code"]) is None:
                txn.put(digest, self.tables.seal(_codec.encode_code(code)),
                        db=self.db["code"])
            txn.put(code_user_key(digest, exec_id), b"", db=self.db["code_users"])
            txn.put(exec_code_key(exec_id, digest), b"", db=self.db["exec_codes"])
            self._code.setdefault(digest, code)
            pinned.append((digest, exec_id))
        return pinned

    def _unpin(self, txn, exec_id):
        """Forget this execution's use of code; delete code no execution uses."""
        users, by_exec = self.db["code_users"], self.db["exec_codes"]
        prefix = exec_key(exec_id) + b"\0"
        self.forget_pins(exec_id)
        for key, _ in with_prefix(txn, by_exec, prefix):
            digest = key[len(prefix):]
            txn.delete(key, db=by_exec)
            txn.delete(code_user_key(digest, exec_id), db=users)
            cursor = txn.cursor(db=users)
            if not (cursor.set_range(digest) and bytes(cursor.key()).startswith(digest)):
                txn.delete(digest, db=self.db["code"])
                self._code.pop(digest, None)

    def _remember_pins(self, exec_id, pinned, codes):
        """After a commit that pinned ``codes`` for the execution: remember it, so its
        next commits take the one-put path (_commit.try_commit reads _pinned_ids).  The
        execution counted first is forgotten beyond PINNED_EXECUTIONS."""
        with self._pins_lock:
            ids = self._pinned_ids.get(exec_id)
            if ids is None:
                while len(self._pinned_ids) >= PINNED_EXECUTIONS:
                    self._forget_pins_locked(next(iter(self._pinned_ids)))
                ids = self._pinned_ids[exec_id] = set()
            self._pinned.setdefault(exec_id, set()).update(d for d, _ in pinned)
            for code in codes:
                key = id(code)
                if key not in ids:
                    ids.add(key)
                    kept = self._keep.get(key)
                    if kept is None:
                        self._keep[key] = [code, 1]   # keeps the id valid while counted
                    else:
                        kept[1] += 1

    def forget_pins(self, exec_id):
        """Forget what this process knows is pinned for the execution (it was released
        or deleted): its next commit, if any, pins again.  Keeps the caches bounded."""
        with self._pins_lock:
            self._forget_pins_locked(exec_id)

    def _forget_pins_locked(self, exec_id):
        self._pinned.pop(exec_id, None)
        for key in self._pinned_ids.pop(exec_id, ()):
            kept = self._keep.get(key)
            if kept is not None:
                kept[1] -= 1
                if kept[1] <= 0:
                    del self._keep[key]

    # -- run queue and leases --
    def lease(self, exec_id):
        return self._read(lambda txn: self.tables.lease(txn, exec_id))

    def claim(self, owner, *, lease_seconds=30.0, now=None):
        taken = self.claim_many(owner, 1, lease_seconds=lease_seconds, now=now)
        return taken[0] if taken else None

    def claim_many(self, owner, limit, *, lease_seconds=30.0, now=None):
        # a read-only look first: an idle worker's claim takes no write lock
        now = time.time() if now is None else now
        alive = {}
        due = self._read(lambda txn: lmdbclaims.next_due(self.tables, txn, now, alive,
                                                         owner))
        if due is None or due > now or limit <= 0:
            return []
        self._writes += 1                 # (not exact under threads: it only paces this)
        if self._writes % 64 == 1:
            self._reader_check()
        return self._write(lambda txn: lmdbclaims.claim_many(
            self.tables, txn, owner, limit, now + lease_seconds, now, alive))

    def next_due(self, now=None, *, owner=None):
        now = time.time() if now is None else now
        return self._read(lambda txn: lmdbclaims.next_due(self.tables, txn, now, {}, owner))

    def claim_one(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        now = time.time() if now is None else now

        def work(txn):
            if txn.get(exec_key(exec_id), db=self.db["executions"]) is None:
                return False
            lease = self.tables.lease(txn, exec_id)
            if lease is not None and lease.owner != owner and lease.held(now):
                return False
            self.tables.schedule(txn, exec_id, None)
            self.tables.put_lease(txn, exec_id, owner, now + lease_seconds)
            return True
        return self._write(work)

    def renew(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        return exec_id in self.renew_many((exec_id,), owner, lease_seconds=lease_seconds,
                                          now=now)

    def renew_many(self, exec_ids, owner, *, lease_seconds=30.0, now=None):
        now = time.time() if now is None else now
        exec_ids = list(exec_ids)
        return self._write(lambda txn: lmdbclaims.renew_many(
            self.tables, txn, exec_ids, owner, now + lease_seconds, now))

    def release(self, exec_id, owner, execution=None):
        def work(txn):
            lease = self.tables.lease(txn, exec_id)
            if lease is not None and lease.owner == owner:
                self.tables.drop_lease(txn, exec_id)
            if execution is not None:
                self.tables.put_execution(txn, execution)
        self._write(work)
        self.forget_pins(exec_id)             # keeps this process's caches bounded

    def queue_depth(self, now=None):
        limit = due_key(time.time() if now is None else now)

        def count(txn):
            n = 0
            for key in txn.cursor(db=self.db["queue"]).iternext(values=False):
                if bytes(key[:8]) > limit:
                    break
                n += 1
            return n
        return self._read(count)

    # -- settings --
    def get_setting(self, name, default=None):
        raw = self._read(lambda txn: txn.get(name.encode(), db=self.db["settings"]))
        return default if raw is None else self.tables.unseal(raw, f"setting {name!r}")

    def set_setting(self, name, value):
        sealed = self.tables.seal(value)
        self._write(lambda txn: txn.put(name.encode(), sealed, db=self.db["settings"]))

    def settings(self, prefix="", damaged=None):
        start = prefix.encode()

        def scan(txn):
            found = {}
            for key, raw in with_prefix(txn, self.db["settings"], start):
                try:
                    name = key.decode()
                    found[name] = self.tables.unseal(raw, f"setting {name!r}")
                except UnicodeDecodeError:
                    log.warning("settings: left out one whose name is not UTF-8 (%s)",
                                shown(key))
                except CorruptSavepoint as e:
                    if damaged is None:
                        log.warning("settings: left out: %s", e)
                    else:
                        damaged[name] = e
            return found
        return self._read(scan)

    def delete_setting(self, name):
        self._write(lambda txn: txn.delete(name.encode(), db=self.db["settings"]))

    def size(self):
        """Bytes in use by the environment's pages."""
        info, stat = self._read(lambda txn: (self.env.info(), self.env.stat()))
        return (info["last_pgno"] + 1) * stat["psize"]

    # -- engine doctor --
    def check(self, repair=False):
        # engine.store.check says what is checked and how it is repaired
        def work(txn):
            return store_check.check(self.tables, txn, repair)
        return self._write(work) if repair else self._read(work)
