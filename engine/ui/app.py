"""The Starlette application of the Savepoints page: its routes (pages, their live
fragments, the JSON API, the static files), its templates and how errors are answered,
behind the security checks of engine.ui.security.  Handlers are plain functions run on
Starlette's thread pool: every Engine call blocks, none runs flow code."""
import datetime
import json
import os
import urllib.parse

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from engine.errors import EngineError, ExecutionNotFound, InvalidTransition, \
    SavepointNotFound
from engine.ui import api, pages
from engine.ui.security import Guard, new_csrf_token

HERE = os.path.dirname(os.path.abspath(__file__))
SHOWN_CHARS = 20_000           # a value shown on the page (inputs, output, ...) at most


def utc_text(moment):
    """A time as the page shows it before its script turns it into local time."""
    if moment is None:
        return ""
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def size_text(size):
    if size is None:
        return ""
    for unit in ("B", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def value_text(value):
    """A value of an execution (inputs, output, ...) as the page shows it: JSON where it
    can be, bounded."""
    try:
        text = json.dumps(value, indent=2, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "\n..."


def store_shown(path):
    """Where the store is, as the page heads itself: a URL without its password."""
    if "://" not in str(path):
        return str(path)
    parts = urllib.parse.urlsplit(str(path))
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + \
        (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def templates(engine, csrf):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(utc=utc_text, size=size_text, shown=value_text)
    env.globals.update(csrf=csrf, store=store_shown(engine.path))
    return Jinja2Templates(env=env)


def error_status(error):
    if isinstance(error, (ExecutionNotFound, SavepointNotFound)):
        return 404
    if isinstance(error, InvalidTransition):
        return 409
    if isinstance(error, ValueError):
        return 400
    return 500


async def engine_error(request, error):
    """An error the engine raised: JSON under /api/, a page elsewhere."""
    status = error_status(error)
    if request.url.path.startswith("/api/"):
        return api.Json({"error": str(error)}, status_code=status)
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"message": str(error), "status": status},
        status_code=status)


ROUTES = [
    Route("/", pages.executions),
    Route("/fragments/executions", pages.executions_fragment),
    Route("/executions/{id}", pages.execution),
    Route("/executions/{id}/savepoints", pages.execution_savepoints),
    Route("/executions/{id}/savepoints/{savepoint}", pages.inspect),
    Route("/executions/{id}/fragments/head", pages.head_fragment),
    Route("/executions/{id}/fragments/details", pages.details_fragment),
    Route("/executions/{id}/fragments/savepoints", pages.savepoints_fragment),
    Route("/api/csrf", api.csrf),
    Route("/api/counts", api.counts),
    Route("/api/executions", api.executions),
    Route("/api/executions/{id}", api.execution),
    Route("/api/executions/{id}/children", api.children),
    Route("/api/executions/{id}/savepoints", api.savepoints),
    Route("/api/executions/{id}/savepoints/{savepoint}", api.savepoint),
    Route("/api/executions/{id}/savepoints/{savepoint}/frames", api.frames),
    Route("/api/executions/{id}/savepoints/{savepoint}/diff", api.diff),
    Route("/api/executions/{id}/messages", api.send_message, methods=["POST"]),
    Route("/api/executions/{id}/{action}", api.act, methods=["POST"]),
    Route("/api/executions/{id}/savepoints/{savepoint}/{action}", api.act_on_savepoint,
          methods=["POST"]),
    Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
]


def create_app(engine, *, token=None):
    """The application over ``engine`` (an open Engine); ``token``: the access token
    every request must carry (None: loopback only)."""
    csrf = new_csrf_token()
    app = Starlette(routes=ROUTES,
                    middleware=[Middleware(Guard, token=token, csrf=csrf)],
                    exception_handlers={EngineError: engine_error, ValueError: engine_error,
                                        KeyError: engine_error})
    app.state.engine, app.state.csrf = engine, csrf
    app.state.templates = templates(engine, csrf)
    return app
