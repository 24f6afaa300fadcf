"""Savepoints for store tests without a runtime: a frame holding a value, captured, encoded
and committed (the subprocesses of the store tests import this module, so the pinned code
it refers to resolves there too)."""
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
