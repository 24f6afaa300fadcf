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
    POST /api/executions/ID/cancel|pause|resume|delete
    POST /api/executions/ID/savepoints/SP/restore|fork[?by=name]

Errors are {"error": "..."}: 404 for what does not exist, 409 for an operation the
execution's state does not allow, 400 for a bad request.
"""
import json

from starlette.responses import JSONResponse

from engine.shapes import execution_dict, frame_dict, savepoint_dict

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


def act_on_savepoint(request):
    """POST: restore the execution to the savepoint (Load), or fork a new one there."""
    eng, p = engine_of(request), request.path_params
    if p["action"] not in SAVEPOINT_ACTIONS:
        return Json({"error": f"no action {p['action']!r} (one of "
                              f"{', '.join(SAVEPOINT_ACTIONS)})"}, status_code=404)
    sp = eng.savepoint(p["id"], p["savepoint"], by=by_of(request))
    return Json(execution_dict(getattr(eng, p["action"])(sp.execution_id, sp.seq)))
