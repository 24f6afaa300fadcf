"""Every exception savepoint-engine raises to its users, under one base: EngineError.

Where a Python built-in already names the kind of mistake, the engine's exception is also
that built-in (ExecutionNotFound is a KeyError, InvalidTransition a ValueError), so
``except KeyError`` and ``except engine.EngineError`` both work.
"""


class EngineError(Exception):
    """The base of every exception the engine raises."""


class SavepointError(EngineError):
    """A savepoint cannot be taken (or restored) here.

    The message names the function, file and line, and says why: C code between flow
    frames, a generator frame, a value that cannot be saved, and so on.  A failed
    savepoint leaves the previous one intact.
    """


class CorruptSavepoint(SavepointError):
    """A stored savepoint record is damaged, truncated or tampered with, and was refused."""


class CorruptStore(EngineError):
    """The store's LMDB file is truncated, empty or damaged where a store was expected,
    and was refused before anything read it (reading past the end of a mapped file would
    kill the process with SIGBUS).  The message names the file and what is wrong; nothing
    was changed.  (A store directory without data.mdb is a new store, not this.)"""


class StoreUnavailable(EngineError, ConnectionError):
    """The store's database server cannot be reached or refused the connection: a wrong
    host or port, a server that is down, a wrong user, password or database name.  The
    message names the server -- never the password -- and what it answered, in one
    line."""


class StoreClosed(EngineError, ValueError):
    """The engine (or store) was closed, and then used: open a new Engine.  (As a closed
    file's ValueError: without it, LMDB said only "Attempt to operate on closed/deleted/
    dropped object" and PostgreSQL retried a closed pool as a lost connection for
    retry_seconds.)"""


class StoreFull(EngineError, OSError):
    """No space is left on the device holding the store: the write was not made, and
    what was stored before is intact.  The Flow-API call that needed the write fails
    with this; the execution goes back to the queue (QUEUED, to go on from its last
    savepoint) if that can still be written, else to lease recovery."""


class FlowError(EngineError):
    """this.error(message), or a child execution that failed: the execution ends
    ENDED_ERROR with that message."""


class FlowNotFound(EngineError, ImportError):
    """The flow's module cannot be imported in this process (or lacks the function).
    Nothing is damaged: the execution stays QUEUED, with this error shown, until a
    process that can import it runs it."""


class ExecutionNotFound(EngineError, KeyError):
    """No execution has this id (or unique id prefix), or the prefix is ambiguous."""

    def __str__(self):              # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SavepointNotFound(EngineError, KeyError):
    """The execution has no savepoint by that id, seq or name."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class InvalidTransition(EngineError, ValueError):
    """cancel/pause/resume of an execution in a state that operation does not apply to
    (cancel of an ended execution, resume of one that is not PAUSED, ...); nothing was
    changed."""


class WorkerStartError(EngineError):
    """A worker process could not start (its --flows module failed, ...), again and
    again: the pool gave up."""
