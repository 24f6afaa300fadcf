"""Listing executions and savepoints a page at a time, the way the Savepoints page (and
the API behind it) shows them: executions newest first, filtered by status and flow,
with how many there are of each status; an execution's children; its savepoints a page
at a time.

Every backend lists alike: the flow filter (flow_matches) and the order (newest_first)
are defined here once.  The scan_* functions list by reading every head -- what
StoreProtocol's listing methods do for a backend that has no index for it yet (the
LMDB store keeps indexes: engine.store.lmdblisting).
"""
from engine.store import records


def flow_matches(flow, wanted):
    """Whether an execution of ``flow`` ("module:function") is one the filter
    ``wanted`` asks for: the same flow, its function name, or a prefix of it (as
    `engine ls --flow` filters).  Works on str and on bytes alike."""
    colon = b":" if isinstance(flow, bytes) else ":"
    return flow == wanted or flow.endswith(colon + wanted) or flow.startswith(wanted)


def newest_first(record):
    """The listing's sort key, for sorted(..., reverse=True): created_at (a record that
    lost it counts as the oldest), then id."""
    return record.get("created_at") or 0.0, record["id"]


def check_page(status, offset, limit):
    """ValueError for a listing request that makes no sense."""
    if status is not None and status not in records.STATUSES:
        raise ValueError(f"status must be one of {', '.join(records.STATUSES)}, "
                         f"not {status!r}")
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must not be negative ({offset}, {limit})")


def scan_page(heads, status=None, flow=None, offset=0, limit=50):
    """(the page of ``heads`` the listing shows, how many match in all)."""
    check_page(status, offset, limit)
    found = [h for h in heads if (status is None or h.get("status") == status) and
             (flow is None or flow_matches(h.get("flow") or "", flow))]
    found.sort(key=newest_first, reverse=True)
    return found[offset:offset + limit], len(found)


def scan_counts(heads):
    """{status: how many executions have it}, every status (zeros too)."""
    counts = dict.fromkeys(records.STATUSES, 0)
    for head in heads:
        if head.get("status") in counts:
            counts[head["status"]] += 1
    return counts


def scan_children(heads, parent):
    """The ids of the executions ``parent`` started, oldest first."""
    found = [h for h in heads if h.get("parent") == parent]
    found.sort(key=newest_first)
    return [h["id"] for h in found]


def scan_savepoint_page(metas, offset=0, limit=100, newest=True):
    """(the page of an execution's savepoint metas -- oldest first as stored --
    newest first if ``newest``, how many there are)."""
    check_page(None, offset, limit)
    ordered = metas[::-1] if newest else metas
    return ordered[offset:offset + limit], len(metas)
