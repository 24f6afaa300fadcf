"""The seam between the runtime and the store: the protocol every store backend implements
(engine.store.lmdb.LmdbStore today; a PostgreSQL backend later), written down.  Engine,
its executions, the workers and the `engine` command speak only these methods.

Records are plain dicts laid out as engine/store/records.py says: an execution record
(EXECUTION_FIELDS) and a savepoint's meta (META_FIELDS).  A savepoint's record is the
codec's bytes (engine._codec.encode_snapshot).  Every value a backend keeps is signed
(engine.signing): a damaged or forged one raises CorruptSavepoint naming what it belonged
to, and affects only its own execution.  A write that finds no room raises StoreFull and
writes nothing.
"""
from types import CodeType
from typing import Any, Callable, Iterable, Protocol, Self, TypedDict

from engine import _codec
from engine.config import RETENTIONS
from engine.errors import CorruptSavepoint
from engine.store import listing
from engine.store.leases import Lease, Owner

ExecutionRecord = dict[str, Any]
SavepointMeta = dict[str, Any]


def retention_error(value: object) -> ValueError:
    """The ValueError for a savepoint_retention that is not one of RETENTIONS."""
    return ValueError(f"savepoint_retention must be one of {RETENTIONS}, not {value!r}")


class Problem(TypedDict):
    db: str                    # where it is (a backend's own name for the table)
    key: str                   # which entry, as people read it
    execution: str | None      # the execution it belongs to, if any
    problem: str               # what is wrong, one line
    repair: str | None         # what check(repair=True) does about it, or None
    repaired: bool


class CheckReport(TypedDict):
    checked: dict[str, int]    # entries looked at, by table
    problems: list[Problem]


class StoreProtocol(Protocol):
    """What the runtime asks of a store.  Methods are safe to call from many threads of
    a process and from many processes at once (an engine runs up to ``concurrency``
    executions per process on threads); each write is one transaction (all of it or
    nothing).  Writes that threads make at the same time may share one commit -- with
    "sync", one flush to disk -- but each call returns only when its own write is
    committed (durable for "sync"), and a write that fails fails only its own call."""

    path: str          # where the store is (what Engine(path=...) names)
    durability: str    # "sync": a commit survives power loss; "async": a killed process
    # How long an idle engine may go without looking at the run queue by itself: short
    # for a store that cannot tell it of new work (LMDB: 0.02), long -- a safety net --
    # for one that can (on_work).
    poll_seconds: float

    def close(self) -> None:
        """Let go of the store; further calls are not allowed.  Idempotent."""
        ...

    def __enter__(self) -> Self:
        ...

    def __exit__(self, *exc: object) -> None:
        """close()"""
        ...

    def on_work(self, callback: Callable[[float | None], None]) -> bool:
        """Have ``callback(due)`` called, from a thread of the store's own, whenever an
        execution may have become claimable (put on the run queue, or its lease let go
        while queued) by another process or this one: ``due`` is the UNIX time it is
        due from, None for "look now" (what was said meanwhile may be lost).  Whether the
        store can do this at all -- False for LMDB, where no process can wake another:
        then an idle engine looks every poll_seconds.  A store that can still expects a
        look every poll_seconds, and at the next_due time (a lease running out is told by
        no one)."""
        ...

    # -- executions --
    def put_execution(self, execution: ExecutionRecord) -> None:
        """Create or replace an execution (a dict with at least "id").  Sets its
        "version" (a stamp newer than any the execution had); its "due" (a UNIX time, or
        None) puts it on the run queue or takes it off, in the same transaction.  Fields
        in records.NOT_STORED are dropped from the dict."""
        ...

    def add_execution(self, execution: ExecutionRecord) -> bool:
        """put_execution, unless an execution with that id exists already: then nothing
        is written.  Whether it was added (one transaction: of processes racing to add
        one id, exactly one adds it)."""
        ...

    def get_execution(self, exec_id: str) -> ExecutionRecord | None:
        """The execution's head -- its record with the state of its newest savepoint
        applied when that is newer -- or None if there is no such execution.  Never
        fails for damage: a damaged execution comes back with "damaged" saying what
        (its record lost: status ENDED_ERROR, flow "")."""
        ...

    def executions(self) -> list[ExecutionRecord]:
        """Every execution's head (as get_execution), in id order."""
        ...

    # The listing (the Savepoints page, engine.store.listing).  Each has a body that reads
    # every head: correct for any backend, but it reads every execution at every call.
    # The LMDB store keeps indexes instead (engine.store.lmdblisting), the PostgreSQL
    # store columns of executions and counts by status (engine.store.pglisting).
    def list_executions(self, status: str | None = None, flow: str | None = None,
                        offset: int = 0, limit: int = 50
                        ) -> tuple[list[ExecutionRecord], int]:
        """(heads of one page of executions, how many match in all): newest first
        (listing.newest_first), only those of ``status`` (a records.STATUSES name) and
        ``flow`` (listing.flow_matches), skipping ``offset``, at most ``limit``.  Must
        not read every execution for a page when no flow filter is given."""
        return listing.scan_page(self.executions(), status, flow, offset, limit)

    def status_counts(self) -> dict[str, int]:
        """{status: how many executions have it}, every status (zeros too); cheap."""
        return listing.scan_counts(self.executions())

    def children(self, exec_id: str) -> list[str]:
        """The ids of the executions whose parent is ``exec_id``, oldest first."""
        return listing.scan_children(self.executions(), exec_id)

    def savepoint_page(self, exec_id: str, offset: int = 0, limit: int = 100,
                       newest: bool = True) -> tuple[list[SavepointMeta], int]:
        """(one page of the execution's savepoints' meta dicts -- newest first if
        ``newest``, else oldest first -- how many it has), reading only the page's."""
        return listing.scan_savepoint_page(self.savepoints(exec_id), offset, limit, newest)

    def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` execution ids that start with ``prefix``, the exact id first
        if there is one."""
        ...

    def update_unless_leased(self, exec_id: str,
                             change: Callable[[ExecutionRecord], None],
                             now: float | None = None
                             ) -> tuple[str, ExecutionRecord | None]:
        """In one transaction: unless a live owner leases the execution, apply
        ``change(head)`` (which may raise: then nothing is written), store the head and
        delete the execution's pending request (setting "signal:<id>").  Returns
        ("missing", None), ("leased", head) or ("done", head)."""
        ...

    def wake_if(self, exec_id: str, wanted: Callable[[ExecutionRecord], bool],
                now: float | None = None) -> bool:
        """In one transaction: if ``wanted(head)``, make the execution due ``now`` (its
        holder, if any, claims it back: how a parked one is woken from elsewhere).
        Whether it was woken; False for a missing one."""
        ...

    def delete_unless_leased(self, exec_id: str, now: float | None = None) -> str:
        """delete_execution, unless a live owner leases the execution: "missing",
        "leased" or "done"."""
        ...

    def delete_execution(self, exec_id: str) -> bool:
        """Delete the execution with all its savepoints and their names, its queue
        entry, lease and pending request, in one transaction; code and chunks nothing
        uses any more go too.  False if there was no such execution."""
        ...

    # -- messages (eng.send, this.receive) --
    def add_message(self, exec_id: str, topic: str, value: Any,
                    accept: Callable[[ExecutionRecord], bool],
                    now: float | None = None) -> str:
        """In one transaction: call ``accept(head)`` (it may raise: then nothing is
        written), append the message after the execution's others, and if accept said
        True make the execution due now (its receiver waits for this topic).  "missing"
        (no such execution), "sent" or "woke".  Ordered with ``message``: a receiver
        that looks for messages after committing that it waits is either seen waiting
        here or sees this message."""
        ...

    def message(self, exec_id: str, topic: str, after: int = 0) -> tuple[int, Any] | None:
        """(n, value) of the execution's oldest message on ``topic`` numbered above
        ``after`` (messages are numbered 1, 2, ... in the order sent), or None."""
        ...

    # -- savepoints --
    def commit_savepoint(self, execution: ExecutionRecord, meta: SavepointMeta,
                         record: bytes, codes: Any = (),
                         chunks: dict[bytes, bytes] | None = None, *,
                         retention: str = "all") -> int:
        """Store the savepoint after the execution's last one together with the
        execution's new state (records.STATE_FIELDS, in the same transaction: never a
        savepoint without its execution's state, never a state pointing at a missing
        savepoint), update ``execution`` to that state and return the savepoint's seq.
        ``meta``: kind ("implicit"/"explicit"), name, created_at, line, action, command
        -- a named one becomes what seq_of(name) finds.  ``codes``: the code objects the
        record refers to, pinned (once per fingerprint, for as long as an execution uses
        them).  ``chunks``: {hash: bytes} of big values cut out of the record, shared by
        content.  ``retention`` "last": the execution's previous implicit savepoint goes
        (another value: retention_error).  This runs at every Flow-API call: a backend
        must make the common case (code pinned already, nothing else) one write."""
        ...

    def savepoints(self, exec_id: str) -> list[SavepointMeta]:
        """The execution's savepoints' meta dicts, oldest first.  A damaged one is
        records.damaged_meta: kind "damaged" and what is damaged."""
        ...

    def savepoint(self, exec_id: str, seq: int) -> tuple[SavepointMeta, bytes] | None:
        """(meta, record) of one savepoint, or None; CorruptSavepoint if damaged."""
        ...

    def seq_of(self, exec_id: str, name: str) -> int | None:
        """The seq of the execution's newest savepoint called ``name``, or None."""
        ...

    def code(self, digest: bytes) -> CodeType | None:
        """The pinned code object with this fingerprint (verified), or None."""
        ...

    def codes_for(self, record: bytes) -> dict[bytes, CodeType]:
        """{fingerprint: code} of every code a savepoint record needs; CorruptSavepoint
        naming the first one the store does not hold.  (Both stores: by code().)"""
        out = {}
        for module, qualname, digest in _codec.read_header(record):
            code = self.code(digest)
            if code is None:
                raise CorruptSavepoint(f"savepoint needs code {module}.{qualname} "
                                       f"({digest.hex()}), which the store does not hold")
            out[digest] = code
        return out

    def chunk(self, digest: bytes) -> bytes | None:
        """A chunk's bytes, or None (decode_snapshot checks them against the hash)."""
        ...

    # -- the run queue and leases --
    def claim(self, owner: Owner, *, lease_seconds: float = 30.0,
              now: float | None = None) -> str | None:
        """claim_many(owner, 1): the id claimed, or None."""
        ...

    def claim_many(self, owner: Owner, limit: int, *, lease_seconds: float = 30.0,
                   now: float | None = None) -> list[str]:
        """Atomically take up to ``limit`` due executions: first those ``owner`` holds
        itself that were made due meanwhile (its parked ones, woken by a child that
        ended elsewhere: it wakes them), then the earliest that no one leases; lease
        them to ``owner`` until ``now + lease_seconds``, take them off the queue and
        return their ids (one transaction).  Two owners never claim the same execution;
        one another owner holds is never handed out.  First, executions whose owner died
        (seen at once on this machine) or whose lease ran out go back on the queue --
        at their due time, or due now -- to resume from their last savepoint.  The
        work does not grow with the number of leases held: each owner is checked once.
        When a look that takes no write lock finds nothing to claim, none is taken."""
        ...

    def next_due(self, now: float | None = None, *,
                 owner: Owner | None = None) -> float | None:
        """The earliest time (UNIX) from which claim (by ``owner``, if given) could hand
        out something: the run queue's first due time, that of an execution ``owner``
        holds itself and something made due (see claim_many), the earliest expiry of a
        lease, or ``now`` if an owner holding leases is dead (checked once per owner).
        None if nothing is queued or leased.  Read-only and cheap: an idle engine looks
        here between claims -- every poll_seconds, or (a store that tells of new work,
        on_work) when told and at the time this gives."""
        ...

    def claim_one(self, exec_id: str, owner: Owner, *, lease_seconds: float = 30.0,
                  now: float | None = None) -> bool:
        """Lease this execution to ``owner`` and take it off the queue, unless another
        live owner holds it (or it does not exist); True if taken."""
        ...

    def lease(self, exec_id: str) -> Lease | None:
        """The execution's lease, or None (a damaged one counts as none)."""
        ...

    def renew(self, exec_id: str, owner: Owner, *, lease_seconds: float = 30.0,
              now: float | None = None) -> bool:
        """exec_id in renew_many([exec_id], owner)."""
        ...

    def renew_many(self, exec_ids: Iterable[str], owner: Owner, *,
                   lease_seconds: float = 30.0, now: float | None = None) -> set[str]:
        """Extend ``owner``'s leases on these executions to ``now + lease_seconds``, in
        one transaction (a process renews the leases of all it runs and parks at once).
        Returns the ids whose lease ``owner`` still held, renewed; the others are lost
        to it (another owner took them, or they were recovered)."""
        ...

    def release(self, exec_id: str, owner: Owner,
                execution: ExecutionRecord | None = None) -> None:
        """Give up ``owner``'s lease (if it still holds it), writing ``execution`` (as
        put_execution) in the same transaction if given."""
        ...

    def queue_depth(self, now: float | None = None) -> int:
        """How many executions are due and waiting for a worker (a leased one is not
        waiting: it is held, running or parked)."""
        ...

    # -- settings: user settings, requests to running executions, worker reports --
    def get_setting(self, name: str, default: Any = None) -> Any:
        """The setting's value, or ``default``; CorruptSavepoint if damaged."""
        ...

    def set_setting(self, name: str, value: Any) -> None:
        ...

    def delete_setting(self, name: str) -> None:
        """Delete the setting (nothing if there is none)."""
        ...

    def settings(self, prefix: str = "",
                 damaged: dict[str, Exception] | None = None) -> dict[str, Any]:
        """{name: value} of the settings whose names start with ``prefix``; a damaged one
        is left out -- and logged, or, given ``damaged``, put there as {name: the
        CorruptSavepoint} for the caller to handle."""
        ...

    # -- engine doctor --
    def check(self, repair: bool = False) -> CheckReport:
        """Verify every record and index of the store, one Problem each.  ``repair``:
        also fix, in one transaction, what can be fixed without losing anything anyone
        could still use -- derived records only (indexes, names, reference counts, what
        nothing uses, stale leases), never an execution, a savepoint or a setting."""
        ...
