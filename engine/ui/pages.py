"""The HTML pages, rendered from engine/ui/templates (Jinja2, every value escaped), and
the fragments of them that the page's script fetches again to stay live:

    /                                   the executions: counts, filters, a page of them
    /fragments/executions               its live part (counts, rows, pager)
    /executions/ID                      an execution: its details
    /executions/ID/savepoints           its Savepoints tab (?page=N)
    /executions/ID/fragments/head       live: status and the buttons that apply; while
                                        it waits for a message, on which topic and a
                                        form that sends one
    /executions/ID/fragments/details    live: details, log, outputs, children
    /executions/ID/fragments/savepoints live: the tab's table
    /executions/ID/savepoints/SEQ       a savepoint's frames and locals (Inspect), what
                                        changed since the one before, an edit box per
                                        local and "Load with changes"

The buttons (Load, Fork, Cancel, ...) and the message form POST to the JSON API
(engine.ui.api).
"""
import math
import urllib.parse

from engine.errors import CorruptSavepoint
from engine.lifecycle import ALLOWED
from engine.types import Status
from engine.ui.api import engine_of, page_filters, whole_number
from engine.shapes import change_dict
from engine.ui.inspection import frames_shown

PER_PAGE = 50                  # executions on a page
SAVEPOINTS_PER_PAGE = 50
CHILDREN_SHOWN = 100


def render(request, template, **context):
    return request.app.state.templates.TemplateResponse(request, template, context)


# --- the executions ---------------------------------------------------------------------------

def listing_context(request):
    eng = engine_of(request)
    status, flow, prefix = page_filters(request)
    page_no = max(1, whole_number(request, "page", 1))
    page = eng.executions_page(status, flow, id_prefix=prefix,
                               offset=(page_no - 1) * PER_PAGE, limit=PER_PAGE)
    filters = {"status": (status or "").upper(), "flow": flow or "", "id": prefix or ""}
    query = {k: v for k, v in filters.items() if v}
    return {"page": page, "page_no": page_no,
            "pages": max(1, math.ceil(page.total / PER_PAGE)),
            "counts": eng.status_counts(), "filters": filters,
            "query": urllib.parse.urlencode(dict(query, page=page_no)),
            "base_query": urllib.parse.urlencode(query), "statuses": list(Status)}


def executions(request):
    return render(request, "executions.html", **listing_context(request))


def executions_fragment(request):
    return render(request, "_executions.html", **listing_context(request))


# --- one execution ----------------------------------------------------------------------------

def actions_allowed(ex):
    """The buttons the execution's state allows, in order (delete always applies)."""
    if ex.damaged and not ex.flow:
        return ["delete"]                   # its record is lost: only delete applies
    return [a for a in ("cancel", "pause", "resume") if ex.status in ALLOWED[a]] + \
        ["delete"]


def head_context(request):
    eng = engine_of(request)
    ex = eng.get(request.path_params["id"])
    return {"ex": ex, "actions": actions_allowed(ex),
            "savepoint_total": eng.savepoints_page(ex.id, limit=0).total,
            "can_load": not (ex.damaged and not ex.flow)}


def details_context(request):
    context = head_context(request)
    eng, ex = engine_of(request), context["ex"]
    child_ids = eng.children(ex.id)
    context.update(children=[eng.get(c) for c in child_ids[:CHILDREN_SHOWN]],
                   children_total=len(child_ids))
    return context


def savepoints_context(request):
    context = head_context(request)
    page_no = max(1, whole_number(request, "page", 1))
    page = engine_of(request).savepoints_page(
        context["ex"].id, offset=(page_no - 1) * SAVEPOINTS_PER_PAGE,
        limit=SAVEPOINTS_PER_PAGE)
    context.update(savepoints=page, page_no=page_no,
                   pages=max(1, math.ceil(page.total / SAVEPOINTS_PER_PAGE)))
    return context


def execution(request):
    return render(request, "execution.html", tab="details", **details_context(request))


def execution_savepoints(request):
    return render(request, "execution.html", tab="savepoints",
                  **savepoints_context(request))


def head_fragment(request):
    return render(request, "_head.html", **head_context(request))


def details_fragment(request):
    return render(request, "_details.html", **details_context(request))


def savepoints_fragment(request):
    return render(request, "_savepoints.html", **savepoints_context(request))


def inspect(request):
    """Every frame of the savepoint, outermost first, and its locals, with what changed
    since the savepoint before and an edit box per local: decoded by Engine.inspect and
    Engine.diff, which run no flow code."""
    context = head_context(request)
    eng, ex = engine_of(request), context["ex"]
    previous, changes = None, None
    try:
        sp = eng.savepoint(ex.id, request.path_params["savepoint"])
        frames, problem = eng.inspect(ex.id, sp.seq), None
    except CorruptSavepoint as e:         # said on the page; nothing else to show
        sp, frames, problem = None, [], str(e)
    if sp is not None:
        try:
            previous = eng.previous_savepoint(ex.id, sp.seq)
            changes = eng.diff(ex.id, None if previous is None else previous.seq, sp.seq)
        except CorruptSavepoint:          # the one before is damaged: no changes shown
            changes = None
    return render(request, "inspect.html", sp=sp, frames=frames_shown(frames, changes),
                  problem=problem, previous=previous,
                  changes=None if changes is None else [change_dict(c) for c in changes],
                  **context)
