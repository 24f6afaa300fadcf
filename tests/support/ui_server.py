"""`engine ui` and `engine worker` as the Savepoints page's tests run them: real
subprocesses of the installed command on a real store, with tests/support importable
(the flows in ui_flows and rt_flows), and plain HTTP requests to the page."""
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request

from locations import SUPPORT
from waiting import wait_for

ENGINE = shutil.which("engine")
TOKEN = "a token for the page's tests"      # what the tests' engine ui --token takes


def environment(**more):
    env = dict(os.environ, PYTHONPATH=SUPPORT, ENGINE_DURABILITY="async", **more)
    env.pop("ENGINE_UI_TOKEN", None)
    return env


class UiServer:
    """`engine ui --path STORE --port 0 ...` until stop(); ``url``: the address it
    printed (with ?token=... when it has a token), ``base``: without it."""

    def __init__(self, store, *args, env=None):
        assert ENGINE, "the engine command is not installed (pip install -e .)"
        self.proc = subprocess.Popen([ENGINE, "ui", "--path", str(store), "--port", "0",
                                      *args], env=env or environment(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()
        assert wait_for(lambda: self.lines or self.proc.poll() is not None, 60), \
            "engine ui printed nothing in 60 s"
        first = self.lines[0] if self.lines else ""
        assert " at http://" in first, (first, self.proc.poll())
        self.url = first.split(" at ", 1)[1].split()[0]
        self.base = self.url.split("?", 1)[0].rstrip("/")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        return "\n".join(self.lines)


def request(url, *, method="GET", headers=None, body=None):
    """(status, headers, parsed JSON or text) of one plain HTTP request; redirects are
    not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=30) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        status, got, raw = e.code, dict(e.headers), e.read()
    text = raw.decode()
    if got.get("content-type", "").startswith("application/json"):
        return status, got, json.loads(text)
    return status, got, text


def start_worker(store, env, log):
    """`engine worker -n 1 --flows ui_flows` on the store (the seed example's
    connectors come from ui_flows.register and the environment), its output to
    ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([ENGINE, "worker", "-n", "1", "--flows", "ui_flows",
                                 "--path", str(store)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def stop_worker(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
