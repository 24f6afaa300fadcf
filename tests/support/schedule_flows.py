"""A flow for test_schedules.py: what a tick starts."""


def ticked(system, this, inputs):
    return inputs
