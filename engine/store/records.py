"""The record layout, defined once: which fields an execution record carries, and how a
savepoint stores itself -- [meta, record, state], meta and state as lists in the orders
below (the names are kept here, not in every savepoint).  Every backend stores these
records; the runtime reads and writes the execution fields; the compiled commit path
(engine._commit.SavepointLayout) packs and applies savepoints in these orders.

An execution is a dict of EXECUTION_FIELDS.  A savepoint carries the STATE_FIELDS of the
execution as its commit left it, so the savepoint and the state change that comes with it
are one value; the execution's head is its record, updated with its newest savepoint's
state when that is newer ("version": nanoseconds, never decreasing for one execution).
"""

STATUSES = ("QUEUED", "RUNNING", "WAITING", "PAUSED", "ENDED_SUCCESS", "ENDED_ERROR",
            "ENDED_CANCELLED")
ENDED_ERROR = "ENDED_ERROR"      # also the status of an execution whose record is lost

# name -> what it holds; the runtime writes no other field
EXECUTION_FIELDS = {
    "id": "the execution's id (uuid4 hex)",
    "flow": '"module:function" of its flow ("" when its record is lost)',
    "status": "one of STATUSES",
    "inputs": "what the flow was started with",
    "output": "what the flow returned (or set with this.set_output)",
    "outputs": "{key: value} set with this.set_output(key, value)",
    "error": '"Type: message" when it ended in error, else None',
    "log": "[[time, text], ...] written with this.log",
    "name": "the name it was started with, or None",
    "parent": "the id of the execution that started it with this.flow, or None",
    "created_at": "UNIX time of start",
    "updated_at": "UNIX time of its last change",
    "due": "UNIX time it is runnable from (on the run queue), or None",
    "retention": 'savepoint retention ("all", "last") or None for the engine\'s',
    "restore_count": "how often it was restored",
    "restores": "{seq: times} this.load_dump loaded each savepoint (a restore-loop guard)",
    "resume_from": "the seq a restore or fork goes on from, until it has resumed",
    "paused": "[status, due] that resume puts back",
    "waiting_for": "ids of the children this.wait_for waits for, or None",
    "timeout_at": "UNIX time this.set_timeout ends it at, or None",
    "received": "{topic: n} the newest message this.receive took on each topic",
    "receiving": "the topic this.receive waits on, or None",
    "version": "state stamp: nanoseconds, never decreasing (set by every write)",
    "last_seq": "seq of its newest savepoint (0: none yet)",
    "last_implicit": "seq of its newest implicit savepoint (retention \"last\" drops it)",
    "last_implicit_chunks": "the chunks that savepoint uses",
}
# Set on an execution dict in memory, never stored: what this process last wrote as its
# due time and status (the commit path moves the queue, and the LMDB listing, only when
# they change), and what is damaged (said when the head is read).
NOT_STORED = ("_due_written", "_status_written", "damaged")

# The setting that holds a request for an execution a worker is running (the runtime's
# cancel, pause, delete, ...): this prefix and the execution's id.  It goes when the
# execution is deleted or changed by update_unless_leased.
SIGNAL_PREFIX = "signal:"

# What a savepoint says about itself.  "seq", "size" and "chunks" are the commit's own;
# the rest come from the meta dict the runtime passes.
META_FIELDS = ("seq", "kind", "name", "created_at", "line", "action", "command", "size",
               "chunks")
# The part of the execution a savepoint carries.  "version", "last_seq" and, for an
# implicit savepoint, "last_implicit" and "last_implicit_chunks" are the commit's own.
STATE_FIELDS = ("version", "last_seq", "status", "updated_at", "due", "restore_count",
                "error", "last_implicit", "last_implicit_chunks", "received")
assert set(STATE_FIELDS) <= set(EXECUTION_FIELDS)
# Savepoints written before "received" was added carry the fields before it (applying
# one leaves the later fields as the execution's record has them)
OLDEST_STATE_LENGTH = STATE_FIELDS.index("received")


def meta_dict(fields):
    """A savepoint's meta list as a dict."""
    return dict(zip(META_FIELDS, fields))


def damaged_meta(seq, size, why):
    """The meta dict listed for a savepoint that cannot be read: kind "damaged", what is
    damaged, its stored size; its other fields None."""
    meta = dict.fromkeys(META_FIELDS)
    meta.update(seq=seq, kind="damaged", size=size, damaged=why)
    return meta


def is_execution_record(value):
    """Whether an unsealed value has the shape of an execution record."""
    return type(value) is dict and isinstance(value.get("status", ""), str)


def is_savepoint(value):
    """Whether an unsealed value has the shape of a savepoint: [meta, record, state]."""
    return type(value) is list and len(value) == 3 and type(value[0]) is list and \
        bool(value[0]) and type(value[1]) is bytes and type(value[2]) is list and \
        len(value[2]) >= OLDEST_STATE_LENGTH
