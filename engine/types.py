"""The public types: an execution's status, and what the API returns about executions,
savepoints (one at a time or a page at a time), the frames of a savepoint and what changed
between two."""
import dataclasses
import datetime
import enum
from typing import Any


class Status(str, enum.Enum):
    """An execution's status; the stored records spell the same names
    (engine.store.records.STATUSES, checked by tests/test_package.py)."""
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    PAUSED = "PAUSED"
    ENDED_SUCCESS = "ENDED_SUCCESS"
    ENDED_ERROR = "ENDED_ERROR"
    ENDED_CANCELLED = "ENDED_CANCELLED"

    def __str__(self):
        return self.value


ENDED = (Status.ENDED_SUCCESS, Status.ENDED_ERROR, Status.ENDED_CANCELLED)


def parse_status(value):
    """A Status from a Status or its name, any case; ValueError naming the choices."""
    try:
        return Status(str(value).upper())
    except ValueError:
        raise ValueError(f"status must be one of {', '.join(s.value for s in Status)}, "
                         f"not {value!r}") from None


def _utc(ts):
    return None if ts is None else datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


@dataclasses.dataclass
class Execution:
    id: str
    flow: str
    status: Status
    inputs: Any = None
    output: Any = None
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    name: str | None = None
    restore_count: int = 0
    parent: str | None = None
    # [(aware UTC datetime, text)]; None for entries stored before the log had times
    log: list[tuple[datetime.datetime | None, str]] = dataclasses.field(default_factory=list)
    # what of it is damaged in the store (its record, its newest savepoint), or None.
    # Its record damaged: ENDED_ERROR, flow "" (lost); it can only be deleted.  Its
    # newest savepoint damaged: as its record says; restore to an intact savepoint.
    damaged: str | None = None
    # the topic a this.receive waits on while it is WAITING for a message, else None
    receiving: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Execution":
        """The execution a stored record describes."""
        return cls(id=record["id"], flow=record.get("flow") or "",
                   status=Status(record["status"]),
                   inputs=record.get("inputs"), output=record.get("output"),
                   outputs=dict(record.get("outputs") or {}), error=record.get("error"),
                   created_at=_utc(record.get("created_at")),
                   updated_at=_utc(record.get("updated_at")), name=record.get("name"),
                   restore_count=record.get("restore_count") or 0,
                   parent=record.get("parent"), log=_log_entries(record.get("log")),
                   damaged=record.get("damaged"),
                   receiving=record.get("receiving")
                   if record["status"] == Status.WAITING.value else None)


def _log_entries(stored):
    """The log as (aware UTC datetime, text) pairs; entries written before the log had
    times (plain strings) get None."""
    return [(_utc(entry[0]), entry[1]) if isinstance(entry, (list, tuple))
            else (None, str(entry)) for entry in stored or ()]


def savepoint_id(execution_id: str, seq: int) -> str:
    """A savepoint's id: "<execution id>.<seq>"."""
    return f"{execution_id}.{seq}"


@dataclasses.dataclass
class Savepoint:
    id: str
    execution_id: str
    seq: int
    kind: str
    name: str | None
    created_at: datetime.datetime
    line: int
    action: str
    command: str | None
    size: int
    damaged: str | None = None      # what is damaged (kind "damaged"; the rest is None)

    @classmethod
    def from_meta(cls, execution_id: str, meta: dict[str, Any]) -> "Savepoint":
        """The savepoint its stored metadata describes."""
        return cls(id=savepoint_id(execution_id, meta["seq"]), execution_id=execution_id,
                   seq=meta["seq"], kind=meta["kind"], name=meta["name"],
                   created_at=_utc(meta["created_at"]), line=meta["line"],
                   action=meta["action"], command=meta["command"], size=meta["size"],
                   damaged=meta.get("damaged"))


@dataclasses.dataclass
class ExecutionPage:
    """One page of a listing of executions (Engine.executions_page): newest first,
    ``total`` of them match in all."""
    executions: list[Execution]
    total: int
    offset: int
    limit: int


@dataclasses.dataclass
class SavepointPage:
    """One page of an execution's savepoints (Engine.savepoints_page); it has ``total``."""
    savepoints: list[Savepoint]
    total: int
    offset: int
    limit: int


@dataclasses.dataclass
class FrameView:
    """One frame of a savepoint as inspection shows it (Engine.inspect): nothing of the
    flow ran to make it, no module was imported; instances, iterators and names of
    modules not imported are engine._codec.Unbuilt stand-ins showing class and state."""
    function: str
    module: str
    file: str
    line: int | None
    locals: dict[str, Any]
    unbound: list[str] = dataclasses.field(default_factory=list)   # no value yet


CHANGE_KINDS = ("changed", "added", "removed", "entered", "left")


@dataclasses.dataclass
class Change:
    """One thing the flow's frames did between two savepoints (Engine.diff): in the frame
    running ``frame`` (a function's qualified name) at ``depth`` (0: the outermost), the
    local ``name`` went from ``before`` to ``after`` -- kind "changed", or "added" (bound
    since: ``before`` is None) or "removed" (unbound since: ``after`` is None); or the
    whole frame was "entered" or "left" (``name`` None; ``after`` or ``before`` holds its
    locals).  Values are decoded as FrameView's are: nothing of the flow ran."""
    frame: str
    name: str | None
    before: Any
    after: Any
    kind: str = "changed"           # one of CHANGE_KINDS
    depth: int = 0
