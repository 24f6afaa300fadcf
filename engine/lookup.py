"""How executions and savepoints are named, in the API, the CLI and this.load_dump alike:
an execution by its id or a unique prefix of it; a savepoint by its id
("<execution id>.<seq>"), its seq, or (by="name") its name."""
from engine.errors import ExecutionNotFound, SavepointNotFound


def resolve_execution(store, execution_id):
    """The full id of the execution ``execution_id`` names: its id, or a prefix of
    exactly one id."""
    if not isinstance(execution_id, str) or not execution_id:
        raise ExecutionNotFound(f"no execution {execution_id!r}")
    ids = store.ids_with_prefix(execution_id, limit=5)
    if execution_id in ids:
        return execution_id
    if not ids:
        raise ExecutionNotFound(f"no execution {execution_id!r}")
    if len(ids) > 1:
        raise ExecutionNotFound(
            f"execution id {execution_id!r} is ambiguous: it starts "
            f"{', '.join(i[:12] for i in ids[:4])}{', ...' if len(ids) > 4 else ''}")
    return ids[0]


def execution_record(store, execution_id):
    """The execution's stored record; ExecutionNotFound if there is none."""
    record = store.get_execution(execution_id)
    if record is None:
        raise ExecutionNotFound(f"no execution {execution_id!r}")
    return record


def savepoint_record(store, execution_id, seq):
    """(meta, record) of that savepoint; SavepointNotFound if it is gone (deleted since
    its seq was found)."""
    found = store.savepoint(execution_id, seq)
    if found is None:
        raise SavepointNotFound(f"execution {execution_id} has no savepoint {seq}")
    return found


def find_seq(store, execution_id, savepoint, by="id"):
    """The seq of the savepoint ``savepoint`` names: by="id" an id ("<execution>.<seq>")
    or a seq (an int, or a string of digits); by="name" its name."""
    if by == "name":
        seq = store.seq_of(execution_id, str(savepoint))
        if seq is None:
            raise SavepointNotFound(f"execution {execution_id} has no savepoint named "
                                    f"{savepoint!r}")
        return seq
    if by != "id":
        raise ValueError(f"by must be 'id' or 'name', not {by!r}")
    seq = None
    if isinstance(savepoint, int) and not isinstance(savepoint, bool):
        seq = savepoint
    elif isinstance(savepoint, str):
        owner, dot, digits = savepoint.rpartition(".")
        if not dot and savepoint.isdigit():
            seq = int(savepoint)
        elif owner == execution_id and digits.isdigit():
            seq = int(digits)
    if seq is None or seq < 0 or store.savepoint(execution_id, seq) is None:
        hint = " (a name? pass by='name')" if isinstance(savepoint, str) and \
            by == "id" and store.seq_of(execution_id, savepoint) is not None else ""
        raise SavepointNotFound(f"execution {execution_id} has no savepoint "
                                f"{savepoint!r}{hint}")
    return seq
