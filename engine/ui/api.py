"""The JSON API under /api/: what the page's buttons call and scripts may call, over the
public Engine API.  An execution, a savepoint and a frame have the shapes `engine show`,
`engine savepoints` and `engine inspect` print with --json (engine.shapes); listings
come a page at a time: {"executions": [...], "total", "offset", "limit", "counts"}.

    GET  /api/csrf                                    {"csrf_token": ...} for POSTs
    GET  /api/counts                                  {status: executions}
    GET  /api/executions?status=&flow=&id=&offset=&limit=
    GET  /api/executions/ID                           as `engine show ID --json`
    GET  /api/executions/ID/children                  [execution, ...]
    GET  /api/executions/ID/savepoints?offset=&limit=&order=newest|oldest
    GET  /api/executions/ID/savepoints/SP[?by=name]   SP: seq, id (or name)
    GET  /api/executions/ID/savepoints/SP/frames      as `engine inspect ID SP --json`
    GET  /api/executions/ID/savepoints/SP/diff[?from=SP_A]
                                                      as `engine diff ID SP_A SP --json`
                                                      (default: from the one before SP)
    POST /api/executions/ID/cancel|pause|resume|delete
    POST /api/executions/ID/savepoints/SP/restore|fork[?by=name]
         body (optional): {"set_locals": {"name" or "function.name": value}}, values
         as JSON -- as restore/fork --set
    POST /api/executions/ID/messages                  body {"topic": T, "value": V}: as
                                                      `engine send ID T V`; {"sent": T}

Errors are {"error": "..."}: 404 for what does not exist, 409 for an operation the
execution's state does not allow, 400 for a bad request.
"""
import json

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from engine.shapes import change_dict, execution_dict, frame_dict, savepoint_dict

MAX_LIMIT = 500              # a page holds at most this many


class Json(JSONResponse):
    """JSON as the CLI's --json writes it: what JSON cannot hold shown with str()."""

    def render(self, content):
        return json.dumps(content, default=str, ensure_ascii=False).encode()


def engine_of(request):
    return request.app.state.engine


def whole_number(request, name, default, most=None):
    """A query parameter that must be a whole number >= 0 (ValueError saying so)."""
    text = request.query_params.get(name)
    if text in (None, ""):
        return default
    if not text.isdigit():
        raise ValueError(f"{name} must be a whole number >= 0, not {text!r}")
    return min(int(text), most) if most is not None else int(text)


def page_filters(request):
    """(status, flow, id prefix) the listing is filtered by; "" means none."""
    q = request.query_params
    return (q.get("status") or None, q.get("flow") or None,
            (q.get("id") or "").strip() or None)


def csrf(request):
    return Json({"csrf_token": request.app.state.csrf})


def counts(request):
    return Json({str(s): n for s, n in engine_of(request).status_counts().items()})


def executions(request):
    eng = engine_of(request)
    status, flow, prefix = page_filters(request)
    page = eng.executions_page(status, flow, id_prefix=prefix,
                               offset=whole_number(request, "offset", 0),
                               limit=whole_number(request, "limit", 50, MAX_LIMIT))
    return Json({"executions": [execution_dict(ex) for ex in page.executions],
                 "total": page.total, "offset": page.offset, "limit": page.limit,
                 "counts": {str(s): n for s, n in eng.status_counts().items()}})


def execution(request):
    return Json(execution_dict(engine_of(request).get(request.path_params["id"])))


def children(request):
    eng = engine_of(request)
    return Json([execution_dict(eng.get(i))
                 for i in eng.children(request.path_params["id"])])


def savepoints(request):
    order = request.query_params.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise ValueError(f"order must be newest or oldest, not {order!r}")
    page = engine_of(request).savepoints_page(
        request.path_params["id"], offset=whole_number(request, "offset", 0),
        limit=whole_number(request, "limit", 100, MAX_LIMIT), newest_first=order == "newest")
    return Json({"savepoints": [savepoint_dict(sp) for sp in page.savepoints],
                 "total": page.total, "offset": page.offset, "limit": page.limit})


def by_of(request):
    by = request.query_params.get("by", "id")
    if by not in ("id", "name"):
        raise ValueError(f"by must be id or name, not {by!r}")
    return by


def savepoint(request):
    p = request.path_params
    return Json(savepoint_dict(engine_of(request).savepoint(p["id"], p["savepoint"],
                                                            by=by_of(request))))


def frames(request):
    p = request.path_params
    found = engine_of(request).inspect(p["id"], p["savepoint"], by=by_of(request))
    return Json([frame_dict(frame) for frame in found])


EXECUTION_ACTIONS = ("cancel", "pause", "resume", "delete")
SAVEPOINT_ACTIONS = ("restore", "fork")


def act(request):
    """POST: cancel, pause, resume or delete the execution."""
    eng, action = engine_of(request), request.path_params["action"]
    if action not in EXECUTION_ACTIONS:
        return Json({"error": f"no action {action!r} (one of "
                              f"{', '.join(EXECUTION_ACTIONS)})"}, status_code=404)
    exec_id = eng.get(request.path_params["id"]).id
    if action == "delete":
        eng.delete(exec_id)
        return Json({"deleted": exec_id})
    return Json(execution_dict(getattr(eng, action)(exec_id)))


def diff(request):
    """What changed from savepoint ?from= (default: the one before) to this one."""
    eng, p = engine_of(request), request.path_params
    sp = eng.savepoint(p["id"], p["savepoint"], by=by_of(request))
    start = request.query_params.get("from")
    if start is None:
        before = eng.previous_savepoint(sp.execution_id, sp.seq)
    else:
        before = eng.savepoint(sp.execution_id, start, by=by_of(request))
    found = eng.diff(sp.execution_id, None if before is None else before.seq, sp.seq)
    return Json({"from": None if before is None else before.seq, "to": sp.seq,
                 "changes": [change_dict(c) for c in found]})


async def json_body(request):
    """The request's body parsed as JSON (ValueError if it is not JSON)."""
    try:
        return json.loads(await request.body())
    except ValueError as e:
        raise ValueError(f"the body is not JSON: {e}") from None


async def set_locals_of(request):
    """The body's {"set_locals": {...}}, or None without a body (ValueError if it is
    not that)."""
    if not (await request.body()).strip():
        return None
    asked = await json_body(request)
    if not isinstance(asked, dict) or set(asked) != {"set_locals"} or \
            not isinstance(asked["set_locals"], dict):
        raise ValueError('the body must be {"set_locals": {"name": value, ...}}')
    return asked["set_locals"]


async def act_on_savepoint(request):
    """POST: restore the execution to the savepoint (Load), or fork a new one there --
    with the locals the body's set_locals changes (Load with changes)."""
    eng, p = engine_of(request), request.path_params
    if p["action"] not in SAVEPOINT_ACTIONS:
        return Json({"error": f"no action {p['action']!r} (one of "
                              f"{', '.join(SAVEPOINT_ACTIONS)})"}, status_code=404)
    set_locals = await set_locals_of(request)

    def act():                         # Engine calls block: off the event loop
        sp = eng.savepoint(p["id"], p["savepoint"], by=by_of(request))
        return getattr(eng, p["action"])(sp.execution_id, sp.seq, set_locals=set_locals)
    return Json(execution_dict(await run_in_threadpool(act)))


async def send_message(request):
    """POST: a message to the execution (Engine.send): 404 for an unknown execution, 409
    for one that has ended, 400 for a body that is not {"topic": str, "value": ...}."""
    asked = await json_body(request)
    if not isinstance(asked, dict) or set(asked) != {"topic", "value"} or \
            not isinstance(asked["topic"], str):
        raise ValueError('the body must be {"topic": "...", "value": JSON value}')
    eng, exec_id = engine_of(request), request.path_params["id"]
    await run_in_threadpool(eng.send, exec_id, asked["topic"], asked["value"])
    return Json({"sent": asked["topic"]})
