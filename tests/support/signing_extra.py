"""A module apart from the flow's (tests/signing_flows.py): its class is trusted only when
an engine says so with eng.trust(), never because a savepoint's frames run its code."""
import os


class Gadget:
    """Rebuilding one touches $MARKER: the tests see whether decoding built it."""

    def __init__(self, label):
        self.label = label

    def __setstate__(self, state):
        with open(os.environ["MARKER"], "a") as fh:
            fh.write("gadget rebuilt\n")
        self.__dict__.update(state)


def hold(this, label):
    gadget = Gadget(label)             # a local of this frame (signing_extra) at the call
    this.save_dump("holding")
    return gadget.label


def helper(x):
    return x * 2
