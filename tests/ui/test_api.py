"""The page's JSON API through a plain HTTP client (urllib) against a real `engine ui`
subprocess: the shapes the CLI prints with --json, filters and pages, the buttons'
POSTs; and who may ask -- the access token, the CSRF token, loopback names only without a
token, the one line when the ui extra is missing; a message sent to a waiting flow."""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import pytest

import ui_flows
import ui_tripwire
import ui_server
from engine import Engine, Status
from engine.types import ENDED
from ui_server import TOKEN, request
from waiting import wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def world(world_on_each_store):
    """The page's world, on an LMDB store and on a PostgreSQL one."""
    return world_on_each_store


def api(world, path, **options):
    headers = dict(AUTH, **options.pop("headers", {}))
    return request(world.server.base + path, headers=headers, **options)


def cli_json(world, *args):
    proc = subprocess.run([ui_server.ENGINE, *args, "--path", world.store, "--json"],
                          env=world.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def csrf_of(world):
    status, _, body = api(world, "/api/csrf")
    assert status == 200
    return body["csrf_token"]


def test_the_api_answers_in_the_shapes_the_cli_prints(world):
    status, _, listed = api(world, "/api/executions")
    assert status == 200 and listed["total"] == 4 and listed["offset"] == 0
    assert listed["executions"] == cli_json(world, "ls")           # newest first, alike
    assert listed["counts"]["ENDED_ERROR"] == 1 and listed["counts"]["ENDED_SUCCESS"] == 3
    assert api(world, f"/api/executions/{world.seed}")[2] == cli_json(world, "show",
                                                                      world.seed)
    page = api(world, f"/api/executions/{world.seed}/savepoints?order=oldest")[2]
    assert page["total"] == 2
    assert page["savepoints"] == cli_json(world, "savepoints", world.seed)
    named = api(world, f"/api/executions/{world.seed}/savepoints/with-fetched-data?by=name")
    assert named[2] == page["savepoints"][1]
    frames = api(world, f"/api/executions/{world.seed}/savepoints/2/frames")[2]
    assert frames == cli_json(world, "inspect", world.seed, "2")
    assert frames[0]["function"] == "seed_example"
    assert {"name": "data", "type": "list", "value": "[[1, 'a'], [2, 'b'], [3, 'c']]"} in \
        frames[0]["locals"]
    children = api(world, f"/api/executions/{world.parent}/children")[2]
    assert [c["parent"] for c in children] == [world.parent] * 2
    assert api(world, "/api/counts")[2] == listed["counts"]


def test_the_api_filters_and_pages(world):
    def ids(query):
        status, _, body = api(world, "/api/executions?" + query)
        assert status == 200, body
        return [e["id"] for e in body["executions"]], body["total"]
    assert ids("status=ENDED_ERROR") == ([world.seed], 1)
    assert ids("status=ended_error&flow=seed_example") == ([world.seed], 1)
    assert ids("flow=holding_html")[1] == 2
    assert ids(f"id={world.parent[:5]}") == ([world.parent], 1)
    everyone, total = ids("")
    assert ids("offset=1&limit=2") == (everyone[1:3], total)
    assert ids("offset=3&limit=10") == (everyone[3:], total)
    status, _, body = api(world, "/api/executions?status=DONE")
    assert status == 400 and "status must be one of" in body["error"]
    status, _, body = api(world, "/api/executions?offset=-1")
    assert status == 400 and "offset must be a whole number" in body["error"]
    status, _, body = api(world, "/api/executions/nosuchexecution")
    assert status == 404 and body == {"error": "no execution 'nosuchexecution'"}
    status, _, body = api(world, f"/api/executions/{world.seed}/savepoints/99")
    assert status == 404 and "has no savepoint" in body["error"]


def test_a_request_without_the_token_is_refused(world):
    base = world.server.base
    for path in ("/", "/api/executions", "/static/app.js", f"/executions/{world.seed}"):
        status, _, body = request(base + path)
        assert status == 401, path
        assert "access token" in (body["error"] if isinstance(body, dict) else body)
        assert request(base + path, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(base + path, headers=AUTH)[0] == 200, path
    assert request(base + "/api/counts", headers={"X-Engine-Token": TOKEN})[0] == 200
    # ?token= lets a browser in: a cookie, and the token leaves the address bar
    status, headers, _ = request(f"{world.server.url}&status=QUEUED")
    assert status == 303 and headers["location"] == "/?status=QUEUED"
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    status, headers, body = request(base + "/", headers={"Cookie": cookie})
    assert status == 200 and "<h1>Executions</h1>" in body
    assert "script-src 'self'" in headers["content-security-policy"]


def test_a_post_without_the_csrf_token_is_refused_and_with_it_acts(world):
    with Engine(world.store, durability="async") as eng:
        ex = eng.start(ui_flows.holding_html)
    pause = f"/api/executions/{ex.id}/pause"
    status, _, body = api(world, pause, method="POST")
    assert status == 403 and "CSRF token" in body["error"]
    assert api(world, pause, method="POST", headers={"X-CSRF-Token": "forged"})[0] == 403
    assert api(world, f"/api/executions/{ex.id}")[2]["status"] == "QUEUED"  # untouched
    csrf = {"X-CSRF-Token": csrf_of(world)}
    status, _, body = api(world, pause, method="POST",
                          headers=dict(csrf, Origin="http://elsewhere.example"))
    assert status == 403 and "another site" in body["error"]
    assert api(world, pause, method="GET")[0] == 405
    assert api(world, f"/api/executions/{ex.id}", method="PUT", headers=csrf)[0] == 405
    status, _, body = api(world, pause, method="POST", headers=csrf)
    assert status == 200 and body["status"] == "PAUSED" and body["id"] == ex.id
    status, _, body = api(world, pause, method="POST", headers=csrf)
    assert status == 409 and "PAUSED already" in body["error"]
    status, _, body = api(world, f"/api/executions/{ex.id}/explode", method="POST",
                          headers=csrf)
    assert status == 404 and "no action 'explode'" in body["error"]
    status, _, body = api(world, f"/api/executions/{ex.id}/savepoints/1/restore",
                          method="POST", headers=csrf)
    assert status == 404                                   # it has no savepoint yet
    status, _, body = api(world, f"/api/executions/{ex.id}/delete", method="POST",
                          headers=csrf)
    assert status == 200 and body == {"deleted": ex.id}
    assert api(world, f"/api/executions/{ex.id}")[0] == 404


def test_load_and_fork_through_the_api(world):
    csrf = {"X-CSRF-Token": csrf_of(world)}
    with Engine(world.store, durability="async") as eng:
        done = eng.execute(ui_flows.holding_html)
        assert done.restore_count == 0
    path = f"/api/executions/{done.id}/savepoints/holding-html"
    status, _, forked = api(world, path + "/fork?by=name", method="POST", headers=csrf)
    assert status == 200 and forked["status"] == "QUEUED" and forked["id"] != done.id
    status, _, loaded = api(world, path + "/restore?by=name", method="POST", headers=csrf)
    assert status == 200 and loaded["status"] == "QUEUED" and loaded["restore_count"] == 1
    with Engine(world.store, durability="async") as eng:
        eng.run()                       # both go on from the savepoint and end well
        for exec_id in (done.id, forked["id"]):
            assert eng.get(exec_id).output == {"length": 31, "sum": 44850}
            eng.delete(exec_id)


def test_no_request_imports_the_flow_or_builds_its_objects(world):
    # the page's process would note it in the tripwire file; this one does not
    with Engine(world.store, durability="async") as eng:
        ex = eng.execute(ui_tripwire.holds_a_tripwire)
        assert ex.output is True
    csrf = {"X-CSRF-Token": csrf_of(world)}
    for path in ("/", f"/executions/{ex.id}", f"/executions/{ex.id}/savepoints",
                 f"/executions/{ex.id}/savepoints/1", f"/executions/{ex.id}/fragments/head",
                 f"/executions/{ex.id}/fragments/details"):
        status, _, body = api(world, path)
        assert status == 200, (path, body)
    assert "ui_tripwire.Tripwire" in api(world, f"/executions/{ex.id}/savepoints/1")[2]
    frames = api(world, f"/api/executions/{ex.id}/savepoints/armed/frames?by=name")[2]
    wire = next(row for row in frames[0]["locals"] if row["name"] == "wire")
    assert wire["type"] == "ui_tripwire.Tripwire" and "armed" in wire["value"]
    forked = api(world, f"/api/executions/{ex.id}/savepoints/1/fork", method="POST",
                 headers=csrf)[2]
    assert api(world, f"/api/executions/{ex.id}/savepoints/1/restore", method="POST",
               headers=csrf)[0] == 200
    assert not os.path.exists(world.env["UI_TEST_TRIPWIRE"])
    with Engine(world.store, durability="async") as eng:
        eng.delete(ex.id)
        eng.delete(forked["id"])


def test_without_a_token_it_answers_to_loopback_names_only(world):
    server = ui_server.UiServer(world.store, env=world.env)
    try:
        assert server.url == server.base + "/"           # no token in it
        port = server.base.rsplit(":", 1)[1]
        assert request(server.base + "/api/counts")[0] == 200
        assert request(server.base + "/api/counts",
                       headers={"Host": f"localhost:{port}"})[0] == 200
        # a name that points here (DNS rebinding) is not a loopback name
        status, _, body = request(server.base + "/api/counts",
                                  headers={"Host": f"attacker.example:{port}"})
        assert status == 403 and "loopback" in body["error"]
    finally:
        server.stop()
    proc = subprocess.run([ui_server.ENGINE, "ui", "--path", world.store, "--host",
                           "0.0.0.0", "--port", "0"], env=world.env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not a loopback address" in proc.stderr
    assert "--token" in proc.stderr


def test_without_the_ui_extra_engine_ui_says_so_in_one_line(world):
    # starlette cannot be imported, as where savepoint-engine[ui] is not installed
    script = ("import sys\n"
              "class Missing:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.split('.')[0] == 'starlette':\n"
              "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
              "sys.meta_path.insert(0, Missing())\n"
              "from engine.cli import main\n"
              f"sys.exit(main(['ui', '--path', {world.store!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", script], env=world.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "pip install 'savepoint-engine[ui]'" in proc.stderr


def test_a_message_sent_through_the_api_ends_the_flow_waiting_for_it(world, tmp_path):
    exec_id = ui_flows.waiting_for_message(world.store)
    url = f"/api/executions/{exec_id}/messages"
    shown = api(world, f"/api/executions/{exec_id}")[2]
    assert shown["status"] == "WAITING" and shown["receiving"] == "approval"
    message = {"topic": "approval", "value": {"by": "ann", "ok": True}}
    status, _, body = api(world, url, method="POST", body=message)
    assert status == 403 and "CSRF" in body["error"]               # no token: refused
    csrf = {"X-CSRF-Token": csrf_of(world)}
    for bad in ([1], {"topic": "approval"}, {"topic": 7, "value": 1}):
        status, _, body = api(world, url, method="POST", headers=csrf, body=bad)
        assert status == 400 and "the body must be" in body["error"], body
    raw = urllib.request.Request(world.server.base + url, data=b"{not json", method="POST",
                                 headers=dict(AUTH, **csrf))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(raw, timeout=30)
    assert refused.value.code == 400
    assert "not JSON" in json.loads(refused.value.read())["error"]
    status, _, body = api(world, "/api/executions/nosuchexecution/messages", method="POST",
                          headers=csrf, body=message)
    assert status == 404 and "no execution" in body["error"]
    with Engine(world.store, durability="async") as eng:
        assert eng.get(exec_id).status == Status.WAITING             # nothing sent yet

    assert api(world, url, method="POST", headers=csrf, body=message)[:3:2] == \
        (200, {"sent": "approval"})
    worker = ui_server.start_worker(world.store, world.env, tmp_path / "worker.log")
    try:
        with Engine(world.store, durability="async") as eng:
            assert wait_for(lambda: eng.get(exec_id).status in ENDED, 60)
            done = eng.get(exec_id)
    finally:
        ui_server.stop_worker(worker)
    assert done.status == Status.ENDED_SUCCESS and done.output == message["value"]
    assert done.receiving is None
    status, _, body = api(world, url, method="POST", headers=csrf, body=message)
    assert status == 409 and "ended" in body["error"], body           # ended: no one receives
    with Engine(world.store, durability="async") as eng:
        eng.delete(exec_id)                     # leave the others' store as it was
