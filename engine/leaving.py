"""Why a flow leaves before it returns: one small class per reason, carried out of the
flow by engine._frames.Unwind (its first argument) and matched on by the driver
(engine.runner), which turns each into the execution's next state.

They live apart from the driver because the Flow-API objects (ext/_flowapi.pyx) raise
them too, and the driver imports those objects.
"""


class Leave:
    """Why the flow left."""
    __slots__ = ()

    def __repr__(self):
        return f"{type(self).__name__}()"


class Idle(Leave):
    """It waits (a long sleep, an unfinished child): unloaded, WAITING until its due time."""
    __slots__ = ()


class Stop(Leave):
    """This engine is stopping: back to the queue, for any worker."""
    __slots__ = ()


class Lost(Leave):
    """Its lease is someone else's now: nothing more is written."""
    __slots__ = ()


class Gone(Leave):
    """It was ended (or deleted) elsewhere meanwhile: nothing more is written."""
    __slots__ = ()


class Timeout(Leave):
    """Its timeout expired: it ends ENDED_ERROR."""
    __slots__ = ()


class Load(Leave):
    """this.load_dump: go on from savepoint ``seq`` instead."""
    __slots__ = ("seq",)
    __match_args__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq

    def __repr__(self):
        return f"Load({self.seq!r})"


class Fail(Leave):
    """It ends ENDED_ERROR with ``message`` (a restore loop, found by load_dump)."""
    __slots__ = ("message",)
    __match_args__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self):
        return f"Fail({self.message!r})"
