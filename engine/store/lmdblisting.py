"""The LMDB store's listing indexes: what lists executions a page at a time, newest first,
by status and flow, counts them by status and finds an execution's children -- without
reading every execution (engine.store.listing says what a listing shows).

Named databases (derived records, kept in step with every write of an execution's record
or of a savepoint that changes its status; created: u64 microseconds of created_at):
    listing        created id -> status NUL flow          every execution, by creation
    by_status      status NUL created id -> flow          the same, by status
    listed         id -> created status NUL parent        where its entries are
    status_counts  status -> u64                          how many have each status
    children       parent NUL created id -> ""            who started whom

Every function works inside the transaction it is given (engine.store.lmdb runs them);
``db`` is the store's name -> database mapping, ``tables`` its lmdbtables.Tables.  This
module imports nothing of the other LMDB modules: lmdbtables calls keep_listed from its
put_execution.
"""
import struct

from engine.errors import CorruptSavepoint
from engine.store import listing, records

DATABASES = ("listing", "by_status", "listed", "status_counts", "children")
_U64 = struct.Struct(">Q")
_CREATED = _U64.size


def created_key(created_at):
    """created_at as the listing orders it: u64 microseconds (a lost one: 0)."""
    return _U64.pack(max(0, int((created_at or 0) * 1_000_000)))


def entries_of(execution):
    """{database: (key, value)}: the entries that list the execution as it is (its
    status, flow, created_at and parent)."""
    key = execution["id"].encode()
    created = created_key(execution.get("created_at"))
    status = (execution.get("status") or "").encode()
    parent = (execution.get("parent") or "").encode()
    flow = (execution.get("flow") or "").encode()
    out = {"listed": (key, created + status + b"\0" + parent),
           "listing": (created + key, status + b"\0" + flow),
           "by_status": (status + b"\0" + created + key, flow)}
    if parent:
        out["children"] = (parent + b"\0" + created + key, b"")
    return out


def _keys_of(key, listed):
    """{database: key} of the entries a ``listed`` value says the execution has."""
    created, rest = listed[:_CREATED], listed[_CREATED:]
    status, _, parent = rest.partition(b"\0")
    out = {"listing": created + key, "by_status": status + b"\0" + created + key}
    if parent:
        out["children"] = parent + b"\0" + created + key
    return out, status


def keep_listed(db, txn, execution):
    """Keep the indexes in step with the execution dict being written (its status,
    flow, created_at and parent); nothing to do when its status did not change."""
    new = entries_of(execution)
    key, value = new["listed"]
    old = txn.get(key, db=db["listed"])
    if old == value:
        return
    if old is not None:
        _drop_entries(db, txn, key, bytes(old))
    for name, (entry, entry_value) in new.items():
        txn.put(entry, entry_value, db=db[name])
    _count(db, txn, value[_CREATED:].partition(b"\0")[0], 1)


def unlist(db, txn, exec_id):
    """Take a deleted execution out of the indexes."""
    key = exec_id.encode()
    old = txn.get(key, db=db["listed"])
    if old is not None:
        _drop_entries(db, txn, key, bytes(old))
        txn.delete(key, db=db["listed"])


def _drop_entries(db, txn, key, listed):
    keys, status = _keys_of(key, listed)
    for name, entry in keys.items():
        txn.delete(entry, db=db[name])
    _count(db, txn, status, -1)


def _count(db, txn, status, step):
    if not status:
        return                  # a record without a status (a test's): not counted
    raw = txn.get(status, db=db["status_counts"])
    count = (_U64.unpack(raw)[0] if raw is not None and len(raw) == 8 else 0) + step
    if count > 0:
        txn.put(status, _U64.pack(count), db=db["status_counts"])
    else:
        txn.delete(status, db=db["status_counts"])


def index_all(tables, txn, heads):
    """Make the indexes hold exactly the entries of ``heads`` (every execution's head):
    for a store written before them, and for engine doctor --repair."""
    for name in DATABASES:
        txn.drop(tables.db[name], delete=False)
    for head in heads:              # a damaged one as its head says (delete applies)
        keep_listed(tables.db, txn, head)


def problems(db, txn, heads):
    """[(execution id or None, what is out of step)]: the entries that differ from what
    the heads ({id: head}) make (a damaged execution's are not compared: its last
    intact write made them), entries of no execution, and counts that differ from the
    by_status entries."""
    found, named = [], {}
    for name in ("listed", "listing", "by_status", "children"):
        for key, value in txn.cursor(db=db[name]):
            key = bytes(key)
            exec_id = _owner(name, key)
            named.setdefault(exec_id, {}).setdefault(name, []).append((key, bytes(value)))
    for exec_id in sorted(set(named) - set(heads), key=str):
        found.append((exec_id, f"listing entries of execution {exec_id}, which does "
                               f"not exist"))
    for exec_id, head in sorted(heads.items()):
        if head.get("damaged"):
            continue
        wanted = {name: [entry] for name, entry in entries_of(head).items()}
        if named.get(exec_id, {}) != wanted:
            found.append((exec_id, f"the listing entries of execution {exec_id} are out "
                                   f"of step with its status {head.get('status')!r}"))
    by_status = {}
    for key in txn.cursor(db=db["by_status"]).iternext(values=False):
        status = bytes(key).partition(b"\0")[0].decode(errors="replace")
        if status:
            by_status[status] = by_status.get(status, 0) + 1
    stored = {s: n for s, n in counts(db, txn).items() if n}
    if stored != by_status:
        found.append((None, f"the counts by status {stored} differ from the executions "
                            f"listed by status {by_status}"))
    return found


def _owner(name, key):
    """The execution id an entry of the listing database ``name`` belongs to."""
    if name == "listed":
        tail = key
    elif name == "listing":
        tail = key[_CREATED:]
    else:
        tail = key[key.find(b"\0") + 1 + _CREATED:]
    return tail.decode(errors="replace")


# --- reading ----------------------------------------------------------------------------------

def _after(prefix):
    """The smallest key above every key that starts with ``prefix`` (None: none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _backwards(txn, database, prefix):
    """(key, value) of every entry whose key starts with ``prefix``, last first (the
    cursor's own iteration: a page of a filtered listing may pass over every entry)."""
    cursor = txn.cursor(db=database)
    end = _after(prefix)
    if end is not None and cursor.set_range(end):
        if not cursor.prev():
            return
    elif not cursor.last():
        return
    for key, value in cursor.iterprev():
        if not key.startswith(prefix):
            return
        yield key, value


def counts(db, txn):
    """{status: how many executions have it}, every status (zeros too)."""
    out = dict.fromkeys(records.STATUSES, 0)
    for key, value in txn.cursor(db=db["status_counts"]):
        status = bytes(key).decode(errors="replace")
        if status in out and len(value) == 8:
            out[status] = _U64.unpack(value)[0]
    return out


def page(tables, txn, status=None, flow=None, offset=0, limit=50):
    """(heads of the page, how many match in all): newest first, of ``status`` and
    ``flow`` (listing.flow_matches).  Without a flow filter only the page is read and
    the total comes from status_counts; with one, every entry of the status (or all)
    is looked at -- its flow is in the index, no record is read."""
    listing.check_page(status, offset, limit)
    db = tables.db
    if status is None:
        database, prefix = db["listing"], b""
    else:
        database, prefix = db["by_status"], status.encode() + b"\0"
    wanted = None if flow is None else flow.encode()
    skip = len(prefix) + _CREATED
    ids, matched = [], 0
    verdicts = {}               # index value -> whether its flow matches (few distinct)
    for key, value in _backwards(txn, database, prefix):
        if wanted is not None:
            verdict = verdicts.get(value)
            if verdict is None:
                shown = value if status is not None else value.partition(b"\0")[2]
                verdict = verdicts[value] = listing.flow_matches(shown, wanted)
            if not verdict:
                continue
        if matched >= offset:
            if len(ids) < limit:
                ids.append(bytes(key[skip:]).decode(errors="replace"))
            elif wanted is None:
                break                        # the total comes from the counts
        matched += 1
    if wanted is None:
        found = counts(db, txn)
        matched = sum(found.values()) if status is None else found[status]
    heads = [tables.head(txn, exec_id) for exec_id in ids]
    return [h for h in heads if h is not None], matched


def children(db, txn, parent):
    """The ids of the executions ``parent`` started, oldest first."""
    prefix = parent.encode() + b"\0"
    cursor = txn.cursor(db=db["children"])
    found = []
    if cursor.set_range(prefix):
        for key in cursor.iternext(values=False):
            if not key.startswith(prefix):
                break
            found.append(bytes(key[len(prefix) + _CREATED:]).decode(errors="replace"))
    return found


def savepoint_page(tables, txn, exec_id, offset=0, limit=100, newest=True):
    """(the page of the execution's savepoint metas, newest first if ``newest``, how
    many it has): only the page's savepoints are read (a damaged one as
    records.damaged_meta)."""
    listing.check_page(None, offset, limit)
    prefix = exec_id.encode() + b"\0"
    cursor = txn.cursor(db=tables.db["savepoints"])
    keys = []
    if cursor.set_range(prefix):
        for key in cursor.iternext(values=False):
            if not key.startswith(prefix):
                break
            if len(key) == len(prefix) + 8:          # else no savepoint key (doctor says)
                keys.append(bytes(key))
    if newest:
        keys.reverse()
    metas = []
    for key in keys[offset:offset + limit]:
        seq = _U64.unpack(key[len(prefix):])[0]
        raw = txn.get(key, db=tables.db["savepoints"])
        try:
            metas.append(records.meta_dict(tables.savepoint_value(raw, seq, exec_id)[0]))
        except CorruptSavepoint as e:
            metas.append(records.damaged_meta(seq, len(raw), str(e)))
    return metas, len(keys)
