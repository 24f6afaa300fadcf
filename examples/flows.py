"""A flow to try the `engine` command on (see README.md, "From a terminal").

    cd examples
    engine run flows.py:handler --input name=ann --input fail=true
"""
import os


def handler(system, this, inputs):
    name = inputs.get("name", "world")
    rows = this.connect("database", query="SELECT * FROM data")
    this.save_dump("with-fetched-data")            # a named savepoint to come back to
    this.log("fetched", len(rows), "rows for", name)
    if inputs.get("fail") and this.restore_count == 0:
        raise ConnectionError("the upload failed")   # restore and run again: it goes on here
    return this.connect("remote-api", rows=rows, owner=name)


def database(query):
    """A connector standing for a database: the rows a query returns."""
    return [{"id": i, "value": i * i} for i in range(3)]


def remote_api(rows, owner):
    """A connector standing for an upload: what a remote service would answer."""
    return f"uploaded {len(rows)} rows for {owner} (pid {os.getpid()})"


def register(eng):
    """Called by `engine run`/`worker --flows`: the connectors the flow uses."""
    eng.add_connector("database", database)
    eng.add_connector("remote-api", remote_api)
