"""The Savepoints page on a savepoint's state, against a real `engine ui` subprocess: what
changed since the savepoint before (the JSON API and the page, changed locals
highlighted), and an edit box per local with "Load with changes" -- through the API and
in a real browser (Chromium driven by Playwright); never running flow code in the page's
process."""
import json
import os
import re
import subprocess

from playwright.sync_api import expect

import edit_flows
import ui_server
import ui_tripwire
from engine import Engine, Status
from ui_server import TOKEN, request

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHANGED = re.compile(r"\bchanged\b")


def api(world, path, **options):
    headers = dict(AUTH, **options.pop("headers", {}))
    return request(world.server.base + path, headers=headers, **options)


def csrf(world):
    return {"X-CSRF-Token": api(world, "/api/csrf")[2]["csrf_token"]}


def executed(world, flow):
    with Engine(world.store, durability="async") as eng:
        return eng.execute(flow)


def ran(world, exec_id):
    with Engine(world.store, durability="async") as eng:
        eng.run(execution_id=exec_id)
        return eng.get(exec_id)


def test_the_api_diffs_a_savepoint_against_the_one_before_as_engine_diff_prints(world):
    ex = executed(world, edit_flows.looping)
    status, _, body = api(world, f"/api/executions/{ex.id}/savepoints/3/diff")
    proc = subprocess.run([ui_server.ENGINE, "diff", ex.id, "3", "--json", "--path",
                           world.store], env=world.env, capture_output=True, text=True,
                          timeout=60)
    assert status == 200 and body["from"] == 2 and body["to"] == 3
    assert body["changes"] == json.loads(proc.stdout)
    assert [(c["name"], c["before"], c["after"]) for c in body["changes"]] == [
        ("total", "10", "30"), ("i", "1", "2")]
    body = api(world, f"/api/executions/{ex.id}/savepoints/4/diff?from=1")[2]
    assert body["from"] == 1 and [c["after"] for c in body["changes"]] == ["60", "3"]
    first = api(world, f"/api/executions/{ex.id}/savepoints/1/diff")[2]
    assert first["from"] is None and first["changes"][0]["kind"] == "entered"


def test_restore_and_fork_with_set_locals_through_the_api(world):
    ex = executed(world, edit_flows.wrong_limit)
    path = f"/api/executions/{ex.id}/savepoints/checked"
    status, _, body = api(world, path + "/restore?by=name", method="POST",
                          headers=csrf(world), body={"set_locals": {"limit": 4}})
    assert status == 200 and body["status"] == "QUEUED" and body["restore_count"] == 1
    names = [s["name"] for s in api(world, f"/api/executions/{ex.id}/savepoints")[2][
        "savepoints"]]
    assert names == ["edit of 1", "checked"]                   # newest first
    assert ran(world, ex.id).output == {"limit": 4, "label": "limit"}
    status, _, forked = api(world, path + "/fork?by=name", method="POST",
                            headers=csrf(world), body={"set_locals": {"label": "forked",
                                                                      "limit": 1}})
    assert status == 200 and forked["id"] != ex.id
    assert ran(world, forked["id"]).output == {"limit": 1, "label": "forked"}

    for body, code, words in [
            ({"set_locals": {"zz": 1}}, 400, "'zz' is not a local of wrong_limit"),
            ({"set_locals": {"<b>x</b>.y": 1}}, 400, "no frame of a function '<b>x</b>'"),
            ({"set_locals": {}}, 400, "naming at least one local"),
            ({"set_locals": [1]}, 400, 'the body must be {"set_locals"'),
            ("just text", 400, 'the body must be {"set_locals"')]:
        status, _, answer = api(world, path + "/restore?by=name", method="POST",
                                headers=csrf(world), body=body)
        assert status == code and words in answer["error"], answer
    status, _, answer = api(world, path + "/restore?by=name", method="POST",
                            body={"set_locals": {"limit": 4}})
    assert status == 403                                       # no CSRF token
    assert len(api(world, f"/api/executions/{ex.id}/savepoints")[2]["savepoints"]) == 2


def test_load_with_changes_runs_no_flow_code_in_the_pages_process(world):
    ex = executed(world, ui_tripwire.holds_a_tripwire)
    assert ex.output is True
    page = api(world, f"/executions/{ex.id}/savepoints/1")[2]
    assert 'data-key="wire"' in page and 'data-key="this"' in page
    status, _, body = api(world, f"/api/executions/{ex.id}/savepoints/armed/restore?by=name",
                          method="POST", headers=csrf(world),
                          body={"set_locals": {"wire": {"a": "plain dict now"}}})
    assert status == 200, body
    assert not os.path.exists(world.env["UI_TEST_TRIPWIRE"])   # not imported, not built
    frames = api(world, f"/api/executions/{ex.id}/savepoints/2/frames")[2]
    wire = next(row for row in frames[0]["locals"] if row["name"] == "wire")
    assert wire == {"name": "wire", "type": "dict", "value": "{'a': 'plain dict now'}"}
    with Engine(world.store, durability="async") as eng:
        eng.delete(ex.id)


# --- in a browser ------------------------------------------------------------------------------

def open_savepoint(page, world, exec_id, seq):
    page.goto(f"{world.server.base}/executions/{exec_id}/savepoints/{seq}")
    expect(page.locator("section.savepoint h2")).to_contain_text(f"Savepoint {seq}")


def test_a_savepoint_shows_what_changed_since_the_one_before(page, world, shot):
    ex = executed(world, edit_flows.looping)
    open_savepoint(page, world, ex.id, 3)
    expect(page.locator("#changes h2")).to_contain_text("Changes since savepoint 2")
    rows = page.locator("table.changes tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td.name")).to_have_text("total")
    expect(rows.nth(0).locator("td.before")).to_have_text("10")
    expect(rows.nth(0).locator("td.after")).to_have_text("30")
    frame = page.locator("section.frame").first
    expect(frame.locator("tr.changed")).to_have_count(2)
    for name in ("total", "i"):
        expect(frame.locator(f'tr[data-local="{name}"]')).to_have_class(CHANGED)
    expect(frame.locator('tr[data-local="inputs"]')).not_to_have_class(CHANGED)
    shot(page, "diff-highlighted")
    page.locator("#changes h2 a").click()                     # to the savepoint before
    expect(page.locator("section.savepoint h2")).to_contain_text("Savepoint 2")

    summed = executed(world, edit_flows.summing)
    with Engine(world.store, durability="async") as eng:
        noted = eng.savepoint(summed.id, "noted", by="name").seq
    open_savepoint(page, world, summed.id, noted)               # the first: all entered
    expect(page.locator("#changes h2")).to_contain_text("the start")
    expect(page.locator("table.changes tr.change-entered")).to_have_count(3)
    expect(page.locator("section.frame.entered")).to_have_count(3)


def test_edit_a_local_on_the_page_and_load_with_changes(page, world, shot):
    ex = executed(world, edit_flows.wrong_limit)
    assert ex.status == Status.ENDED_ERROR
    open_savepoint(page, world, ex.id, 1)
    limit = page.locator('input.edit[data-key="limit"]')
    expect(limit).to_have_value("-1")
    expect(page.locator('input.edit[data-key="label"]')).to_have_value('"limit"')
    expect(page.locator('input.edit[data-key="this"]')).to_have_value("")   # not JSON

    page.locator("button.load-with-changes").click()            # nothing changed yet
    expect(page.locator("#flash")).to_have_text(
        "change a value in the boxes first (as JSON), then Load with changes")
    limit.fill("five")                                           # not JSON
    page.locator("button.load-with-changes").click()
    expect(page.locator("#flash")).to_contain_text("the new value of limit is not JSON")
    expect(page.locator("dialog#confirm")).to_be_hidden()

    limit.fill("5")
    expect(limit).to_have_class(re.compile(r"\bedited\b"))
    shot(page, "edit-box")
    page.locator("button.load-with-changes").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("edit of 1")
    expect(dialog).to_contain_text("Changed: limit")
    page.locator("#confirm-ok").click()
    expect(page).to_have_url(f"{world.server.base}/executions/{ex.id}/savepoints")
    edit = page.locator('table.savepoints tr[data-name="edit of 1"]')
    expect(edit).to_have_count(1)
    expect(edit.locator("td.kind")).to_have_text("explicit")
    expect(page.locator("#status")).to_have_text("QUEUED")
    shot(page, "loaded-with-changes")

    assert ran(world, ex.id).output == {"limit": 5, "label": "limit"}
    expect(page.locator("#status")).to_have_text("ENDED_SUCCESS")   # live, no reload
    edit.locator("a.inspect").click()
    expect(page.locator('tr[data-local="limit"]')).to_have_class(CHANGED)
    expect(page.locator('input.edit[data-key="limit"]')).to_have_value("5")


def test_an_error_the_server_answers_is_shown_as_text(page, world, shot):
    ex = executed(world, edit_flows.summing)
    with Engine(world.store, durability="async") as eng:
        noted = eng.savepoint(ex.id, "noted", by="name").seq
    open_savepoint(page, world, ex.id, noted)
    # the outer frames' boxes name their function in full; the innermost's not at all
    expect(page.locator('input.edit[data-key="edit_flows.helper.rows"]')).to_have_value(
        "[1, 2, 3]")
    expect(page.locator('input.edit[data-key="n"]')).to_have_value("3")
    box = page.locator('input.edit[data-key="n"]')
    box.fill("4")
    box.evaluate("el => el.dataset.key = '<img src=x onerror=alert(1)>.n'")
    page.locator("button.load-with-changes").click()
    page.locator("#confirm-ok").click()
    flash = page.locator("#flash")
    expect(flash).to_contain_text("no frame of a function '<img src=x onerror=alert(1)>'")
    assert flash.locator("img").count() == 0                    # shown as text
    shot(page, "error-as-text")
    with Engine(world.store, durability="async") as eng:
        assert [sp.name for sp in eng.savepoints(ex.id)] == ["noted", "summed"]
