"""The life of an execution in the store: its first record, which operations from outside
apply in which state (one table, used by the API, the CLI and the worker that carries out
a request for an execution it is running), and how such a request reaches the process
running the execution."""
import logging
import re
import time
import uuid

from engine import config
from engine.errors import ExecutionNotFound, InvalidTransition, SavepointError
from engine.flows import flow_name
from engine.store import records, retention_error
from engine.types import ENDED, Status

log = logging.getLogger("engine")

TIMEOUT_ERROR = "TimeoutError: the execution's timeout expired"

LIVE = frozenset({Status.QUEUED, Status.RUNNING, Status.WAITING, Status.PAUSED})
ALLOWED = {
    "cancel": LIVE,
    "pause": frozenset({Status.QUEUED, Status.RUNNING, Status.WAITING}),
    "resume": frozenset({Status.PAUSED}),
    "restore": frozenset(Status),
}


# A caller's execution id: what a URL, a shell and every store key take as it is
_CALLER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


def check_execution_id(exec_id):
    """ValueError unless ``exec_id`` can name an execution (start(id=...))."""
    if not isinstance(exec_id, str):
        raise ValueError(f"execution id must be a str, not {type(exec_id).__name__}")
    if not _CALLER_ID.fullmatch(exec_id):
        raise ValueError(f"execution id {exec_id!r} is not allowed: 1 to 128 characters, "
                         f"letters, digits and . _ : @ -, starting with a letter or digit")


def new_execution(store, flow, inputs, *, name=None, savepoint_retention=None, parent=None,
                  queued=True, exec_id=None):
    """Store a new QUEUED execution of ``flow`` and return (its record, True).  ``queued``
    False: not on the run queue yet -- a fork puts it there once its savepoint is stored,
    or a worker could start the flow from its beginning meanwhile.  With ``exec_id`` (the
    caller's): if that execution exists already, (its record, False) and nothing is
    written."""
    if savepoint_retention is not None and savepoint_retention not in config.RETENTIONS:
        raise retention_error(savepoint_retention)
    if exec_id is not None:
        check_execution_id(exec_id)
    now = time.time()
    record = {"id": exec_id or uuid.uuid4().hex, "flow": flow_name(flow),
              "status": Status.QUEUED.value, "inputs": inputs, "output": None,
              "outputs": {}, "error": None, "created_at": now, "updated_at": now,
              "name": name, "restore_count": 0, "retention": savepoint_retention,
              "parent": parent, "log": [], "last_seq": 0, "due": now if queued else None}
    if exec_id is None:
        store.put_execution(record)
        return record, True
    if store.add_execution(record):
        return record, True
    existing = store.get_execution(exec_id)
    if existing is None:            # deleted between the two: start it after all
        return new_execution(store, flow, inputs, name=name, parent=parent, queued=queued,
                             savepoint_retention=savepoint_retention, exec_id=exec_id)
    return existing, False


def receiver_waits(record, topic):
    """For eng.send: whether the execution waits for a message on ``topic`` (to wake
    it); InvalidTransition if it has ended (no one will ever receive it)."""
    refuse_if_lost("send to", record)
    status = Status(record["status"])
    if status in ENDED:
        raise InvalidTransition(f"cannot send to execution {record['id']}: it has ended "
                                f"(status {status.value})")
    return status == Status.WAITING and record.get("receiving") == topic


def refuse_if_lost(operation, record):
    """InvalidTransition if the execution's own record is damaged beyond use (its flow
    unknown): then it can only be deleted."""
    if record.get("damaged") and not record.get("flow"):
        raise InvalidTransition(f"cannot {operation} execution {record['id']}: "
                                f"{record['damaged']}; it can only be deleted")


def check_transition(operation, record):
    """InvalidTransition unless ``operation`` applies to the execution in its state."""
    refuse_if_lost(operation, record)
    status = Status(record["status"])
    if status not in ALLOWED[operation]:
        why = "it has ended" if status in ENDED else f"it is {status.value}"
        if operation == "resume":
            why += "; only a PAUSED execution can be resumed"
        elif operation == "pause" and status == Status.PAUSED:
            why = "it is PAUSED already"
        raise InvalidTransition(f"cannot {operation} execution {record['id']}: {why} "
                                f"(status {status.value})")


def apply_request(record, request):
    """Change ``record`` as the request ([operation, *arguments]) asks; checked first."""
    operation = request[0]
    check_transition(operation, record)
    now = time.time()
    if operation == "cancel":
        record.update(status=Status.ENDED_CANCELLED.value, due=None, timeout_at=None)
        record.pop("paused", None)
    elif operation == "pause":
        # what resume puts back: the status and the due time (a sleeper wakes on time)
        record["paused"] = [record["status"], record.get("due")]
        record.update(status=Status.PAUSED.value, due=None)
    elif operation == "resume":
        status, due = record.pop("paused", None) or (Status.QUEUED.value, None)
        waiting = status == Status.WAITING.value and due is not None and \
            not record.get("waiting_for")
        record.update(status=Status.WAITING.value if waiting else Status.QUEUED.value,
                      due=due if due is not None else now)
    elif operation == "restore":
        record.pop("paused", None)
        record.update(status=Status.QUEUED.value, due=now, resume_from=request[1],
                      restore_count=(record.get("restore_count") or 0) + 1,
                      timeout_at=None, error=None, output=None, waiting_for=None)
    record["updated_at"] = now


# --- requests for an execution a live process runs: kept in the store for it ------------

def _request_key(execution_id):
    return records.SIGNAL_PREFIX + execution_id


def ask_runner(store, execution_id, request):
    """Leave ``request`` for the process running the execution (its watchdog takes it)."""
    store.set_setting(_request_key(execution_id), request)


def drop_request(store, execution_id):
    store.delete_setting(_request_key(execution_id))


def pending_request(store, execution_id):
    """The request from outside waiting for this execution, or None.  A damaged one
    (CorruptSavepoint) cannot be carried out: it is dropped and logged, so that it
    stops nothing -- neither this run nor anyone else's."""
    try:
        return store.get_setting(_request_key(execution_id))
    except SavepointError as e:
        log.warning("execution %s: dropped a damaged request: %s", execution_id, e)
        drop_request(store, execution_id)
        return None


def pending_requests(store, held):
    """{execution id: request} of the requests waiting for the executions in ``held``
    -- one look at the store, however many executions a process holds.  A damaged one
    for an execution held is dropped and logged, as pending_request does."""
    damaged = {}
    found = store.settings(records.SIGNAL_PREFIX, damaged=damaged)
    requests = {}
    for name, request in [*found.items(), *damaged.items()]:
        execution_id = name[len(records.SIGNAL_PREFIX):]
        if execution_id not in held:
            continue
        if name in damaged:
            log.warning("execution %s: dropped a damaged request: %s", execution_id, request)
            drop_request(store, execution_id)
        else:
            requests[execution_id] = request
    return requests


def carry_out(store, execution_id, request, lease_seconds, wait=True):
    """Carry out cancel/pause/resume/restore: at once if no live process runs the
    execution, else through that process (which checks again), waiting a moment
    for it.  InvalidTransition, and nothing changed, if it does not apply."""
    outcome, record = store.update_unless_leased(
        execution_id, lambda record: apply_request(record, request))
    if outcome == "missing":
        raise ExecutionNotFound(f"no execution {execution_id!r}")
    if outcome == "leased":
        check_transition(request[0], record)
        ask_runner(store, execution_id, request)
        deadline = time.monotonic() + min(5.0, lease_seconds)
        while wait and pending_request(store, execution_id) is not None and \
                time.monotonic() < deadline:
            time.sleep(0.01)
    elif request[0] == "cancel":
        cancel_children(store, execution_id, lease_seconds)


def cancel_children(store, parent_id, lease_seconds):
    """Cancelling a parent cancels its unfinished children (and theirs)."""
    for record in store.executions():
        if record.get("parent") == parent_id and Status(record["status"]) not in ENDED:
            try:
                carry_out(store, record["id"], ["cancel"], lease_seconds, wait=False)
            except (InvalidTransition, ExecutionNotFound):
                pass                         # ended or gone meanwhile


def wake_parent(store, parent_id):
    """A child ended: a parent waiting for its children looks again now.  The look and
    the write are one transaction: a parent its holder resumed meanwhile (and maybe
    ended) is not put back under a stale WAITING record."""
    store.wake_if(parent_id, lambda record: record["status"] == Status.WAITING.value
                  and bool(record.get("waiting_for")))
