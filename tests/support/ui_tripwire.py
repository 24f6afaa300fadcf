"""A flow module that notes each time it is imported, and each time an object of its
class is built or shown (in the file $UI_TEST_TRIPWIRE names, when it is set): the
Savepoints page must do neither -- it shows savepoints without running flow code."""
import os


def _note(what):
    path = os.environ.get("UI_TEST_TRIPWIRE")
    if path:
        with open(path, "a") as fh:
            fh.write(what + "\n")


_note("imported")


class Tripwire:
    def __init__(self):
        _note("built")
        self.armed = True

    def __repr__(self):
        _note("shown")
        return "Tripwire()"


def holds_a_tripwire(system, this, inputs):
    wire = Tripwire()
    this.save_dump("armed")
    return wire.armed
