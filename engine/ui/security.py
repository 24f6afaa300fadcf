"""Who may use the page, checked on every request before any route runs (an ASGI
middleware):

- Without an access token the server listens on loopback only (engine.ui.server makes
  sure), and a request must name a loopback host: another site's page reaching the
  server by a DNS name that points at 127.0.0.1 (DNS rebinding) is refused.
- With an access token every request must carry it: ``Authorization: Bearer T``, the
  header ``X-Engine-Token``, the cookie a visit to ``?token=T`` sets (then the address
  bar loses the token), or ``?token=T`` itself.
- A state-changing request is a POST carrying the CSRF token (header ``X-CSRF-Token``)
  that the pages hold and GET /api/csrf tells; a POST whose Origin is another site is
  refused too.  Other methods than GET, HEAD and POST are refused.

Every response says what the browser may load (scripts and styles from this server only)
and that no other site may frame it.
"""
import hmac
import json
import secrets
import urllib.parse

TOKEN_COOKIE = "engine_ui_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; "
     b"style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
     b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def new_csrf_token():
    return secrets.token_urlsafe(32)


def same(given, expected):
    """Whether a token given equals the expected one (in constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _hostname(host_header):
    """The name in a Host (or Origin netloc) header, without port or brackets."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def _cookies(header):
    out = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


class Guard:
    """The checks above, around the application ``app``."""

    def __init__(self, app, *, token, csrf):
        self.app, self.token, self.csrf = app, token, csrf

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        refusal = self.refusal(scope, headers, query)
        if refusal is not None:
            status, text = refusal
            return await _answer(scope, send, status, text)
        if self.token is not None and "token" in query and scope["method"] == "GET" and \
                not scope["path"].startswith("/api/"):
            # remember it in a cookie and take it out of the address bar (and history)
            return await _redirect_without_token(scope, send, query, self.token)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _HEADERS
            await send(message)
        return await self.app(scope, receive, send_with_headers)

    def refusal(self, scope, headers, query):
        """(status, why) if the request may not go on, else None."""
        host = headers.get("host", "")
        if self.token is None:
            if _hostname(host) not in LOOPBACK_NAMES:
                return 403, (f"this page answers to a loopback address only, not to "
                             f"{host!r} (start engine ui with --token to serve others)")
        elif not self.carries_token(headers, query):
            return 401, ("this page needs its access token: open the address engine ui "
                         "printed (it ends in ?token=...), or send the header "
                         "'Authorization: Bearer TOKEN'")
        method = scope["method"]
        if method not in ("GET", "HEAD", "POST"):
            return 405, f"{method} is not allowed here"
        if method == "POST":
            origin = headers.get("origin")
            if origin is not None and origin != "null" and \
                    urllib.parse.urlsplit(origin).netloc != host:
                return 403, f"a request from another site ({origin}) is refused"
            if not same(headers.get(CSRF_HEADER), self.csrf):
                return 403, ("a POST must carry the page's CSRF token in the header "
                             "X-CSRF-Token (GET /api/csrf tells it)")
        return None

    def carries_token(self, headers, query):
        authorization = headers.get("authorization", "")
        given = [authorization[7:].strip() if authorization[:7].lower() == "bearer " else None,
                 headers.get("x-engine-token"),
                 urllib.parse.unquote(_cookies(headers.get("cookie", "")).get(
                     TOKEN_COOKIE, "")) or None,
                 (query.get("token") or [None])[0]]
        return any(same(g, self.token) for g in given)


async def _answer(scope, send, status, text):
    """A refusal: JSON under /api/, plain text elsewhere."""
    if scope["path"].startswith("/api/"):
        body, kind = json.dumps({"error": text}).encode(), b"application/json"
    else:
        body, kind = f"engine ui: {text}\n".encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind),
                            (b"content-length", str(len(body)).encode())] + _HEADERS})
    await send({"type": "http.response.body", "body": body})


async def _redirect_without_token(scope, send, query, token):
    rest = urllib.parse.urlencode({k: v for k, v in query.items() if k != "token"},
                                  doseq=True)
    location = urllib.parse.quote(scope["path"]) + ("?" + rest if rest else "")
    cookie = f"{TOKEN_COOKIE}={urllib.parse.quote(token, safe='')}; Path=/; HttpOnly; " \
             f"SameSite=Strict"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")),
                            (b"set-cookie", cookie.encode("latin-1")),
                            (b"content-length", b"0")] + _HEADERS})
    await send({"type": "http.response.body", "body": b""})
