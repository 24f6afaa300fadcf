"""Savepoints for store tests without a runtime: a frame holding a value, captured, encoded
and committed (the subprocesses of the store tests import this module, so the pinned code
it refers to resolves there too); and a PostgreSQL store made as format 2 was."""
from engine import _codec, _frames

root = _frames.Root()


def holder(value, counter):
    return _frames.capture(root)


def snapshot(value, counter=0):
    """(record, codes, chunks) of a frame holding ``value``."""
    chunks = {}
    record, codes = _codec.encode_snapshot(_frames.run(root, holder, value, counter),
                                           chunks=chunks)
    return record, codes, chunks


def commit(store, execution, kind="implicit", name=None, value="state", counter=0,
           retention="all"):
    record, codes, chunks = snapshot(value, counter)
    meta = {"kind": kind, "name": name, "line": 1, "action": "connect"}
    return store.commit_savepoint(execution, meta, record, codes, chunks,
                                  retention=retention)


# a PostgreSQL store of format 3 as format 2 was (its data kept): without the listing's
# columns, counts and triggers (engine/store/pgschema.py LISTING)
PG_WITHOUT_LISTING = (
    "DROP TRIGGER count_status ON savepoint_engine.executions; "
    "DROP TRIGGER count_status_change ON savepoint_engine.executions; "
    "DROP FUNCTION savepoint_engine.count_status(); "
    "DROP TABLE savepoint_engine.status_counts; "
    "ALTER TABLE savepoint_engine.executions DROP COLUMN status, DROP COLUMN flow, "
    "DROP COLUMN created_at, DROP COLUMN parent")
