"""The exceptions savepoint-engine raises to its users."""


class SavepointError(Exception):
    """A savepoint cannot be taken (or restored) here.

    The message names the function, file and line, and says why: C code between flow
    frames, a generator frame, a value that cannot be saved, and so on.  A failed
    savepoint leaves the previous one intact.
    """


class CorruptSavepoint(SavepointError):
    """A stored savepoint record is damaged, truncated or tampered with, and was refused."""
