"""Why a flow leaves before it returns: one small class per reason, carried out of the
flow by engine._frames.Unwind (its first argument) and matched on by the driver
(engine.runner), which turns each into the execution's next state.

They live apart from the driver because the Flow-API objects (ext/_flowapi.pyx) raise
them too, and the driver imports those objects.
"""
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Leave:
    """Why the flow left (the events without fields are its plain subclasses)."""


class Idle(Leave):
    """It waits past sleep_max_seconds: unloaded, WAITING until its due time."""


class Stop(Leave):
    """This engine is stopping: back to the queue, for any worker."""


class Lost(Leave):
    """Its lease is someone else's now: nothing more is written."""


class Gone(Leave):
    """It was ended (or deleted) elsewhere meanwhile: nothing more is written."""


class Timeout(Leave):
    """Its timeout expired: it ends ENDED_ERROR."""


@dataclass(frozen=True, slots=True)
class Load(Leave):
    """this.load_dump: go on from savepoint ``seq`` instead."""
    seq: int


@dataclass(frozen=True, slots=True)
class Park(Leave):
    """It waits in memory (engine.scheduler): ``frames`` are the flow as captured for the
    savepoint just committed, kept as they are -- nothing is encoded again -- and it goes
    on with ``result`` as the outcome of ``action`` once woken: at ``wake_at`` (a sleep;
    UNIX time) or, with None, when its children end."""
    frames: tuple
    action: str
    result: object
    wake_at: float | None


@dataclass(frozen=True, slots=True)
class Fail(Leave):
    """It ends ENDED_ERROR with ``message`` (a restore loop, found by load_dump)."""
    message: str
