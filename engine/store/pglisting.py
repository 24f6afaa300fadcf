"""The PostgreSQL store's listing: what lists executions a page at a time, newest first,
by status and flow, counts them by status and finds an execution's children, in SQL over
the plain columns of ``executions`` (status, flow, created_at, parent: pgschema.LISTING)
-- without reading every execution (engine.store.listing says what a listing shows).

The columns are copies of what the execution's head says: PostgresStore writes them with
every record it puts, and with a savepoint whose status differs from the one it last
wrote.  The counts by status are a table of their own (status_counts), which a trigger
keeps in step with the status column: a count is a few rows, not a scan.  Every function
here runs on a connection it is given and reads no sealed value (PostgresStore turns the
ids into heads).
"""
from engine.store import listing, records

# the columns as a record or a savepoint's state sets them: status '' is a record without
# one (listed, not counted), created_at 0 one that lost it (listing.newest_first)
COLUMNS = ("status", "flow", "created_at", "parent")
PUT = ("INSERT INTO executions (id, record, status, flow, created_at, parent) VALUES "
       "(%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET record = excluded.record, "
       "status = excluded.status, flow = excluded.flow, created_at = excluded.created_at, "
       "parent = excluded.parent")
RELIST = ("UPDATE executions SET status = %s, flow = %s, created_at = %s, parent = %s "
          "WHERE id = %s")
_NEWEST_FIRST = " ORDER BY created_at DESC, id DESC"
# listing.flow_matches: the same flow, its function name, or a prefix of it
_FLOW_MATCHES = ("(flow = %(flow)s OR right(flow, length(%(flow)s) + 1) = ':' || %(flow)s "
                 "OR starts_with(flow, %(flow)s))")


def columns_of(execution):
    """(status, flow, created_at, parent): what the listing columns hold for the
    execution dict as it is."""
    return (execution.get("status") or "", execution.get("flow") or "",
            float(execution.get("created_at") or 0.0), execution.get("parent") or None)


def relist_statement(execution):
    """(query, params) setting the listing columns of the execution's row."""
    return RELIST, (*columns_of(execution), execution["id"])


def page(conn, status=None, flow=None, offset=0, limit=50):
    """(ids of the page, newest first, how many match in all).  Without a flow filter
    the total comes from the counts (as LMDB's: a record without a status is listed,
    not counted)."""
    listing.check_page(status, offset, limit)
    where, params = ["status IS NOT NULL"], {"offset": offset, "limit": limit}
    if status is not None:
        where.append("status = %(status)s")
        params["status"] = status
    if flow is not None:
        where.append(_FLOW_MATCHES)
        params["flow"] = flow
    condition = " WHERE " + " AND ".join(where)
    if flow is not None:
        total = conn.execute("SELECT count(*) FROM executions" + condition,
                             params).fetchone()[0]
    elif status is not None:
        total = counts(conn, (status,))[status]
    else:
        total = sum(counts(conn).values())
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM executions" + condition + _NEWEST_FIRST +
        " LIMIT %(limit)s OFFSET %(offset)s", params)]
    return ids, total


def counts(conn, statuses=records.STATUSES):
    """{status: how many executions have it} of each of ``statuses`` (zeros too), from
    status_counts (pgschema.LISTING: a few rows a status)."""
    out = dict.fromkeys(statuses, 0)
    for status, count in conn.execute("SELECT status, sum(n)::bigint FROM status_counts "
                                      "WHERE status = ANY(%s) GROUP BY status",
                                      (list(statuses),)):
        out[status] = count
    return out


def children(conn, parent):
    """The ids of the executions ``parent`` started, oldest first."""
    return [r[0] for r in conn.execute(
        "SELECT id FROM executions WHERE parent = %s ORDER BY created_at, id", (parent,))]


def savepoint_rows(conn, exec_id, offset=0, limit=100, newest=True):
    """([(seq, value)] of one page of the execution's savepoints, newest first if
    ``newest``, how many it has)."""
    listing.check_page(None, offset, limit)
    total = conn.execute("SELECT count(*) FROM savepoints WHERE exec_id = %s",
                         (exec_id,)).fetchone()[0]
    rows = conn.execute("SELECT seq, value FROM savepoints WHERE exec_id = %s ORDER BY seq"
                        + (" DESC" if newest else "") + " LIMIT %s OFFSET %s",
                        (exec_id, limit, offset)).fetchall()
    return [(seq, bytes(value)) for seq, value in rows], total


def unlisted(conn):
    """The ids of the rows whose listing columns were never written (a store migrated
    to format 3: pgschema.LISTING)."""
    return [r[0] for r in conn.execute("SELECT id FROM executions WHERE status IS NULL "
                                       "ORDER BY id")]


COUNT_ALL = ("DELETE FROM status_counts; INSERT INTO status_counts SELECT status, 0, "
             "count(*) FROM executions WHERE status <> '' GROUP BY status")


def out_of_step(conn, heads):
    """[(execution id or None, what is wrong)]: the rows whose listing columns differ
    from what their heads ({id: head}) say (a damaged execution's are not compared: its
    last intact write made them), and counts that differ from the columns (None)."""
    found = []
    stored = {s: n for s, n in conn.execute(
        "SELECT status, sum(n)::bigint FROM status_counts GROUP BY status") if n}
    made = dict(conn.execute("SELECT status, count(*) FROM executions WHERE status <> '' "
                             "GROUP BY status").fetchall())
    if stored != made:
        found.append((None, f"the counts by status {stored} differ from the executions' "
                            f"statuses {made}"))
    for exec_id, *stored in conn.execute("SELECT id, status, flow, created_at, parent "
                                         "FROM executions ORDER BY id"):
        head = heads.get(exec_id)
        if head is None or head.get("damaged"):
            continue
        if tuple(stored) != columns_of(head):
            found.append((exec_id, f"the listing columns of execution {exec_id} are out "
                                   f"of step with its status {head.get('status')!r}"))
    return found
