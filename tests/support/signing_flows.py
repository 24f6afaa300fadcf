"""Flows for test_signing.py."""
import os

import signing_extra


class Marker:
    """A class of the flow's own module (trusted): rebuilding one touches $MARKER."""

    def __init__(self, note):
        self.note = note

    def __setstate__(self, state):
        with open(os.environ["MARKER"], "a") as fh:
            fh.write("marker rebuilt\n")
        self.__dict__.update(state)


def double(x):
    return 2 * x


def runs_a_command_on_resume(system, this, inputs):
    it = map(os.system, [f"touch {inputs['touched']}"])
    this.save_dump("evil")
    if this.restore_count:
        list(it)                       # the command would run here, after a restore
    return "done"


def maps_with_trusted_callables(system, this, inputs):
    seen = []
    for x in map(double, [1, 2, 3]):
        for word in map(str.upper, ["a"]):
            seen.append((x, word))
            this.save_dump(f"at-{x}")
    return seen


def holds_a_gadget(system, this, inputs):
    return signing_extra.hold(this, "g")


def holds_things(system, this, inputs):
    marker = Marker("kept")
    helper = signing_extra.helper
    numbers = map(double, [1, 2])
    this.save_dump("here")
    return [marker.note, helper(1), list(numbers)]
