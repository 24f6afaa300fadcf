"""A hot statement sent through libpq itself (psycopg's documented ``pq`` layer,
``Connection.pgconn``) instead of a psycopg cursor: a Flow-API call's savepoint row.

psycopg's ``conn.execute`` costs about as much as the round trip it makes (a cursor,
the query's conversion, adapting each parameter, the prepared-statement cache, its own
wait loop: ~50 us of Python on a slow core, where the round trip of an INSERT with
synchronous_commit off is ~55 us).  A statement run at every Flow-API call is worth
sending without them: parsed once per connection (PREPARE, with its parameter types),
then each run is one PQexecPrepared with parameters the caller gives as bytes -- the
same single round trip and the same transaction as before (the connections are
autocommit), only less work around it.

A connection that has not prepared it yet (a new one, or one whose statements were
deallocated) answers 26000, and is made to prepare it then.  Errors become psycopg's
exceptions of the same SQLSTATE, so what pgpool makes of an error (a lost connection, a
rollback) does not change; a connection lost on the way leaves the PGconn BAD, and the
pool discards it when it comes back.
"""
import psycopg
from psycopg import errors, pq

_NOT_PREPARED = "26000"          # invalid_sql_statement_name: not prepared here
TEXT, BINARY = 0, 1              # parameter formats
# what a connection running these statements is opened with: its str parameters are
# sent as UTF-8 without asking the connection each time
CONNECTION_SETTINGS = {"client_encoding": "UTF8"}
TEXT_OID, BIGINT_OID, BYTEA_OID = 25, 20, 17     # parameter types (pg_type oids)


class Statement:
    """``query`` (parameters $1, $2, ...) of the given parameter type oids, prepared
    under ``name`` on each connection that runs it."""

    def __init__(self, name, query, types):
        self.name = name.encode()
        self.query = query.encode()
        self.types = list(types)

    def run(self, conn, params):
        """Run it on ``conn`` (a psycopg connection in autocommit, held by the caller,
        opened with CONNECTION_SETTINGS) with ``params``: bytes (sent as they are), str
        or int (as text); raises as psycopg would."""
        pgconn = conn.pgconn
        values, formats = [], []
        for value in params:
            if isinstance(value, bytes):
                values.append(value)
                formats.append(BINARY)
            else:
                values.append(str(value).encode("utf-8"))
                formats.append(TEXT)
        result = pgconn.exec_prepared(self.name, values, formats)
        if _failed(result) and _sqlstate(result) == _NOT_PREPARED:
            _check(pgconn, pgconn.prepare(self.name, self.query, self.types))
            result = pgconn.exec_prepared(self.name, values, formats)
        _check(pgconn, result)


def _failed(result):
    return result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


def _sqlstate(result):
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    return state.decode("ascii", "replace") if state else None


def _check(pgconn, result):
    """Raise the psycopg exception of a failed result: the class of its SQLSTATE; a
    result without one (the connection went) is an OperationalError, as psycopg says."""
    if not _failed(result):
        return
    message = (result.error_message or pgconn.error_message or b"").decode(
        "utf-8", "replace").strip() or "the statement failed"
    state = _sqlstate(result)
    if state is None:
        raise psycopg.OperationalError(message)
    try:
        cls = errors.lookup(state)
    except KeyError:            # a code psycopg has no class for: by its class of codes
        cls = psycopg.OperationalError if state.startswith("08") else psycopg.DatabaseError
    error = cls(message)
    if error.sqlstate is None:
        error.sqlstate = state
    raise error
