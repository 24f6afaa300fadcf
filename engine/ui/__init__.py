"""The Savepoints page: `engine ui`, a local web app over a store -- the executions, each
one's details, log and children, and its Savepoints tab (Created at, Line number, Action,
Command) with Load, Fork and Inspect on every savepoint.  It needs the extra
savepoint-engine[ui] (Starlette, uvicorn, Jinja2); it uses the public Engine API only,
and nothing it does runs flow code.

    server.py      serve(engine, host, port, token): bind, then run uvicorn
    app.py         the Starlette application: routes, templates, errors
    security.py    the access token, the CSRF token, Host and Origin checks
    pages.py       the HTML pages and their live fragments
    api.py         the JSON API under /api/ (the shapes of the CLI's --json)
    inspection.py  a savepoint's frames as the page shows them (source, bounded reprs)
    templates/     Jinja2 templates (every value escaped)
    static/        the page's script and style (no build step, nothing from elsewhere)
"""
