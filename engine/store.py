"""The LMDB store: executions, savepoints, pinned code, chunks, the run queue, leases and
settings, in one LMDB environment that any number of processes on this machine share.

Every value carries an XXH64 checksum (engine._codec.checksum) in front of it; a damaged
record raises CorruptSavepoint naming what it belonged to, and every other record stays
readable.  Writes go through one helper that grows a full map and retries.  Claiming an
execution happens inside LMDB's single write transaction, so two processes never claim the
same one; a lease names its owner by pid, process start time and boot id, so a dead owner
(even one whose pid was reused) is noticed at once and a hung one when its lease expires.

An execution is written in two places: put_execution writes the whole dict to
`executions`; commit_savepoint writes its STATE_FIELDS *inside the savepoint* -- one put
per savepoint, so a savepoint costs about what a bare LMDB put does, and a savepoint and
the state change that comes with it are one value.  The current execution (the head) is
the record, updated with the newest savepoint's state when that is newer (a version
stamp: nanoseconds, never decreasing for one execution).

Named databases (keys -> values):
    executions   id -> execution dict                       (sealed msgpack)
    savepoints   id NUL seq -> [meta, record, state]         (sealed msgpack; meta and
                                                             state as lists in
                                                             META_FIELDS/STATE_FIELDS
                                                             order)
    names        id NUL name -> seq                          (u64)
    code         fingerprint -> engine._codec.encode_code    (self-checking)
    code_users   fingerprint id -> ""                        (which executions pin it)
    exec_codes   id NUL fingerprint -> ""                    (the same, by execution)
    chunks       hash -> bytes                               (checked against the hash)
    chunk_refs   hash -> count                               (u64)
    queue        due id -> ""                                (due: u64 microseconds)
    due          id -> due                                   (u64; where its queue key is)
    leases       id -> [pid, start, boot, expires, label]    (sealed msgpack)
    settings     name -> value                               (sealed msgpack)
    meta         b"format" -> format version
"""
import os
import struct
import time

import lmdb

from engine import _codec, _commit
from engine.config import DURABILITIES, RETENTIONS, default_path
from engine.errors import CorruptSavepoint, SavepointError

FORMAT = 1
_U64 = struct.Struct(">Q")
# What a savepoint stores about itself (the codec lays the savepoint value out).
META_FIELDS = _codec.META_FIELDS
_DBS = ("executions", "savepoints", "names", "code", "code_users", "exec_codes", "chunks",
        "chunk_refs", "queue", "due", "leases", "settings", "meta")


def retention_error(value):
    """The ValueError for a savepoint_retention that is not one of RETENTIONS."""
    return ValueError(f"savepoint_retention must be one of {RETENTIONS}, not {value!r}")


_UNCHANGED = object()        # commit_savepoint: the due time stays as it is
_seal = _codec.seal          # checksum + msgpack
_unseal = _codec.unseal


def _with_prefix(txn, db, prefix):
    """[(key, value)] of every entry whose key starts with ``prefix`` (copied, so the
    caller may delete them as it goes)."""
    cursor = txn.cursor(db=db)
    found = []
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            found.append((bytes(key), value))
    return found


def _meta(fields):
    return dict(zip(META_FIELDS, fields))


def _key(exec_id):
    return exec_id.encode()


def _sp_key(exec_id, seq):
    return exec_id.encode() + b"\0" + _U64.pack(seq)


def _name_key(exec_id, name):
    return exec_id.encode() + b"\0" + name.encode()


# --- process identity ---------------------------------------------------------------------

def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


_BOOT_ID = _boot_id()


def _start_time(pid):
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22),
    or None if there is no such live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):            # exited, not yet reaped: dead all the same
        return None
    return int(fields[19])


class Owner:
    """A process that holds leases: pid, start time and boot id, so that a pid reused by
    another process after the owner died is not mistaken for the owner."""
    __slots__ = ("pid", "start", "boot", "label")

    def __init__(self, pid, start, boot, label=""):
        self.pid, self.start, self.boot, self.label = pid, start, boot, label

    @classmethod
    def current(cls, label=""):
        pid = os.getpid()
        return cls(pid, _start_time(pid), _BOOT_ID, label)

    def alive(self):
        """Whether the owner still runs (on this machine, since the same boot)."""
        return self.boot == _BOOT_ID and _start_time(self.pid) == self.start

    def __eq__(self, other):
        return isinstance(other, Owner) and (self.pid, self.start, self.boot) == (
            other.pid, other.start, other.boot)

    def __hash__(self):
        return hash((self.pid, self.start, self.boot))

    def __repr__(self):
        return f"Owner(pid={self.pid}, start={self.start}, label={self.label!r})"


class Lease:
    __slots__ = ("owner", "expires")

    def __init__(self, owner, expires):
        self.owner, self.expires = owner, expires

    def held(self, now):
        """Held: the owner is alive and the lease has not run out."""
        return self.expires > now and self.owner.alive()

    def __repr__(self):
        return f"Lease({self.owner!r}, expires={self.expires})"


# --- the store ------------------------------------------------------------------------------

# py-lmdb allows one Environment per path and process: Stores on the same path share it.
# real path -> [Environment, {name: db}, users, durability]
_ENVIRONMENTS: dict[str, list] = {}


def _open_environment(path, map_size, durability):
    entry = _ENVIRONMENTS.get(path)
    if entry is None:
        # "sync" is LMDB's own: data pages are flushed before the meta page that makes
        # them current, so a power cut leaves either transaction, never a torn one.
        # "async" adds writemap: commits write into the shared map instead of pwrite()ing
        # each page (1.3 us instead of 7.5 us here).  LMDB warns against mixing processes
        # with and without writemap because msync and fsync may not see each other's
        # pages; Linux has one page cache for both, so sync and async engines may share
        # a store there.  (writemap's msync covers the whole map: slower for "sync".)
        sync = durability == "sync"
        env = lmdb.open(path, map_size=map_size, max_dbs=len(_DBS), sync=sync,
                        metasync=sync, writemap=not sync, max_readers=1024)
        with env.begin(write=True) as txn:    # one transaction for all of them
            dbs = {n: env.open_db(n.encode(), txn=txn) for n in _DBS}
        entry = _ENVIRONMENTS[path] = [env, dbs, 0, durability]
    elif entry[3] != durability:
        raise ValueError(f"{path} is already open in this process with durability "
                         f"{entry[3]!r}; close that first to use {durability!r}")
    entry[2] += 1
    return entry[0], entry[1]


def _forget_environments():
    """In a forked child: the parent's environments are not usable here (LMDB forbids
    it); forget them without closing, so the child opens its own."""
    _ENVIRONMENTS.clear()


os.register_at_fork(after_in_child=_forget_environments)


def _close_environment(path):
    entry = _ENVIRONMENTS.get(path)
    if entry is not None:
        entry[2] -= 1
        if entry[2] == 0:
            del _ENVIRONMENTS[path]
            entry[0].close()


class Store:
    """One LMDB environment.  ``durability``: "sync" fsyncs every commit (survives power
    loss); "async" commits without fsync (survives a killed process, not an OS crash)."""

    def __init__(self, path=None, *, durability="sync", map_size=64 << 20):
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        self.path = os.path.realpath(path or default_path())
        self.durability = durability
        os.makedirs(self.path, exist_ok=True)
        self.env, self.db = _open_environment(self.path, map_size, durability)
        self._savepoints = self.db["savepoints"]
        self._open = True
        self._code = {}             # fingerprint -> code object (verified when loaded)
        self._pinned = set()        # (fingerprint, execution id) known to be recorded
        self._pinned_ids = {}       # execution id -> ids of its code objects known pinned
        self._keep = {}             # id -> code object behind those ids
        self._writes = 0
        try:
            self.env.reader_check()     # clear reader slots of dead processes
            found = self._read(lambda txn: txn.get(b"format", db=self.db["meta"]))
            if found is None or bytes(found) != _U64.pack(FORMAT):
                self._write(self._check_format)
        except BaseException:
            self.close()
            raise

    def _check_format(self, txn):
        found = txn.get(b"format", db=self.db["meta"])
        if found is None:
            txn.put(b"format", _U64.pack(FORMAT), db=self.db["meta"])
        elif found != _U64.pack(FORMAT):
            raise SavepointError(f"{self.path} holds a savepoint-engine store of another "
                                 f"format ({bytes(found).hex()})")

    def close(self):
        if self._open:
            self._open = False
            _close_environment(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transactions --
    def _write(self, work):
        """Run ``work(txn)`` in a write transaction and commit; a full map is grown and
        the whole transaction retried, so nothing is lost."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except lmdb.MapResizedError:          # another process grew it
                self.env.set_mapsize(0)

    def _read(self, work):
        while True:
            try:
                with self.env.begin() as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)

    # -- executions --
    def _get_execution(self, txn, exec_id):
        """The execution's head: the newer of its record and its latest savepoint's."""
        raw = txn.get(_key(exec_id), db=self.db["executions"])
        head = None if raw is None else _unseal(raw, f"execution {exec_id}")
        latest = self._latest_savepoint(txn, exec_id)
        if latest is not None:
            seq, raw = latest
            state = _unseal(raw, f"savepoint {seq} of execution {exec_id}")[2]
            if head is None:
                head = {"id": exec_id}
            if state[0] > head.get("version", 0):
                _codec.apply_state(head, state)
        return head

    def _latest_savepoint(self, txn, exec_id):
        """(seq, raw value) of the execution's newest savepoint, or None."""
        prefix = _key(exec_id) + b"\0"
        cursor = txn.cursor(db=self.db["savepoints"])
        if cursor.set_range(prefix + b"\xff" * 8):
            if not cursor.prev():
                return None
        elif not cursor.last():
            return None
        key = cursor.key()
        if not key.startswith(prefix):
            return None
        return _U64.unpack(key[len(prefix):])[0], cursor.value()

    def _put_execution(self, txn, execution):
        execution["version"] = _commit.version_after(execution)
        exec_id = execution["id"]
        execution.pop("_due_written", None)        # this process's note, not stored
        txn.put(_key(exec_id), _seal(execution), db=self.db["executions"])
        self._schedule(txn, exec_id, execution.get("due"))

    def _schedule(self, txn, exec_id, due):
        """Keep the run queue in step with the execution's due time (None: not runnable)."""
        key = _key(exec_id)
        old = txn.get(key, db=self.db["due"])
        new = None if due is None else _U64.pack(max(0, int(due * 1_000_000)))
        if old == new:
            return
        if old is not None:
            txn.delete(bytes(old) + key, db=self.db["queue"])
            txn.delete(key, db=self.db["due"])
        if new is not None:
            txn.put(new + key, b"", db=self.db["queue"])
            txn.put(key, new, db=self.db["due"])

    def put_execution(self, execution):
        """Create or replace an execution (a dict with at least "id"); its "due" (a UNIX
        time, or None) puts it on the run queue or takes it off.  Sets its "version"."""
        self._write(lambda txn: self._put_execution(txn, execution))

    def get_execution(self, exec_id):
        return self._read(lambda txn: self._get_execution(txn, exec_id))

    def ids_with_prefix(self, prefix, limit=2):
        """Up to ``limit`` execution ids that start with ``prefix`` (the exact id, if
        there is one, comes first)."""
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
                        found.append(bytes(key).decode())
            return found
        return self._read(scan)

    def update_unless_leased(self, exec_id, change, now=None):
        """In one write transaction: unless a live owner leases the execution, apply
        ``change(head)`` (which may raise: then nothing is written) and store the head.
        Returns ("missing", None), ("leased", head) or ("done", head)."""
        now = time.time() if now is None else now

        def work(txn):
            head = self._get_execution(txn, exec_id)
            if head is None:
                return "missing", None
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.held(now):
                return "leased", head
            change(head)
            self._put_execution(txn, head)
            txn.delete(b"signal:" + _key(exec_id), db=self.db["settings"])
            return "done", head
        return self._write(work)

    def delete_unless_leased(self, exec_id, now=None):
        """delete_execution, unless a live owner leases it: "missing", "leased" or
        "done"."""
        now = time.time() if now is None else now

        def work(txn):
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.held(now):
                return "leased"
            return "done" if self._delete_execution(txn, exec_id) else "missing"
        return self._write(work)

    def executions(self):
        """Every execution's head, in id order."""
        def scan(txn):
            ids = [bytes(key).decode() for key in
                   txn.cursor(db=self.db["executions"]).iternext(values=False)]
            return [self._get_execution(txn, exec_id) for exec_id in ids]
        return self._read(scan)

    # -- savepoints --
    def commit_savepoint(self, execution, meta, record, codes=(), chunks=None, *,
                         retention="all"):
        """Store a savepoint and the execution's new state in one transaction: never a
        savepoint without its execution, never an execution pointing at a missing
        savepoint.  ``meta`` describes it (kind "implicit"/"explicit", name, ...);
        ``codes`` are the code objects the record refers to, pinned here; ``chunks``
        ({hash: bytes}) the big values cut out of it.  With retention "last", the
        execution's previous implicit savepoint goes.  Returns the savepoint's seq."""
        if retention not in RETENTIONS:
            raise retention_error(retention)
        try:
            seq = _commit.try_commit(self.env, self._savepoints, self._pinned_ids,
                                     execution, meta, record, codes, chunks, retention)
        except (lmdb.MapFullError, lmdb.MapResizedError):
            seq = None
        if seq is not None:
            return seq
        version = _commit.version_after(execution)
        exec_id = execution["id"]
        chunk_list = list(chunks) if chunks else []
        previous = execution.get("last_implicit")
        # encode outside the write transaction: it holds the lock of every process
        sealed, seq, state = _codec.seal_savepoint(execution, meta, record, chunk_list,
                                                   version)
        name = meta.get("name")
        # the queue changes only when this commit changes the due time
        due = execution.get("due")
        reschedule = "_due_written" not in execution or execution["_due_written"] != due
        drop = retention == "last" and previous and meta.get("kind") == "implicit"
        known = self._pinned_ids.get(exec_id)
        new_codes = [code for code in codes if known is None or id(code) not in known]
        self._commit_slow(exec_id, _sp_key(exec_id, seq), sealed, seq, name, new_codes,
                          chunks, previous if drop else None,
                          execution.get("last_implicit_chunks"),
                          due if reschedule else _UNCHANGED)
        _codec.apply_state(execution, state)
        execution["_due_written"] = due
        return seq

    def _commit_slow(self, exec_id, sp_key, sealed, seq, name, new_codes, chunks, drop,
                     drop_chunks, due):
        """commit_savepoint when it pins code, stores chunks or a name, drops the previous
        savepoint or moves the execution on the queue."""
        db = self.db

        def work(txn):
            pinned = self._pin(txn, exec_id, new_codes) if new_codes else ()
            if chunks:
                for digest, blob in chunks.items():
                    self._ref_chunk(txn, digest, blob)
            txn.put(sp_key, sealed, db=db["savepoints"])
            if name is not None:
                txn.put(_name_key(exec_id, name), _U64.pack(seq), db=db["names"])
            if drop:
                self._drop_savepoint(txn, exec_id, drop, drop_chunks)
            if due is not _UNCHANGED:
                self._schedule(txn, exec_id, due)
            return pinned

        pinned = self._write(work)
        if pinned:                                # once committed: a retry redoes it
            self._pinned.update(pinned)
            ids = self._pinned_ids.setdefault(exec_id, set())
            for code in new_codes:
                ids.add(id(code))
                self._keep[id(code)] = code       # keeps the id valid

    def _pin(self, txn, exec_id, codes):
        """Store each code object once, and note that this execution uses it."""
        pinned = []
        for code in codes:
            digest = _codec.fingerprint(code)
            if (digest, exec_id) in self._pinned:
                continue
            if txn.get(digest, db=self.db["code"]) is None:
                txn.put(digest, _codec.encode_code(code), db=self.db["code"])
            txn.put(digest + _key(exec_id), b"", db=self.db["code_users"])
            txn.put(_key(exec_id) + b"\0" + digest, b"", db=self.db["exec_codes"])
            self._code.setdefault(digest, code)
            pinned.append((digest, exec_id))
        return pinned

    def _ref_chunk(self, txn, digest, blob):
        count = txn.get(digest, db=self.db["chunk_refs"])
        if count is None:
            txn.put(digest, blob, db=self.db["chunks"])
            txn.put(digest, _U64.pack(1), db=self.db["chunk_refs"])
        else:
            txn.put(digest, _U64.pack(_U64.unpack(count)[0] + 1), db=self.db["chunk_refs"])

    def _unref_chunk(self, txn, digest):
        count = txn.get(digest, db=self.db["chunk_refs"])
        if count is None:
            return
        left = _U64.unpack(count)[0] - 1
        if left <= 0:
            txn.delete(digest, db=self.db["chunk_refs"])
            txn.delete(digest, db=self.db["chunks"])
        else:
            txn.put(digest, _U64.pack(left), db=self.db["chunk_refs"])

    def _drop_savepoint(self, txn, exec_id, seq, chunks=None):
        key = _sp_key(exec_id, seq)
        if chunks is None:
            raw = txn.get(key, db=self.db["savepoints"])
            if raw is None:
                return
            meta = _meta(_unseal(raw, f"savepoint {seq} of execution {exec_id}")[0])
            chunks = meta.get("chunks") or ()
            if meta.get("name") is not None:
                txn.delete(_name_key(exec_id, meta["name"]), db=self.db["names"])
        for digest in chunks:
            self._unref_chunk(txn, digest)
        txn.delete(key, db=self.db["savepoints"])

    def savepoints(self, exec_id):
        """The execution's savepoints' meta dicts, oldest first."""
        prefix = _key(exec_id) + b"\0"

        def scan(txn):
            return [_meta(_unseal(raw, f"savepoint {_U64.unpack(key[len(prefix):])[0]} "
                                       f"of execution {exec_id}")[0])
                    for key, raw in _with_prefix(txn, self.db["savepoints"], prefix)]
        return self._read(scan)

    def savepoint(self, exec_id, seq):
        """(meta, record) of one savepoint, or None."""
        try:
            with self.env.begin() as txn:
                raw = txn.get(_sp_key(exec_id, seq), db=self._savepoints)
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)
            return self.savepoint(exec_id, seq)
        if raw is None:
            return None
        meta, record, _ = _unseal(raw, f"savepoint {seq} of execution {exec_id}")
        return _meta(meta), record

    def seq_of(self, exec_id, name):
        """The seq of the execution's savepoint called ``name``, or None."""
        raw = self._read(lambda txn: txn.get(_name_key(exec_id, name), db=self.db["names"]))
        return None if raw is None else _U64.unpack(raw)[0]

    def code(self, digest):
        """The pinned code object with this fingerprint (verified), or None."""
        code = self._code.get(digest)
        if code is None:
            blob = self._read(lambda txn: txn.get(digest, db=self.db["code"]))
            if blob is None:
                return None
            code = self._code.setdefault(digest, _codec.decode_code(bytes(blob), digest))
        return code

    def codes_for(self, record):
        """{fingerprint: code} for every code a savepoint record needs."""
        out = {}
        for module, qualname, digest in _codec.read_header(record):
            code = self.code(digest)
            if code is None:
                raise CorruptSavepoint(f"savepoint needs code {module}.{qualname} "
                                       f"({digest.hex()}), which the store does not hold")
            out[digest] = code
        return out

    def chunk(self, digest):
        """A chunk's bytes, or None (decode_snapshot checks them against the hash)."""
        raw = self._read(lambda txn: txn.get(digest, db=self.db["chunks"]))
        return None if raw is None else bytes(raw)

    def delete_execution(self, exec_id):
        """Delete the execution, all its savepoints and names, its queue entry and lease,
        in one transaction; collect code and chunks nothing uses any more."""
        return self._write(lambda txn: self._delete_execution(txn, exec_id))

    def _delete_execution(self, txn, exec_id):
        if txn.get(_key(exec_id), db=self.db["executions"]) is None and \
                self._latest_savepoint(txn, exec_id) is None:
            return False
        prefix = _key(exec_id) + b"\0"
        for key, raw in _with_prefix(txn, self.db["savepoints"], prefix):
            try:
                meta = _meta(_unseal(raw, "savepoint")[0])
            except CorruptSavepoint:
                meta = {}             # a damaged savepoint goes all the same
            for digest in meta.get("chunks") or ():
                self._unref_chunk(txn, digest)
            txn.delete(key, db=self.db["savepoints"])
        for key, _ in _with_prefix(txn, self.db["names"], prefix):
            txn.delete(key, db=self.db["names"])
        self._unpin(txn, exec_id)
        self._schedule(txn, exec_id, None)
        txn.delete(_key(exec_id), db=self.db["leases"])
        txn.delete(_key(exec_id), db=self.db["executions"])
        txn.delete(b"signal:" + _key(exec_id), db=self.db["settings"])
        return True

    def _unpin(self, txn, exec_id):
        """Forget this execution's use of code; delete code no execution uses."""
        users, by_exec = self.db["code_users"], self.db["exec_codes"]
        prefix = _key(exec_id) + b"\0"
        self._pinned_ids.pop(exec_id, None)
        for key, _ in _with_prefix(txn, by_exec, prefix):
            digest = key[len(prefix):]
            txn.delete(key, db=by_exec)
            txn.delete(digest + _key(exec_id), db=users)
            self._pinned.discard((digest, exec_id))
            cursor = txn.cursor(db=users)
            if not (cursor.set_range(digest) and bytes(cursor.key()).startswith(digest)):
                txn.delete(digest, db=self.db["code"])
                self._code.pop(digest, None)

    # -- run queue and leases --
    def _lease(self, txn, exec_id):
        raw = txn.get(_key(exec_id), db=self.db["leases"])
        if raw is None:
            return None
        pid, start, boot, expires, label = _unseal(raw, f"lease of execution {exec_id}")
        return Lease(Owner(pid, start, boot, label), expires)

    def _put_lease(self, txn, exec_id, owner, expires):
        txn.put(_key(exec_id), _seal([owner.pid, owner.start, owner.boot, expires,
                                      owner.label]), db=self.db["leases"])

    def lease(self, exec_id):
        return self._read(lambda txn: self._lease(txn, exec_id))

    def claim(self, owner, *, lease_seconds=30.0, now=None):
        """Atomically take the earliest runnable execution that is due and not leased to
        a live owner; lease it to ``owner`` and return its id, or None.  Executions whose
        owner died (or whose lease ran out) become runnable again first."""
        now = time.time() if now is None else now
        self._writes += 1
        if self._writes % 64 == 1:
            self.env.reader_check()

        def work(txn):
            self._recover(txn, now)
            cursor = txn.cursor(db=self.db["queue"])
            limit = _U64.pack(int(now * 1_000_000))
            for key, _ in cursor:
                if bytes(key[:8]) > limit:
                    break
                exec_id = bytes(key[8:]).decode()
                lease = self._lease(txn, exec_id)
                if lease is not None and lease.owner != owner and lease.held(now):
                    continue
                self._put_lease(txn, exec_id, owner, now + lease_seconds)
                self._schedule(txn, exec_id, None)     # off the queue while it runs
                return exec_id
            return None
        return self._write(work)

    def claim_one(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        """Lease this execution to ``owner`` unless a live owner holds it; True if taken."""
        now = time.time() if now is None else now

        def work(txn):
            if txn.get(_key(exec_id), db=self.db["executions"]) is None:
                return False
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.owner != owner and lease.held(now):
                return False
            self._put_lease(txn, exec_id, owner, now + lease_seconds)
            self._schedule(txn, exec_id, None)
            return True
        return self._write(work)

    def _recover(self, txn, now):
        """Leases of dead owners or past their expiry: put the execution back on the
        queue (due now) so it resumes from its last savepoint."""
        stale = []
        for key, raw in txn.cursor(db=self.db["leases"]):
            exec_id = bytes(key).decode()
            try:
                pid, start, boot, expires, label = _unseal(raw, "lease")
            except CorruptSavepoint:
                stale.append(exec_id)
                continue
            if not Lease(Owner(pid, start, boot, label), expires).held(now):
                stale.append(exec_id)
        for exec_id in stale:
            txn.delete(_key(exec_id), db=self.db["leases"])
            if txn.get(_key(exec_id), db=self.db["due"]) is None and \
                    txn.get(_key(exec_id), db=self.db["executions"]) is not None:
                self._schedule(txn, exec_id, now)
        return stale

    def renew(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        """Extend ``owner``'s lease; False if it no longer holds it."""
        now = time.time() if now is None else now

        def work(txn):
            lease = self._lease(txn, exec_id)
            if lease is None or lease.owner != owner:
                return False
            self._put_lease(txn, exec_id, owner, now + lease_seconds)
            return True
        return self._write(work)

    def release(self, exec_id, owner, execution=None):
        """Give up ``owner``'s lease, writing the execution's new state with it if given."""
        def work(txn):
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.owner == owner:
                txn.delete(_key(exec_id), db=self.db["leases"])
            if execution is not None:
                self._put_execution(txn, execution)
        self._write(work)

    # -- settings --
    def get_setting(self, name, default=None):
        raw = self._read(lambda txn: txn.get(name.encode(), db=self.db["settings"]))
        return default if raw is None else _unseal(raw, f"setting {name!r}")

    def set_setting(self, name, value):
        sealed = _seal(value)
        self._write(lambda txn: txn.put(name.encode(), sealed, db=self.db["settings"]))

    def settings(self, prefix=""):
        """{name: value} of the settings whose names start with ``prefix``."""
        start = prefix.encode()

        def scan(txn):
            return {bytes(key).decode(): _unseal(raw, f"setting {bytes(key).decode()!r}")
                    for key, raw in _with_prefix(txn, self.db["settings"], start)}
        return self._read(scan)

    def delete_setting(self, name):
        self._write(lambda txn: txn.delete(name.encode(), db=self.db["settings"]))

    def queue_depth(self, now=None):
        """How many executions are due and waiting for a worker."""
        limit = _U64.pack(int((time.time() if now is None else now) * 1_000_000))

        def count(txn):
            n = 0
            for key in txn.cursor(db=self.db["queue"]).iternext(values=False):
                if bytes(key[:8]) > limit:
                    break
                n += 1
            return n
        return self._read(count)

    def size(self):
        """Bytes in use by the environment's pages."""
        info, stat = self.env.info(), self.env.stat()
        return (info["last_pgno"] + 1) * stat["psize"]
