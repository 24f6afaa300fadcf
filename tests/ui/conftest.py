"""What the Savepoints page's tests share: a real store holding real executions -- the
seeds' example run until its upload failed (ENDED_ERROR), a flow that started two
children holding HTML in their locals -- its SQLite database and upload server, one
`engine ui --token` subprocess serving it, and Chromium (Debian's, driven by Playwright;
.ci/run installs it)."""
import dataclasses
import os
import shutil

import pytest

import rt_flows
import ui_flows
import ui_server
from engine import Engine, Status
from seed_example import UploadServer, make_database

CHROMIUM = shutil.which("chromium")


@dataclasses.dataclass
class World:
    root: str
    store: str
    env: dict
    seed: str            # the seed example's execution (ENDED_ERROR)
    parent: str          # starts_children's execution
    holder: str          # its first child (holding_html), with the savepoint holding-html
    server: ui_server.UiServer
    uploads: UploadServer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    yield from made_world(root, str(root / "store"))


@pytest.fixture(scope="module")
def world_on_each_store(module_store, tmp_path_factory):
    """world, once on each kind of store (module_store)."""
    path, environ = module_store
    yield from made_world(tmp_path_factory.mktemp("ui"), path, **environ)


def made_world(root, store, **environ):
    """(a generator for a fixture) The World of a new store at ``store`` (a directory or
    a URL), ``environ`` set in this process and the server's while it lasts."""
    db = root / "data.sqlite"
    make_database(db)
    uploads = UploadServer()
    env = ui_server.environment(UI_TEST_SQLITE=str(db), UI_TEST_READS=str(root / "reads"),
                                UI_TEST_UPLOAD_URL=uploads.url,
                                UI_TEST_TRIPWIRE=str(root / "tripwire"), **environ)
    with pytest.MonkeyPatch.context() as kept:
        for name, value in environ.items():
            kept.setenv(name, value)
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
            uploads.shutdown()


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
