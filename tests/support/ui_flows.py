"""Flows for the Savepoints page's tests (tests/ui): the seeds' example (rt_flows.
seed_example: a SQLite read, the named savepoint "with-fetched-data", an upload that
fails) with its connectors set up from the environment -- so the worker a test starts
(`engine worker --flows ui_flows`) has them too -- and flows whose locals, log and
outputs hold HTML, that start children, and one left waiting for a message."""
import os

import message_flows
import rt_flows
from engine import Engine, Status

HTML = "<script>alert('owned')</script>"


def register(eng):
    """The seed example's connectors: $UI_TEST_SQLITE (the database), $UI_TEST_READS
    (a file each read is noted in), $UI_TEST_UPLOAD_URL (where uploads go)."""
    eng.add_connector("database", rt_flows.db_reader(os.environ["UI_TEST_SQLITE"],
                                                     os.environ["UI_TEST_READS"]))
    eng.add_connector("remote-api", rt_flows.uploader(os.environ["UI_TEST_UPLOAD_URL"]))


def holding_html(system, this, inputs):
    markup = HTML
    numbers = list(range(300))           # a value whose repr is long: it expands
    this.log("holding", markup)
    this.set_output("markup", markup)
    this.save_dump("holding-html")
    return {"length": len(markup), "sum": sum(numbers)}


def starts_children(system, this, inputs):
    first = this.flow(holding_html)
    second = this.flow(holding_html)
    return [first, second]


def waiting_for_message(store, flow=message_flows.approval, inputs=None):
    """The id of a new execution of ``flow`` (by default message_flows.approval), run
    until it waits for a message and unloaded (WAITING in the store, held by no
    process)."""
    with Engine(store, durability="async", sleep_max_seconds=0) as eng:
        ex = eng.start(flow, inputs)
        eng.run()
        assert eng.get(ex.id).status == Status.WAITING
        return ex.id
