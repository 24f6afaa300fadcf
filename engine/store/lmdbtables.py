"""The LMDB store's named databases: how keys are made, values signed, and records read
and written inside a transaction the caller holds (engine.store.lmdb runs the
transactions; engine.store.check reads the same records through the same Tables).

Named databases (keys -> values; "sealed": signed msgpack, engine._codec.seal):
    executions   id -> execution record (records.EXECUTION_FIELDS)        sealed
    savepoints   id NUL seq -> [meta, record, state] (records.py)          sealed
    names        id NUL name -> seq                                        u64
    code         fingerprint -> engine._codec.encode_code    signed, checked against it
    code_users   fingerprint id -> ""                        which executions pin it
    exec_codes   id NUL fingerprint -> ""                    the same, by execution
    chunks       hash -> bytes                               signed, checked against it
    chunk_refs   hash -> count                                             u64
    queue        due id -> ""                                due: u64 microseconds
    due          id -> due                                   where its queue key is
    leases       id -> [pid, start, host, expires, label] (leases.Lease)   sealed
    lease_owners owner id -> ""              who holds what (owner: owner_key)
    lease_expiry expires id -> ""            leases by when they run out (u64 microseconds)
    held         owner due id -> ""          leased executions with a due time, by owner
    settings     name -> value                                             sealed
    listing, by_status, listed, status_counts, children
                 the listing indexes (engine.store.lmdblisting)
    meta         b"format" -> format version; b"key-check" -> the tag of a fixed text
                 (a store opened with another key is refused at once)

The run queue holds what any worker may claim: an execution with a due time that no one
leases.  A leased one with a due time -- parked in its owner's memory, say, and woken by
a child that ended elsewhere -- is in ``held`` under its owner instead, for that owner's
claim only; it goes back on the queue when its lease goes (put_lease, drop_lease).  The two lease indexes are written with the lease, in
the same transaction, so that lease recovery looks at each owner once and at the leases
that ran out, not at every lease (engine.store.lmdbclaims).

One damaged record affects only its own execution: reading a head never fails (a damaged
execution comes back marked "damaged", Tables.damaged_head), a damaged lease counts as
none, and a queue entry out of step with the due index is found (queue_problem) and
repaired (repair_queue_entry) by the claim that meets it or by engine doctor.
"""
import logging
import struct

from engine import _codec, _commit
from engine.errors import CorruptSavepoint
from engine.store import lmdblisting, records
from engine.store.leases import Lease, Owner

DATABASES = ("executions", "savepoints", "names", "code", "code_users", "exec_codes",
             "chunks", "chunk_refs", "queue", "due", "leases", "lease_owners",
             "lease_expiry", "held", "settings", "meta", "messages") + lmdblisting.DATABASES
U64 = struct.Struct(">Q")
_OWNER = struct.Struct(">36sIQ")          # host (NUL-padded), pid, start (or NO_START)
OWNER_KEY_SIZE = _OWNER.size
_NO_START = (1 << 64) - 1                 # Owner.start None: no /proc to read it from
log = logging.getLogger("engine.store")


def exec_key(exec_id):
    return exec_id.encode()


def savepoint_key(exec_id, seq):
    return exec_id.encode() + b"\0" + U64.pack(seq)


def message_key(exec_id, n):
    return exec_id.encode() + b"\0" + U64.pack(n)


def name_key(exec_id, name):
    return exec_id.encode() + b"\0" + name.encode()


def code_user_key(digest, exec_id):
    return digest + exec_id.encode()


def exec_code_key(exec_id, digest):
    return exec_id.encode() + b"\0" + digest


def signal_key(exec_id):
    """The settings key of the execution's pending request (records.SIGNAL_PREFIX)."""
    return (records.SIGNAL_PREFIX + exec_id).encode()


def due_key(when):
    """A UNIX time as the run queue orders it: u64 microseconds (never below 0)."""
    return U64.pack(max(0, int(when * 1_000_000)))


def owner_key(owner):
    """The lease_owners key prefix of an owner: fixed size, so owners sort apart."""
    start = _NO_START if owner.start is None else owner.start
    return _OWNER.pack(owner.host.encode()[:36], owner.pid, start)


def owner_of(key):
    """The Owner a lease_owners key names (its first OWNER_KEY_SIZE bytes)."""
    host, pid, start = _OWNER.unpack_from(key)
    return Owner(pid, None if start == _NO_START else start,
                 host.rstrip(b"\0").decode(errors="replace"))


def lease_index_keys(exec_id, lease):
    """(lease_owners key, lease_expiry key) of the execution's lease."""
    key = exec_key(exec_id)
    return owner_key(lease.owner) + key, due_key(lease.expires) + key


def id_of(key):
    """The execution id a key holds, or None if it is not one (not UTF-8, or empty)."""
    try:
        exec_id = bytes(key).decode()
    except UnicodeDecodeError:
        return None
    return exec_id if exec_id and "\0" not in exec_id else None


def shown(key):
    """A key as people read it: its text if it is printable UTF-8, else hex."""
    key = bytes(key)
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()
    return text if text.isprintable() else "0x" + key.hex()


def with_prefix(txn, db, prefix):
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


class Tables:
    """The named databases of one environment (``db``: name -> handle), the store's signer
    and the savepoint layout; every method works inside the transaction it is given."""

    def __init__(self, db, signer, layout):
        self.db, self.signer, self.layout = db, signer, layout

    # -- signed values --
    def seal(self, value):
        return _codec.seal(value, self.signer)

    def unseal(self, raw, what):
        return _codec.unseal(raw, what, self.signer)

    def execution_record(self, raw, exec_id):
        """An execution record; CorruptSavepoint if it is damaged."""
        what = f"execution {exec_id}"
        record = self.unseal(raw, what)
        if not records.is_execution_record(record):
            raise CorruptSavepoint(f"{what} is damaged (not an execution record)")
        return record

    def savepoint_value(self, raw, seq, exec_id):
        """[meta, record, state] of a savepoint; CorruptSavepoint if it is damaged."""
        what = f"savepoint {seq} of execution {exec_id}"
        value = self.unseal(raw, what)
        if not records.is_savepoint(value):
            raise CorruptSavepoint(f"{what} is damaged (not a savepoint)")
        return value

    def lease_of(self, raw, what):
        """A stored lease: [pid, start, host, expires, label] (put_lease)."""
        try:
            pid, start, host, expires, label = self.unseal(raw, what)
        except (TypeError, ValueError):
            raise CorruptSavepoint(f"{what} is damaged (not a lease)") from None
        return Lease(Owner(pid, start, host, label), expires)

    # -- executions --
    def head(self, txn, exec_id):
        """The execution's head: the newer of its record and its latest savepoint's, or
        None.  A damaged record never makes it fail: see damaged_head."""
        raw = txn.get(exec_key(exec_id), db=self.db["executions"])
        latest = self.newest_savepoint(txn, exec_id)
        try:
            head = None if raw is None else self.execution_record(raw, exec_id)
            if latest is not None:
                state = self.savepoint_value(latest[1], latest[0], exec_id)[2]
                if head is None:
                    head = {"id": exec_id}
                if state[0] > head.get("version", 0):
                    self.layout.apply(head, state)
        except CorruptSavepoint:
            return self.damaged_head(exec_id, raw, latest)
        return head

    def damaged_head(self, exec_id, raw, latest):
        """The head of an execution whose record or newest savepoint is damaged, with
        "damaged": what is damaged (one line, for people).

        Its execution record readable: that record (its own state, the last it wrote
        itself), with last_seq at least the newest savepoint's seq -- so a new savepoint
        never takes a damaged one's place, resuming from the damaged one fails with
        CorruptSavepoint (the execution ends ENDED_ERROR saying so), and a restore to an
        intact savepoint writes a record that stays the head until the execution's next
        savepoint (a record holding last_seq >= the newest seq was written after it).
        Its record damaged (or missing): status ENDED_ERROR, error "CorruptSavepoint:
        ...", flow "" (unknown: the flow, inputs and log are lost) and what the newest
        savepoint says, if it is readable; nothing but delete applies to it."""
        damage = []
        head = None
        if raw is not None:
            try:
                head = self.execution_record(raw, exec_id)
            except CorruptSavepoint as e:
                damage.append((str(e), f"execution {exec_id}", "execution record"))
        else:
            damage.append((f"execution {exec_id} has no execution record", "", ""))
        state = None
        if latest is not None:
            try:
                state = self.savepoint_value(latest[1], latest[0], exec_id)[2]
            except CorruptSavepoint as e:
                damage.append((str(e), f"savepoint {latest[0]} of execution {exec_id}",
                               f"newest savepoint {latest[0]}"))
        if head is not None:
            if state is not None:
                if state[0] > head.get("version", 0):
                    self.layout.apply(head, state)
            elif latest is not None:
                head["last_seq"] = max(head.get("last_seq") or 0, latest[0])
        else:
            head = {"id": exec_id, "flow": "", "created_at": None}
            if state is not None:
                self.layout.apply(head, state)
            elif latest is not None:
                head["last_seq"] = latest[0]
            head.update(status=records.ENDED_ERROR, due=None,
                        error=f"CorruptSavepoint: {damage[0][0]}")
        # short, as the execution's own field: "newest savepoint 5 is damaged (...)"
        head["damaged"] = "; ".join(text.replace(long, short, 1) if long else text
                                    for text, long, short in damage)
        return head

    def newest_savepoint(self, txn, exec_id):
        """(seq, raw value) of the execution's newest savepoint, or None.  (A key under
        the execution's prefix that is no savepoint key -- damage -- is passed over.)"""
        prefix = exec_key(exec_id) + b"\0"
        cursor = txn.cursor(db=self.db["savepoints"])
        if cursor.set_range(prefix + b"\xff" * 8):
            if not cursor.prev():
                return None
        elif not cursor.last():
            return None
        while True:
            key = cursor.key()
            if not key.startswith(prefix):
                return None
            if len(key) == len(prefix) + 8:
                return U64.unpack(key[len(prefix):])[0], cursor.value()
            if not cursor.prev():
                return None

    def put_execution(self, txn, execution):
        """Write the execution record (setting its "version"), its place on the run
        queue and its listing entries."""
        execution["version"] = _commit.version_after(execution)
        for note in records.NOT_STORED:
            execution.pop(note, None)
        exec_id = execution["id"]
        txn.put(exec_key(exec_id), self.seal(execution), db=self.db["executions"])
        self.schedule(txn, exec_id, execution.get("due"))
        lmdblisting.keep_listed(self.db, txn, execution)

    # -- the run queue --
    def schedule(self, txn, exec_id, due):
        """Keep the run queue in step with the execution's due time (None: not runnable):
        on the queue, or in ``held`` under its owner while it is leased."""
        key = exec_key(exec_id)
        old = txn.get(key, db=self.db["due"])
        new = None if due is None else due_key(due)
        if old == new:
            return
        holder = self._holder(txn, exec_id)
        if old is not None:
            self._unqueue(txn, key, bytes(old), holder)
            txn.delete(key, db=self.db["due"])
        if new is not None:
            self._enqueue(txn, key, new, holder)
            txn.put(key, new, db=self.db["due"])

    def _holder(self, txn, exec_id):
        """The owner_key of the execution's lease, or None (none, or damaged: it holds
        nothing)."""
        raw = txn.get(exec_key(exec_id), db=self.db["leases"])
        lease = None if raw is None else self._readable_lease(raw, exec_id)
        return None if lease is None else owner_key(lease.owner)

    def _enqueue(self, txn, key, due, holder):
        if holder is None:
            txn.put(due + key, b"", db=self.db["queue"])
        else:
            txn.put(holder + due + key, b"", db=self.db["held"])

    def _unqueue(self, txn, key, due, holder):
        if holder is None:
            txn.delete(due + key, db=self.db["queue"])
        else:
            txn.delete(holder + due + key, db=self.db["held"])

    def queue_problem(self, txn, key):
        """None if a queue entry (due u64 + id) is in step with the due index and its
        execution; else (why, repair): repair "index" when only the due-index entry is
        missing and the execution is due at that very time (its head says so), else
        "delete"."""
        if len(key) <= 8:
            return "it is no queue key", "delete"
        exec_id = id_of(key[8:])
        if exec_id is None:
            return "its execution id is not UTF-8 text", "delete"
        if txn.get(exec_key(exec_id), db=self.db["executions"]) is None:
            return f"execution {exec_id} does not exist", "delete"
        if self._holder(txn, exec_id) is not None:
            return f"execution {exec_id} is leased (it is queued again when its lease " \
                   f"goes)", "delete"
        due = txn.get(exec_key(exec_id), db=self.db["due"])
        if due is not None:
            if due == key[:8]:
                return None
            return f"the due index puts execution {exec_id} at another time", "delete"
        head_due = self.head(txn, exec_id).get("due")
        if head_due is not None and due_key(head_due) == key[:8]:
            return f"execution {exec_id} is due then, but its due-index entry is " \
                   f"missing", "index"
        return f"execution {exec_id} has no due-index entry (it is not due then)", "delete"

    def repair_queue_entry(self, txn, key, how):
        """Repair an out-of-step queue entry as queue_problem says: "index" adds the
        due-index entry; "delete" deletes the entry (and the due entry of an execution
        that is gone)."""
        exec_id = id_of(key[8:]) if len(key) > 8 else None
        if how == "index":
            txn.put(exec_key(exec_id), key[:8], db=self.db["due"])
            return
        txn.delete(key, db=self.db["queue"])
        if exec_id is not None and \
                txn.get(exec_key(exec_id), db=self.db["executions"]) is None and \
                txn.get(exec_key(exec_id), db=self.db["due"]) == key[:8]:
            txn.delete(exec_key(exec_id), db=self.db["due"])

    # -- leases --
    def lease(self, txn, exec_id, damaged=None):
        """The execution's lease, or None; a damaged lease is taken as none (and logged),
        as lease recovery takes it: it names no owner that could be alive.  (``damaged``:
        what to return for one instead.)"""
        raw = txn.get(exec_key(exec_id), db=self.db["leases"])
        if raw is None:
            return None
        try:
            return self.lease_of(raw, f"lease of execution {exec_id}")
        except CorruptSavepoint as e:
            log.warning("%s; taken as no lease", e)
            return damaged

    def put_lease(self, txn, exec_id, owner, expires, old=None):
        """Lease the execution to ``owner`` until ``expires``, with its index entries; an
        execution with a due time moves from the queue (or its old owner's ``held``) to
        the new owner's.  ``old``: its lease as the caller read it in this transaction,
        else it is read here."""
        key = exec_key(exec_id)
        if old is None:
            raw = txn.get(key, db=self.db["leases"])
            old = None if raw is None else self._readable_lease(raw, exec_id)
        new = Lease(owner, expires)
        by_owner, by_expiry = lease_index_keys(exec_id, new)
        holder = owner_key(owner)
        old_holder = None if old is None else owner_key(old.owner)
        if old is not None:
            old_owner, old_expiry = lease_index_keys(exec_id, old)
            if old_owner != by_owner:
                txn.delete(old_owner, db=self.db["lease_owners"])
            if old_expiry != by_expiry:
                txn.delete(old_expiry, db=self.db["lease_expiry"])
        txn.put(key, self.seal([owner.pid, owner.start, owner.host, expires, owner.label]),
                db=self.db["leases"])
        if old_holder != holder:
            txn.put(by_owner, b"", db=self.db["lease_owners"])
            due = txn.get(key, db=self.db["due"])
            if due is not None:
                self._unqueue(txn, key, bytes(due), old_holder)
                self._enqueue(txn, key, bytes(due), holder)
        txn.put(by_expiry, b"", db=self.db["lease_expiry"])

    def drop_lease(self, txn, exec_id, requeue=True):
        """Delete the execution's lease and its index entries (those of a damaged lease
        stay: lease recovery finds them out of step); an execution with a due time
        leaves its owner's ``held`` and, with ``requeue``, goes back on the run queue.
        Returns whether there was a lease."""
        key = exec_key(exec_id)
        raw = txn.get(key, db=self.db["leases"])
        if raw is None:
            return False
        old = self._readable_lease(raw, exec_id)
        due = txn.get(key, db=self.db["due"])
        if old is not None:
            by_owner, by_expiry = lease_index_keys(exec_id, old)
            txn.delete(by_owner, db=self.db["lease_owners"])
            txn.delete(by_expiry, db=self.db["lease_expiry"])
            if due is not None:
                self._unqueue(txn, key, bytes(due), owner_key(old.owner))
        txn.delete(key, db=self.db["leases"])
        if due is not None and requeue:
            self._enqueue(txn, key, bytes(due), None)
        return True

    def _readable_lease(self, raw, exec_id):
        try:
            return self.lease_of(raw, f"lease of execution {exec_id}")
        except CorruptSavepoint:
            return None

    # -- savepoints and chunks --
    def ref_chunk(self, txn, digest, blob):
        count = txn.get(digest, db=self.db["chunk_refs"])
        if count is None:
            txn.put(digest, self.seal(blob), db=self.db["chunks"])
            txn.put(digest, U64.pack(1), db=self.db["chunk_refs"])
        else:
            txn.put(digest, U64.pack(U64.unpack(count)[0] + 1), db=self.db["chunk_refs"])

    def unref_chunk(self, txn, digest):
        count = txn.get(digest, db=self.db["chunk_refs"])
        if count is None:
            return
        left = U64.unpack(count)[0] - 1
        if left <= 0:
            txn.delete(digest, db=self.db["chunk_refs"])
            txn.delete(digest, db=self.db["chunks"])
        else:
            txn.put(digest, U64.pack(left), db=self.db["chunk_refs"])

    def drop_savepoint(self, txn, exec_id, seq, chunks=None):
        """Delete a savepoint and release its chunks (``chunks``: as the caller knows
        them; None: as the savepoint says, and its name goes too)."""
        key = savepoint_key(exec_id, seq)
        if chunks is None:
            raw = txn.get(key, db=self.db["savepoints"])
            if raw is None:
                return
            try:
                meta = records.meta_dict(self.savepoint_value(raw, seq, exec_id)[0])
            except CorruptSavepoint as e:           # it goes all the same
                log.warning("%s; dropped (its chunks stay: engine doctor --repair)", e)
                meta = {}
            chunks = meta.get("chunks") or ()
            if meta.get("name") is not None:
                txn.delete(name_key(exec_id, meta["name"]), db=self.db["names"])
        for digest in chunks:
            self.unref_chunk(txn, digest)
        txn.delete(key, db=self.db["savepoints"])
