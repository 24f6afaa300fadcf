"""Serving the page (`engine ui`): uvicorn on a socket bound here, so that the address
printed is the one really bound (port 0 picks a free one), and only to loopback unless
an access token guards the page."""
import ipaddress
import socket
import urllib.parse

import uvicorn

from engine.ui.app import create_app, store_shown


def is_loopback(host):
    """Whether every address ``host`` names is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"--host {host!r} is not an address here ({e.strerror})") from None
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
               for info in infos)


def bind(host, port):
    """A listening socket on (host, port)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def address(sock, token):
    """The page's address: what to open (with the token, when there is one)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    query = "?" + urllib.parse.urlencode({"token": token}) if token else ""
    return f"http://{shown}:{port}/{query}"


def serve(engine, host="127.0.0.1", port=8765, token=None, announce=print):
    """Serve the page over ``engine`` until interrupted (SIGINT or SIGTERM: uvicorn
    stops cleanly).  A host that is not loopback needs ``token``: ValueError."""
    if token is not None and not token.strip():
        raise ValueError("--token must not be empty")
    if token is None and not is_loopback(host):
        raise ValueError(f"--host {host} is not a loopback address: give --token (or "
                         f"$ENGINE_UI_TOKEN) so that only who has it can use the page")
    sock = bind(host, port)
    app = create_app(engine, token=token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    announce(f"engine ui: serving {store_shown(engine.path)} at {address(sock, token)} "
             f"(Ctrl-C stops)")
    server.run(sockets=[sock])
