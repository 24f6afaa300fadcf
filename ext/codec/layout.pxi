# The savepoint layout, defined once: engine.store reads the field orders, and
# engine._commit cimports seal_savepoint/apply_state (ext/engine/_codec.pxd).

# A savepoint as the store keeps it: [meta, record, state], meta and state as lists in
# these orders (names are stored once, here, not in every savepoint).
META_FIELDS = ("seq", "kind", "name", "created_at", "line", "action", "command", "size",
               "chunks")
STATE_FIELDS = ("version", "last_seq", "status", "updated_at", "due", "restore_count",
                "error", "last_implicit", "last_implicit_chunks")


cpdef tuple seal_savepoint(dict execution, dict meta, bytes record, list chunks,
                           int64_t version, Signer signer):
    """Seal [meta, record, state] for the savepoint after the execution's last one.
    Returns (sealed bytes, seq, state list in STATE_FIELDS order).  Written in Cython
    because it runs at every Flow-API call (benchmarks/bench_store.py)."""
    cdef int64_t seq = execution.get("last_seq", 0) + 1
    implicit = meta.get("kind") == "implicit"
    cdef list state = [version, seq, execution.get("status"), execution.get("updated_at"),
                       execution.get("due"), execution.get("restore_count"),
                       execution.get("error"),
                       seq if implicit else execution.get("last_implicit"),
                       chunks if implicit else execution.get("last_implicit_chunks")]
    sealed = seal([[seq, meta.get("kind"), meta.get("name"), meta.get("created_at"),
                    meta.get("line"), meta.get("action"), meta.get("command"),
                    len(record), chunks], record, state], signer)
    return sealed, seq, state


cpdef apply_state(dict execution, list state):
    """Write a savepoint's state (STATE_FIELDS order) into the execution dict."""
    cdef Py_ssize_t i
    for i in range(len(STATE_FIELDS)):
        execution[STATE_FIELDS[i]] = state[i]
