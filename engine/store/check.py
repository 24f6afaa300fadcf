"""engine doctor (LmdbStore.check): verify every record of an LMDB store and, when asked,
repair what can be repaired without losing anything anyone could still use.

Checked: every execution record, savepoint, savepoint name, pinned code and who uses it
(code_users / exec_codes), chunk and its reference count, the run queue against its due
index and the leases, every lease and its index entries (lease_owners, lease_expiry,
and held for a leased execution with a due time), the listing indexes, every setting --
that each one reads (its signature holds, its shape is right, its key is an id), and
that the indexes agree with what they index.

Repaired (with repair=True, in the same write transaction, after the whole check): only
derived records, whose truth lives elsewhere -- queue and due entries out of step (an
execution with a due time goes back on the queue), names pointing at the wrong savepoint
or at none, code_users/exec_codes entries of executions that are gone or missing one side,
code nothing uses, chunk reference counts and chunks nothing uses (only when no savepoint
is damaged: a damaged one may use any chunk), leases that are damaged or of executions
that are gone (a damaged lease names no owner: the next claim recovers its execution
anyway) and lease index entries missing or of no lease, the listing indexes (rebuilt from
the heads), requests for executions that are gone.  Never an execution record, a savepoint
or a setting: what is damaged there is reported, for a person to delete or restore.
"""
import collections
import datetime

from engine import _codec
from engine.errors import CorruptSavepoint, SavepointError
from engine.store import lmdblisting, records
from engine.store.lmdbtables import (DATABASES, OWNER_KEY_SIZE, U64, code_user_key,
                                     exec_code_key, id_of, lease_index_keys, name_key,
                                     owner_key, shown)

_DIGEST = 16                     # bytes of a code fingerprint and of a chunk hash
_MISSED = {                      # what a missing lease index entry makes go wrong
    "lease_owners": "lease recovery would not look at it when its owner dies",
    "lease_expiry": "lease recovery would not look at it when it runs out",
    "held": "its owner's claim would not find it due",
}


def check(tables, txn, repair=False):
    """Check the store whose lmdbtables.Tables is ``tables`` inside ``txn`` (a write
    transaction when ``repair``).  {"checked": {database: entries}, "problems": [problem,
    ...]}; a problem is {"db", "key", "execution", "problem", "repair" (what --repair
    does, or None), "repaired" (bool)}."""
    checked = {name: txn.stat(tables.db[name])["entries"] for name in DATABASES}
    found = _Check(tables, txn, repair)
    found.run()
    return {"checked": checked, "problems": found.problems}


def _when(due):
    return datetime.datetime.fromtimestamp(due / 1_000_000, datetime.timezone.utc) \
        .isoformat(timespec="seconds")


class _Check:
    def __init__(self, tables, txn, repair):
        self.tables, self.txn, self.repair, self.db = tables, txn, repair, tables.db
        self.problems = []
        self.fixes = []
        self.executions = set()          # ids with an execution record (damaged or not)
        self.savepoints = {}             # (id, seq) -> meta dict, or None if damaged
        self.newest = {}                 # id -> highest seq held
        self.damaged_savepoints = False
        self.needs_code = collections.defaultdict(set)    # digest -> ids whose savepoints use it
        self.chunk_uses = collections.Counter()           # digest -> savepoints using it

    def problem(self, db, key, text, execution=None, fix=None, does=None):
        entry = {"db": db, "key": key, "execution": execution, "problem": text,
                 "repair": does if fix is not None else None, "repaired": False}
        self.problems.append(entry)
        if fix is not None and self.repair:
            self.fixes.append((entry, fix))

    def entries(self, name):
        return [(bytes(k), bytes(v)) for k, v in self.txn.cursor(db=self.db[name])]

    def run(self):
        self.check_executions()
        self.check_savepoints()
        self.check_heads()
        self.check_names()
        self.check_code()
        self.check_chunks()
        self.check_queue()
        self.check_leases()
        self.check_settings()
        for entry, fix in self.fixes:
            fix()
            entry["repaired"] = True

    # -- executions and savepoints --
    def check_executions(self):
        for key, raw in self.entries("executions"):
            exec_id = id_of(key)
            if exec_id is None:
                self.problem("executions", shown(key), "the key is not an execution id "
                             "(not UTF-8 text): no command can reach this record")
                continue
            self.executions.add(exec_id)
            try:
                record = self.tables.execution_record(raw, exec_id)
            except CorruptSavepoint as e:
                self.problem("executions", exec_id, f"{e} (listed as damaged; it can "
                             f"only be deleted)", exec_id)
                continue
            if record.get("id") != exec_id:
                self.problem("executions", exec_id, f"the record names another id "
                             f"({record.get('id')!r})", exec_id)
            if record.get("status") not in records.STATUSES:
                self.problem("executions", exec_id, f"unknown status "
                             f"{record.get('status')!r}", exec_id)

    def check_savepoints(self):
        orphans = collections.Counter()
        for key, raw in self.entries("savepoints"):
            cut = key.find(b"\0")
            exec_id = id_of(key[:cut]) if cut > 0 else None
            if exec_id is None or len(key) != cut + 9:
                self.problem("savepoints", shown(key), "the key is not a savepoint key "
                             "(execution id, NUL, seq)")
                continue
            seq = U64.unpack(key[cut + 1:])[0]
            where = f"{exec_id}.{seq}"
            self.newest[exec_id] = max(seq, self.newest.get(exec_id, 0))
            if exec_id not in self.executions:
                orphans[exec_id] += 1
            try:
                meta_list, record, _ = self.tables.savepoint_value(raw, seq, exec_id)
            except CorruptSavepoint as e:
                self.savepoints[(exec_id, seq)] = None
                self.damaged_savepoints = True
                self.problem("savepoints", where, f"{e} (restore to an intact savepoint, "
                             f"or delete the execution)", exec_id)
                continue
            meta = records.meta_dict(meta_list)
            self.savepoints[(exec_id, seq)] = meta
            if meta.get("seq") != seq:
                self.problem("savepoints", where, f"it says it is savepoint "
                             f"{meta.get('seq')!r}", exec_id)
            for digest in meta.get("chunks") or ():
                self.chunk_uses[bytes(digest)] += 1
            try:
                for module, qualname, digest in _codec.read_header(record):
                    self.needs_code[bytes(digest)].add(exec_id)
            except SavepointError as e:          # CorruptSavepoint too
                self.problem("savepoints", where, f"savepoint {seq} of execution "
                             f"{exec_id}: {e}", exec_id)
        for exec_id, count in orphans.items():
            self.problem("savepoints", f"{exec_id}.*", f"{count} savepoint(s) of execution "
                         f"{exec_id}, which has no execution record", exec_id)

    def check_heads(self):
        heads = {exec_id: self.tables.head(self.txn, exec_id)
                 for exec_id in sorted(self.executions)}
        self.check_listing(heads)
        for exec_id, head in heads.items():
            if head.get("damaged"):
                continue                             # said above, record by record
            last = head.get("last_seq") or 0
            if last and (exec_id, last) not in self.savepoints:
                self.problem("savepoints", f"{exec_id}.{last}", f"execution {exec_id} "
                             f"goes on from savepoint {last}, which the store does not "
                             f"hold", exec_id)

    def check_listing(self, heads):
        rebuilt = []

        def rebuild():
            if not rebuilt:              # one rebuild repairs every problem
                lmdblisting.index_all(self.tables, self.txn, heads.values())
                rebuilt.append(True)
        for exec_id, text in lmdblisting.problems(self.db, self.txn, heads):
            self.problem("listing", exec_id or "counts", text, exec_id, rebuild,
                         "rebuild the listing indexes")

    def check_names(self):
        expected = {}                    # (id, name) -> newest intact seq with that name
        for (exec_id, seq), meta in self.savepoints.items():
            if meta is not None and meta.get("name") is not None:
                key = (exec_id, meta["name"])
                expected[key] = max(seq, expected.get(key, 0))
        seen = set()
        names = self.db["names"]
        for key, value in self.entries("names"):
            cut = key.find(b"\0")
            exec_id = id_of(key[:cut]) if cut > 0 else None
            try:
                name = key[cut + 1:].decode() if exec_id is not None else None
            except UnicodeDecodeError:
                name = None
            if name is None or len(value) != 8:
                self.problem("names", shown(key), "not a savepoint name entry",
                             exec_id, lambda k=key: self.txn.delete(k, db=names),
                             "delete it")
                continue
            seq = U64.unpack(value)[0]
            seen.add((exec_id, name))
            where = f"{exec_id} {name!r}"
            want = expected.get((exec_id, name))
            if want == seq:
                continue
            pointed = self.savepoints.get((exec_id, seq), False)
            if pointed is None and (want is None or seq > want):
                continue                     # a damaged savepoint: it may be that one
            if want is not None:
                self.problem("names", where, f"points to savepoint {seq}, not to the "
                             f"newest one of that name ({want})", exec_id,
                             lambda k=key, w=want: self.txn.put(k, U64.pack(w), db=names),
                             f"point it to savepoint {want}")
            else:
                why = "which does not exist" if pointed is False else \
                    "which has another name"
                self.problem("names", where, f"points to savepoint {seq}, {why}",
                             exec_id, lambda k=key: self.txn.delete(k, db=names),
                             "delete it")
        for (exec_id, name), seq in sorted(expected.items()):
            if (exec_id, name) not in seen:
                key = name_key(exec_id, name)
                self.problem("names", f"{exec_id} {name!r}", f"savepoint {seq} is called "
                             f"{name!r}, but that name finds nothing", exec_id,
                             lambda k=key, s=seq: self.txn.put(k, U64.pack(s), db=names),
                             f"point it to savepoint {seq}")

    # -- pinned code --
    def check_code(self):
        db = self.db
        txn = self.txn
        codes = {}
        for key, raw in self.entries("code"):
            codes[key] = raw
            try:
                _codec.decode_code(self.tables.unseal(raw, f"pinned code {key.hex()}"), key)
            except CorruptSavepoint as e:
                self.problem("code", key.hex(), str(e))
        users = collections.defaultdict(set)
        for key, _ in self.entries("code_users"):
            digest, exec_id = key[:_DIGEST], id_of(key[_DIGEST:])
            if exec_id is None:
                self.problem("code_users", shown(key), "not a code-user entry", None,
                             lambda k=key: txn.delete(k, db=db["code_users"]), "delete it")
                continue
            users[digest].add(exec_id)
        by_exec = collections.defaultdict(set)
        for key, _ in self.entries("exec_codes"):
            cut = len(key) - _DIGEST - 1
            exec_id = id_of(key[:cut]) if cut > 0 and key[cut:cut + 1] == b"\0" else None
            if exec_id is None:
                self.problem("exec_codes", shown(key), "not an execution-code entry", None,
                             lambda k=key: txn.delete(k, db=db["exec_codes"]), "delete it")
                continue
            by_exec[key[cut + 1:]].add(exec_id)
        live = self.executions | {i for i, _ in self.savepoints}

        def add_use(digest, exec_id):
            txn.put(code_user_key(digest, exec_id), b"", db=db["code_users"])
            txn.put(exec_code_key(exec_id, digest), b"", db=db["exec_codes"])

        def drop_use(digest, exec_id):
            txn.delete(code_user_key(digest, exec_id), db=db["code_users"])
            txn.delete(exec_code_key(exec_id, digest), db=db["exec_codes"])

        for digest in sorted(set(users) | set(by_exec) | set(self.needs_code) | set(codes)):
            recorded, indexed = users.get(digest, set()), by_exec.get(digest, set())
            needed = self.needs_code.get(digest, set())
            for exec_id in sorted(recorded | indexed):
                where = f"{digest.hex()} {exec_id}"
                if exec_id not in live:
                    self.problem("code_users", where, f"execution {exec_id}, which is "
                                 f"gone, still counts as using this code", exec_id,
                                 lambda d=digest, i=exec_id: drop_use(d, i), "delete it")
                elif (exec_id in recorded) != (exec_id in indexed):
                    side = "exec_codes" if exec_id in recorded else "code_users"
                    self.problem("code_users", where, f"the {side} entry is missing",
                                 exec_id, lambda d=digest, i=exec_id: add_use(d, i),
                                 "add it")
            for exec_id in sorted(needed - recorded - indexed):
                if exec_id in self.executions:
                    self.problem("code_users", f"{digest.hex()} {exec_id}", f"savepoints "
                                 f"of execution {exec_id} use this code, but it is not "
                                 f"counted as a user (deleting another execution could "
                                 f"delete the code)", exec_id,
                                 lambda d=digest, i=exec_id: add_use(d, i), "add it")
            if digest not in codes:
                for exec_id in sorted(needed):
                    self.problem("code", digest.hex(), f"savepoints of execution {exec_id} "
                                 f"need this code, which the store does not hold", exec_id)
            elif not (needed | ((recorded | indexed) & live)):
                self.problem("code", digest.hex(), "pinned code nothing uses", None,
                             lambda d=digest: txn.delete(d, db=db["code"]), "delete it")

    # -- chunks --
    def check_chunks(self):
        db, txn = self.db, self.txn
        held = {}
        for key, raw in self.entries("chunks"):
            held[key] = True
            try:
                data = self.tables.unseal(raw, f"chunk {key.hex()}")
                if type(data) is not bytes or _codec.chunk_hash(data) != key:
                    raise CorruptSavepoint(f"chunk {key.hex()} is damaged (its hash "
                                           f"does not match)")
            except CorruptSavepoint as e:
                self.problem("chunks", key.hex(), str(e))
        counts = {}
        for key, value in self.entries("chunk_refs"):
            counts[key] = U64.unpack(value)[0] if len(value) == 8 else None
        safe = not self.damaged_savepoints
        why = "" if safe else " (not repaired while a savepoint is damaged: it may use it)"

        def set_count(digest, n):
            if n:
                txn.put(digest, U64.pack(n), db=db["chunk_refs"])
            else:
                txn.delete(digest, db=db["chunk_refs"])
                txn.delete(digest, db=db["chunks"])

        for digest in sorted(set(held) | set(counts) | set(self.chunk_uses)):
            uses, count = self.chunk_uses.get(digest, 0), counts.get(digest)
            fix = (lambda d=digest, n=uses: set_count(d, n)) if safe else None
            if uses and digest not in held:
                self.problem("chunks", digest.hex(), f"{uses} savepoint(s) use this chunk, "
                             f"which the store does not hold")
            elif not uses and digest in held:
                self.problem("chunks", digest.hex(), "a chunk nothing uses" + why, None,
                             fix, "delete it")
            elif not uses:
                self.problem("chunk_refs", digest.hex(), "a reference count of no chunk" +
                             why, None, fix, "delete it")
            elif count != uses:
                self.problem("chunk_refs", digest.hex(), f"reference count {count}, but "
                             f"{uses} savepoint(s) use it" + why, None, fix,
                             f"set it to {uses}")

    # -- run queue, leases, settings --
    def check_queue(self):
        db, txn, tables = self.db, self.txn, self.tables
        queued = set()
        for key, _ in self.entries("queue"):
            queued.add(key)
            problem = tables.queue_problem(txn, key)
            if problem is not None:
                why, how = problem
                exec_id = id_of(key[8:]) if len(key) > 8 else None
                when = f" (due {_when(U64.unpack(key[:8])[0])})" if len(key) > 8 else ""
                self.problem("queue", shown(key[8:]), f"a run-queue entry out of step"
                             f"{when}: {why}", exec_id,
                             lambda k=key, h=how: tables.repair_queue_entry(txn, k, h),
                             "delete it" if how == "delete" else "add the due-index entry")
        for key, value in self.entries("due"):
            exec_id = id_of(key)
            if exec_id is None:
                self.problem("due", shown(key), "the key is not an execution id", None,
                             lambda k=key: txn.delete(k, db=db["due"]), "delete it")
            elif exec_id not in self.executions:
                self.problem("due", exec_id, f"execution {exec_id} does not exist", exec_id,
                             lambda k=key, v=value: (txn.delete(k, db=db["due"]),
                                                     txn.delete(v + k, db=db["queue"])),
                             "delete it")
            elif len(value) != 8:
                self.problem("due", exec_id, "not a due time", exec_id,
                             lambda k=key, i=exec_id: (txn.delete(k, db=db["due"]),
                                                       tables.schedule(txn, i, 0)),
                             "put the execution on the queue, due now")
            elif value + key not in queued and \
                    txn.get(key, db=db["leases"]) is None:     # leased: off the queue
                self.problem("due", exec_id, f"execution {exec_id} is due "
                             f"{_when(U64.unpack(value)[0])} but not on the run queue "
                             f"(no worker would ever run it)", exec_id,
                             lambda k=key, v=value: txn.put(v + k, b"", db=db["queue"]),
                             "put it on the queue")

    def check_leases(self):
        db, txn = self.db, self.txn
        indexed = {}                     # index entry -> (index, execution id or None)
        for index, cut in (("lease_owners", OWNER_KEY_SIZE), ("lease_expiry", 8),
                           ("held", OWNER_KEY_SIZE + 8)):
            for key, _ in self.entries(index):
                indexed[key] = (index, id_of(key[cut:]) if len(key) > cut else None)

        def drop(key, exec_id):
            """The lease and every index entry naming its execution."""
            txn.delete(key, db=db["leases"])
            for entry, (index, of) in indexed.items():
                if of is not None and of == exec_id:
                    txn.delete(entry, db=db[index])
            if exec_id is not None and exec_id in self.executions:
                due = txn.get(key, db=db["due"])
                if due is not None:                  # queued again, as the lease goes
                    txn.put(bytes(due) + key, b"", db=db["queue"])

        for key, raw in self.entries("leases"):
            exec_id = id_of(key)
            if exec_id is None:
                self.problem("leases", shown(key), "the key is not an execution id",
                             None, lambda k=key: drop(k, None), "delete it")
                continue
            try:
                lease = self.tables.lease_of(raw, f"lease of execution {exec_id}")
            except CorruptSavepoint as e:
                self.problem("leases", exec_id, f"{e} (the next claim takes it as no "
                             f"lease)", exec_id, lambda k=key, i=exec_id: drop(k, i),
                             "delete it")
                self.forget_index_entries(indexed, exec_id)
                continue
            if exec_id not in self.executions:
                self.problem("leases", exec_id, f"a lease of execution {exec_id}, which "
                             f"does not exist", exec_id,
                             lambda k=key, i=exec_id: drop(k, i), "delete it")
                self.forget_index_entries(indexed, exec_id)
                continue
            entries = list(zip(("lease_owners", "lease_expiry"),
                               lease_index_keys(exec_id, lease)))
            due = txn.get(key, db=db["due"])
            if due is not None:              # leased and due: in its owner's held
                entries.append(("held", owner_key(lease.owner) + bytes(due) + key))
            for index, entry in entries:
                if indexed.pop(entry, None) is None:
                    self.problem(index, exec_id, f"the lease of execution {exec_id} has "
                                 f"no {index} entry ({_MISSED[index]})", exec_id,
                                 lambda e=entry, i=index: txn.put(e, b"", db=db[i]),
                                 "add it")
        for entry, (index, exec_id) in sorted(indexed.items()):
            self.problem(index, shown(entry), "an entry of no lease (or of another "
                         "one)", exec_id,
                         lambda e=entry, i=index: txn.delete(e, db=db[i]), "delete it")

    @staticmethod
    def forget_index_entries(indexed, exec_id):
        """The entries of a lease reported already: its repair deletes them."""
        for entry in [e for e, (_, of) in indexed.items() if of == exec_id]:
            del indexed[entry]

    def check_settings(self):
        db, txn = self.db, self.txn
        for key, raw in self.entries("settings"):
            try:
                name = key.decode()
            except UnicodeDecodeError:
                self.problem("settings", shown(key), "the name is not UTF-8 text: no "
                             "command can reach this setting")
                continue
            try:
                self.tables.unseal(raw, f"setting {name!r}")
            except CorruptSavepoint as e:
                self.problem("settings", name, f"{e} (set it again, or delete it)")
                continue
            target = name[len(records.SIGNAL_PREFIX):]
            if name.startswith(records.SIGNAL_PREFIX) and target not in self.executions:
                self.problem("settings", name, f"a request for execution {target}, which "
                             f"does not exist", target,
                             lambda k=key: txn.delete(k, db=db["settings"]), "delete it")
