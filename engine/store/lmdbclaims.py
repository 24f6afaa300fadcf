"""Claims on the LMDB store: lease recovery, the look at what could be claimed, claiming
and renewing many at once -- each inside a transaction the caller holds
(engine.store.lmdb runs them).

A process may hold thousands of leases (executions parked in its memory), so nothing here
looks at every lease: recovery checks each distinct owner once (lease_owners, one key
per owner and execution, owners sorted apart) and takes the leases that ran out from the
front of lease_expiry.  What it finds goes back on the run queue, to resume from its last
savepoint.  Whether an owner is alive is read from /proc once per owner and pass
(``alive``: a dict the caller keeps for one look and the claim after it).

The indexes are checked against the lease they point at; an entry out of step is
deleted.  A damaged lease is recovered when its owner renews it, dies, or its index says
it ran out.  When their entry counts differ from the leases' (damage, or a lease written by
hand), one full pass puts them back in step (index_leases) -- as does opening a store
written before the indexes existed.
"""
import logging

from engine.errors import CorruptSavepoint
from engine.store.lmdbtables import (OWNER_KEY_SIZE, U64, due_key, exec_key, id_of,
                                     lease_index_keys, owner_key, owner_of, shown)

log = logging.getLogger("engine.store")
_MICROSECONDS = 1_000_000


def is_alive(owner, alive):
    """Whether ``owner`` runs, read once per pass (``alive``: owner -> bool)."""
    found = alive.get(owner)
    if found is None:
        found = alive[owner] = owner.alive()
    return found


def _owners(txn, db):
    """Each distinct owner prefix of lease_owners, in order."""
    cursor = txn.cursor(db=db)
    found = cursor.first()
    while found:
        prefix = bytes(cursor.key()[:OWNER_KEY_SIZE])
        yield prefix
        # execution ids are UTF-8, which has no byte 0xff: this is past the owner's keys
        found = cursor.set_range(prefix + b"\xff")


def out_of_step(tables, txn):
    """Whether the lease indexes do not hold one entry each per lease."""
    count = tables.db
    leases = txn.stat(count["leases"])["entries"]
    return leases != txn.stat(count["lease_owners"])["entries"] or \
        leases != txn.stat(count["lease_expiry"])["entries"]


def next_due(tables, txn, now, alive, owner=None):
    """The earliest time a claim (by ``owner``, if given) could hand out something (a
    UNIX time): the run queue's first due time, that of the owner's own leased
    executions (``held``), the first lease to run out, or ``now`` when an owner is dead
    or the indexes are out of step; None if nothing is queued or leased."""
    db = tables.db
    when = []
    cursor = txn.cursor(db=db["queue"])
    if cursor.first():
        key = cursor.key()
        when.append(U64.unpack(key[:8])[0] / _MICROSECONDS if len(key) > 8 else now)
    if owner is not None:
        mine = _first_held(txn, db, owner_key(owner))
        if mine is not None:
            when.append(U64.unpack(mine[OWNER_KEY_SIZE:OWNER_KEY_SIZE + 8])[0] /
                        _MICROSECONDS)
    cursor = txn.cursor(db=db["lease_expiry"])
    if cursor.first():
        key = cursor.key()
        when.append(U64.unpack(key[:8])[0] / _MICROSECONDS if len(key) > 8 else now)
        if out_of_step(tables, txn) or any(not is_alive(owner_of(prefix), alive)
                                           for prefix in _owners(txn, db["lease_owners"])):
            when.append(now)
    elif txn.stat(db["leases"])["entries"]:        # leases without their indexes
        when.append(now)
    return min(when) if when else None


def _first_held(txn, db, prefix):
    """The first ``held`` key of an owner (owner_key ``prefix``), or None."""
    cursor = txn.cursor(db=db["held"])
    if cursor.set_range(prefix) and cursor.key()[:OWNER_KEY_SIZE] == prefix and \
            len(cursor.key()) > OWNER_KEY_SIZE + 8:
        return bytes(cursor.key())
    return None


def recover(tables, txn, now, alive):
    """Leases of dead owners or past their expiry (or damaged) go; their executions go
    back on the queue -- at their due time if they have one, else due now.  Returns the
    ids put back."""
    db = tables.db
    if out_of_step(tables, txn):
        index_leases(tables, txn)
    suspects = []                        # (index database, key, execution id)
    for prefix in list(_owners(txn, db["lease_owners"])):
        if not is_alive(owner_of(prefix), alive):
            cursor = txn.cursor(db=db["lease_owners"])
            if cursor.set_range(prefix):
                for key in cursor.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    suspects.append(("lease_owners", bytes(key),
                                     id_of(key[OWNER_KEY_SIZE:])))
    limit = due_key(now)
    for key in txn.cursor(db=db["lease_expiry"]).iternext(values=False):
        if bytes(key[:8]) > limit:
            break
        suspects.append(("lease_expiry", bytes(key), id_of(key[8:])))
    put_back = []
    for index, key, exec_id in suspects:
        lease = None if exec_id is None else _lease(tables, txn, exec_id)
        if lease is not None and lease is not _DAMAGED and \
                key not in lease_index_keys(exec_id, lease):
            lease = None                 # the entry of an older lease
        if lease is None:
            txn.delete(key, db=db[index])
            continue
        if lease is _DAMAGED or lease.expires <= now or not is_alive(lease.owner, alive):
            if lease is _DAMAGED:
                txn.delete(key, db=db[index])
            _put_back(tables, txn, exec_id, now)
            put_back.append(exec_id)
    return put_back


_DAMAGED = object()


def _lease(tables, txn, exec_id):
    """The execution's lease, None, or _DAMAGED (logged)."""
    return tables.lease(txn, exec_id, damaged=_DAMAGED)


def _put_back(tables, txn, exec_id, now):
    """Drop the lease; the execution goes back on the queue (due now if it had no due
    time: it resumes from its last savepoint)."""
    tables.drop_lease(txn, exec_id)
    key = exec_key(exec_id)
    if txn.get(key, db=tables.db["due"]) is None and \
            txn.get(key, db=tables.db["executions"]) is not None:
        tables.schedule(txn, exec_id, now)


def index_leases(tables, txn):
    """One pass over every lease: a lease whose key is no execution id is deleted, a
    damaged one recovered (its execution back on the queue), and the indexes made to hold
    exactly the entries of the others; a leased execution with a due time leaves the run
    queue for its owner's ``held``."""
    db = tables.db
    wanted = {"lease_owners": set(), "lease_expiry": set(), "held": set()}
    for key, raw in [(bytes(k), v) for k, v in txn.cursor(db=db["leases"])]:
        exec_id = id_of(key)
        if exec_id is None:
            log.warning("leases: deleted a lease whose key is not an execution id (%s)",
                        shown(key))
            txn.delete(key, db=db["leases"])
            continue
        try:
            lease = tables.lease_of(raw, f"lease of execution {exec_id}")
        except CorruptSavepoint as e:
            log.warning("%s; recovered as no lease", e)
            _put_back(tables, txn, exec_id, 0.0)
            continue
        by_owner, by_expiry = lease_index_keys(exec_id, lease)
        wanted["lease_owners"].add(by_owner)
        wanted["lease_expiry"].add(by_expiry)
        due = txn.get(key, db=db["due"])
        if due is not None:
            txn.delete(bytes(due) + key, db=db["queue"])
            wanted["held"].add(owner_key(lease.owner) + bytes(due) + key)
    for name, keys in wanted.items():
        held = {bytes(k) for k in txn.cursor(db=db[name]).iternext(values=False)}
        for key in held - keys:
            txn.delete(key, db=db[name])
        for key in keys - held:
            txn.put(key, b"", db=db[name])


def claim_many(tables, txn, owner, limit, expires, now, alive):
    """Recover what is stale, then lease up to ``limit`` due executions to ``owner``
    until ``expires``, taking them off the queue: first its own that are due (``held``:
    parked with it and woken elsewhere), then the earliest on the run queue.  A queue
    entry out of step is repaired on the way and logged: it is never handed out."""
    recover(tables, txn, now, alive)
    latest = due_key(now)
    taken = _own_due(tables, txn, owner, limit, latest)
    cursor = txn.cursor(db=tables.db["queue"])
    orphans = []
    for key in cursor.iternext(values=False):
        key = bytes(key)
        if key[:8] > latest or len(taken) >= limit:
            break
        problem = tables.queue_problem(txn, key)
        if problem is not None:
            why, fix = problem
            if fix == "delete":
                orphans.append((key, why))       # deleted below, past the cursor
                continue
            tables.repair_queue_entry(txn, key, fix)      # the due index, back
            log.warning("run queue: %s; added it back (the execution is due then)", why)
        taken.append(key[8:].decode())
    for key, why in orphans:
        tables.repair_queue_entry(txn, key, "delete")
        log.warning("run queue: deleted the entry of %s: %s", shown(key[8:]), why)
    for exec_id in taken:
        tables.schedule(txn, exec_id, None)       # off the queue while it runs
        tables.put_lease(txn, exec_id, owner, expires)
    return taken


def _own_due(tables, txn, owner, limit, latest):
    """The ids of the owner's own leased executions that are due (``held``), up to
    ``limit``; an entry out of step with the lease or the due index is deleted."""
    db, prefix = tables.db, owner_key(owner)
    found, stale = [], []
    cursor = txn.cursor(db=db["held"])
    if cursor.set_range(prefix):
        for key in cursor.iternext(values=False):
            key = bytes(key)
            if not key.startswith(prefix) or len(found) >= limit:
                break
            due, exec_id = key[len(prefix):len(prefix) + 8], id_of(key[len(prefix) + 8:])
            if due > latest:
                break
            lease = None if exec_id is None else tables.lease(txn, exec_id)
            if lease is None or lease.owner != owner or \
                    txn.get(exec_key(exec_id), db=db["due"]) != due:
                stale.append(key)
            else:
                found.append(exec_id)
    for key in stale:
        log.warning("held: deleted an entry out of step with its lease (%s)", shown(key))
        txn.delete(key, db=db["held"])
    return found


def renew_many(tables, txn, exec_ids, owner, expires, now):
    """Extend ``owner``'s leases on these executions to ``expires``; the ids it still
    holds (a lease of someone else, or none, is not renewed; a damaged one is recovered
    as a claim would, and not renewed)."""
    renewed = set()
    for exec_id in exec_ids:
        lease = _lease(tables, txn, exec_id)
        if lease is _DAMAGED:
            _put_back(tables, txn, exec_id, now)
            continue
        if lease is None or lease.owner != owner:
            continue
        tables.put_lease(txn, exec_id, owner, expires, old=lease)
        renewed.add(exec_id)
    return renewed
