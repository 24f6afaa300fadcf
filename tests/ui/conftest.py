"""What the Savepoints page's tests share: a real store holding real executions -- the
seeds' example run until its upload failed (ENDED_ERROR), a flow that started two
children holding HTML in their locals -- its SQLite database and upload server, one
`engine ui --token` subprocess serving it, and Chromium (Debian's, driven by Playwright;
.ci/run installs it)."""
import dataclasses
import http.server
import json
import os
import shutil
import sqlite3
import threading

import pytest

import rt_flows
import ui_flows
import ui_server
from engine import Engine, Status

CHROMIUM = shutil.which("chromium")


class Uploads(http.server.BaseHTTPRequestHandler):
    """The seed example's remote API: the first upload fails with HTTP 500, later ones
    are kept in ``received``."""
    attempts = 0
    received: list = []

    def do_POST(self):
        type(self).attempts += 1
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        if type(self).attempts == 1:
            self.send_response(500)
            self.end_headers()
            return
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@dataclasses.dataclass
class World:
    root: str
    store: str
    env: dict
    seed: str            # the seed example's execution (ENDED_ERROR)
    parent: str          # starts_children's execution
    holder: str          # its first child (holding_html), with the savepoint holding-html
    server: ui_server.UiServer
    uploads: type


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    db = root / "data.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE data (id INTEGER, name TEXT)")
    con.executemany("INSERT INTO data VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    con.commit()
    con.close()
    uploads = type("Uploads", (Uploads,), {"attempts": 0, "received": []})
    http_server = http.server.HTTPServer(("127.0.0.1", 0), uploads)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    env = ui_server.environment(UI_TEST_SQLITE=str(db), UI_TEST_READS=str(root / "reads"),
                                UI_TEST_UPLOAD_URL=f"http://127.0.0.1:"
                                                   f"{http_server.server_port}")
    store = str(root / "store")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("UI_TEST_SQLITE", "UI_TEST_READS", "UI_TEST_UPLOAD_URL"):
            patch.setenv(name, env[name])
        with Engine(store, durability="async") as eng:
            ui_flows.register(eng)
            seed = eng.execute(rt_flows.seed_example)
            assert seed.status == Status.ENDED_ERROR, seed.error
            parent = eng.execute(ui_flows.starts_children)
            assert parent.status == Status.ENDED_SUCCESS, parent.error
            holder = eng.children(parent.id)[0]
    server = ui_server.UiServer(store, "--token", ui_server.TOKEN, env=env)
    try:
        yield World(str(root), store, env, seed.id, parent.id, holder, server, uploads)
    finally:
        server.stop()
        http_server.shutdown()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "no chromium here: apt-get install chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, world):
    """A page in a browser whose local time is India's (UTC+05:30), let in by the
    address engine ui printed (its token becomes a cookie).  No alert, confirm or
    prompt may ever open: a value run as script would show one."""
    context = browser.new_context(timezone_id="Asia/Kolkata", viewport={"width": 1400,
                                                                       "height": 900})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(world.server.url)
    assert "token=" not in page.url          # it went into a cookie
    yield page
    context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"


@pytest.fixture
def shot(tmp_path):
    """shot(page, name): a screenshot of the whole page under the test's tmp dir."""
    def take(page, name):
        path = os.path.join(tmp_path, f"{name}.png")
        page.screenshot(path=path, full_page=True)
        print(f"screenshot: {path}")
        return path
    return take
