"""The Savepoints page in a real browser (Chromium driven by Playwright) against a real
`engine ui` subprocess, a real store and real workers: the seeds' example is listed,
opened, its Savepoints tab read, loaded back to "with-fetched-data" with a click, and a
worker takes it to ENDED_SUCCESS while the page watches without reloading; a savepoint
inspected; HTML in a local shown as text; filters, paging, live rows and the buttons
that apply; a flow waiting for a message sent one from the page's form.  Each test
saves screenshots under its tmp dir and prints where."""
import inspect
import re

from playwright.sync_api import expect

import message_flows
import rt_flows
import ui_flows
import ui_server
from engine import Engine

LONG = 60_000            # ms: a worker process starting and running the flow


def line_of(function, text):
    """The line number of the first line of ``function`` that holds ``text``."""
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, line in enumerate(lines) if text in line)


def open_execution(page, world, exec_id):
    page.goto(f"{world.server.base}/")
    page.locator(f'tr[data-id="{exec_id}"] a').click()
    expect(page.locator("#execution-id")).to_have_text(exec_id)


def test_the_seed_example_is_loaded_back_with_a_click_and_ends_well(page, world, shot,
                                                                     tmp_path):
    row = page.locator(f'tr[data-id="{world.seed}"]')
    expect(row).to_contain_text("rt_flows:seed_example")
    expect(row).to_contain_text("ENDED_ERROR")
    expect(row.locator("a")).to_have_text(world.seed[:12])
    shot(page, "1-executions")

    row.locator("a").click()
    expect(page.locator("#status")).to_have_text("ENDED_ERROR")
    expect(page.locator("#error")).to_contain_text("upload failed with HTTP 500")
    expect(page.locator("button[data-action=cancel]")).to_have_count(0)   # it has ended
    expect(page.locator("button[data-action=delete]")).to_have_count(1)
    shot(page, "2-execution")

    page.locator("#savepoints-tab").click()
    named = page.locator('table.savepoints tr[data-name="with-fetched-data"]')
    expect(named).to_have_count(1)
    line = line_of(rt_flows.seed_example, 'this.save_dump("with-fetched-data")')
    expect(named.locator("td.line")).to_have_text(str(line))
    expect(named.locator("td.action")).to_have_text("save_dump")
    expect(named.locator("td.command")).to_have_text('this.save_dump("with-fetched-data")')
    expect(named.locator("td.kind")).to_have_text("explicit")
    created = named.locator("td.created time")
    # local time (the browser's: India), UTC on hover
    expect(created).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
                                            r"UTC\+05:30$"))
    expect(created).to_have_attribute("title", re.compile(r" UTC$"))
    first = page.locator("table.savepoints tr[data-seq='1']")
    expect(first.locator("td.action")).to_have_text("connect")
    expect(first.locator("td.command")).to_contain_text("SELECT * FROM data")
    shot(page, "3-savepoints")

    page.evaluate("window.notReloaded = true")
    named.locator("button.load").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("with-fetched-data")
    shot(page, "4-confirm-load")
    page.locator("#confirm-ok").click()
    expect(page.locator("#status")).to_have_text("QUEUED")
    expect(page.locator("#restore-count")).to_have_text("1")

    worker = ui_server.start_worker(world.store, world.env, tmp_path / "worker.log")
    try:
        expect(page.locator("#status")).to_have_text("ENDED_SUCCESS", timeout=LONG)
    finally:
        ui_server.stop_worker(worker)
    assert page.evaluate("window.notReloaded") is True          # never reloaded
    shot(page, "5-ended-success")
    # it went on from the savepoint: the rows were read once, and uploaded once
    with open(f"{world.root}/reads") as fh:
        assert fh.read().split() == ["read"]
    assert world.uploads.received == [[[1, "a"], [2, "b"], [3, "c"]]]

    page.locator(".tabs a", has_text="Details").click()
    expect(page.locator("#output")).to_contain_text('"uploaded": 3')


def test_inspect_shows_every_frame_its_source_and_locals_as_text(page, world, shot):
    open_execution(page, world, world.holder)
    expect(page.locator("table.log")).to_contain_text("holding <script>alert('owned')"
                                                      "</script>")
    page.locator("#savepoints-tab").click()
    page.locator('tr[data-name="holding-html"] a.inspect').click()
    frame = page.locator("section.frame").first
    expect(frame.locator(".function")).to_have_text("holding_html")
    current = frame.locator("pre.source .line.current")
    expect(current).to_have_attribute(
        "data-line", str(line_of(ui_flows.holding_html, 'this.save_dump("holding-html")')))
    expect(current).to_contain_text('this.save_dump("holding-html")')
    markup = frame.locator('tr[data-local="markup"]')
    expect(markup.locator("td.type")).to_have_text("str")
    expect(markup.locator("td.value")).to_have_text(repr(ui_flows.HTML))
    # shown as text: the page holds no script but its own
    assert page.locator("script").count() == 1
    assert page.locator("main script").count() == 0
    numbers = frame.locator('tr[data-local="numbers"]')
    expect(numbers.locator("td.type")).to_have_text("list")
    expect(numbers.locator("summary")).to_contain_text("[0, 1, 2, 3, 4, 5, ...]")
    long_value = numbers.locator("details pre")
    expect(long_value).to_be_hidden()
    numbers.locator("summary").click()
    expect(long_value).to_be_visible()
    expect(long_value).to_contain_text("297, 298, 299]")
    shot(page, "inspect-html-local")

    # the seed example's savepoint: the rows it fetched, in the local `data`
    open_execution(page, world, world.seed)
    page.locator("#savepoints-tab").click()
    page.locator('tr[data-name="with-fetched-data"] a.inspect').click()
    frame = page.locator("section.frame").first
    expect(frame.locator(".function")).to_have_text("seed_example")
    expect(frame.locator('tr[data-local="data"] td.value')).to_contain_text(
        "[[1, 'a'], [2, 'b'], [3, 'c']]")
    shot(page, "inspect-seed")


def test_filters_search_children_and_parent_links(page, world, shot):
    counts = page.locator("ul.counts")
    expect(counts.locator('[data-status="ENDED_SUCCESS"] .n')).to_have_text(
        re.compile(r"^\d+$"))
    page.select_option("select[name=status]", "ENDED_SUCCESS")
    page.fill("input[name=flow]", "holding_html")
    page.locator(".filters button[type=submit]").click()
    rows = page.locator("table.executions tbody tr[data-id]")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("ui_flows:holding_html")
    shot(page, "filtered")

    page.goto(f"{world.server.base}/?id={world.parent[:6]}")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", world.parent)
    rows.first.locator("a").click()
    children = page.locator("ul.children li")
    expect(children).to_have_count(2)
    expect(children.first).to_contain_text("ui_flows:holding_html")
    shot(page, "parent-with-children")
    page.locator(f'ul.children a[href="/executions/{world.holder}"]').click()
    expect(page.locator("#execution-id")).to_have_text(world.holder)
    page.locator("#parent-link").click()
    expect(page.locator("#execution-id")).to_have_text(world.parent)


def test_rows_come_and_change_live_and_buttons_show_where_they_apply(page, world, shot):
    page.evaluate("window.notReloaded = true")
    queued = page.locator('ul.counts [data-status="QUEUED"] .n')
    expect(queued).to_have_text("0")
    with Engine(world.store, durability="async") as eng:
        new = eng.start(ui_flows.holding_html, {"from": "the test"})
    row = page.locator(f'tr[data-id="{new.id}"]')
    expect(row).to_contain_text("QUEUED")                     # came without a reload
    expect(queued).to_have_text("1")
    assert page.evaluate("window.notReloaded") is True
    shot(page, "live-row")

    row.locator("a").click()
    buttons = page.locator(".head .actions button")
    expect(buttons).to_have_text(["Cancel", "Pause", "Delete"])
    expect(page.locator("#inputs")).to_contain_text('"from": "the test"')

    page.locator("button[data-action=pause]").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#status")).to_have_text("PAUSED")
    expect(buttons).to_have_text(["Cancel", "Resume", "Delete"])
    page.locator("button[data-action=resume]").click()
    page.locator("#confirm-cancel").click()                   # asked, and said no
    expect(page.locator("#status")).to_have_text("PAUSED")
    page.locator("button[data-action=resume]").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#status")).to_have_text("QUEUED")
    page.locator("button[data-action=cancel]").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#status")).to_have_text("ENDED_CANCELLED")
    expect(buttons).to_have_text(["Delete"])
    shot(page, "cancelled")

    page.locator("button[data-action=delete]").click()
    expect(page.locator("dialog#confirm")).to_contain_text("Nothing brings it back")
    page.locator("#confirm-ok").click()
    expect(page).to_have_url(f"{world.server.base}/")
    expect(page.locator(f'tr[data-id="{new.id}"]')).to_have_count(0)


def test_fork_opens_the_new_execution(page, world, shot):
    open_execution(page, world, world.holder)
    page.locator("#savepoints-tab").click()
    page.locator('tr[data-name="holding-html"] button.fork').click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#execution-id")).not_to_have_text(world.holder)
    expect(page.locator("#status")).to_have_text("QUEUED")
    forked = page.locator("#execution-id").inner_text()
    page.locator("#savepoints-tab").click()
    expect(page.locator('tr[data-name="holding-html"]')).to_have_count(1)
    shot(page, "forked")
    with Engine(world.store, durability="async") as eng:
        assert eng.get(forked).flow == "ui_flows:holding_html"
        eng.delete(forked)                      # leave the others' store as it was


def test_paging_walks_every_execution(page, world, shot):
    with Engine(world.store, durability="async") as eng:
        made = [eng.start(ui_flows.holding_html, name=f"page-{n}").id for n in range(60)]
    try:
        page.goto(f"{world.server.base}/?status=QUEUED")
        rows = page.locator("table.executions tbody tr[data-id]")
        expect(rows).to_have_count(50)
        expect(page.locator(".pager .range")).to_have_text("1–50 of 60 executions")
        expect(rows.first).to_have_attribute("data-id", made[-1])       # newest first
        page.locator(".pager a[rel=next]").click()
        expect(rows).to_have_count(10)
        expect(rows.last).to_have_attribute("data-id", made[0])
        shot(page, "second-page")
    finally:
        with Engine(world.store, durability="async") as eng:
            for exec_id in made:
                eng.delete(exec_id)


def test_a_message_sent_from_the_page_ends_the_flow_waiting_for_it(page, world, shot,
                                                                    tmp_path):
    exec_id = ui_flows.waiting_for_message(world.store)
    open_execution(page, world, exec_id)
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#status")).to_have_text("WAITING")
    expect(page.locator("#receiving")).to_have_text("waiting for a message on approval")
    form = page.locator("form#send-message")
    expect(form.locator("input[name=topic]")).to_have_value("approval")
    form.locator("input[name=value]").fill("{not json")
    form.locator("button[type=submit]").click()
    expect(page.locator("#flash")).to_contain_text("the value is not JSON")
    page.evaluate("document.querySelector('form#send-message').noValidate = true")
    form.locator("input[name=topic]").fill("")          # the server refuses it: shown
    form.locator("input[name=value]").fill('"yes"')
    form.locator("button[type=submit]").click()
    expect(page.locator("#flash")).to_contain_text("send takes a topic that is a non-empty")
    expect(page.locator("#status")).to_have_text("WAITING")
    shot(page, "message-form")

    form.locator("input[name=topic]").fill("approval")
    form.locator("input[name=value]").fill('{"by": "ann", "ok": true}')
    form.locator("button[type=submit]").click()
    expect(page.locator("#flash")).to_be_hidden()
    worker = ui_server.start_worker(world.store, world.env, tmp_path / "worker.log")
    try:
        expect(page.locator("#status")).to_have_text("ENDED_SUCCESS", timeout=LONG)
    finally:
        ui_server.stop_worker(worker)
    expect(page.locator("#receiving")).to_have_count(0)
    expect(form).to_have_count(0)                     # no one waits: no form
    expect(page.locator("#output")).to_contain_text('"by": "ann"')
    assert page.evaluate("window.notReloaded") is True          # never reloaded
    shot(page, "message-received")

    odd = ui_flows.waiting_for_message(world.store, message_flows.receives_many,
                                       {"count": 1, "topic": ui_flows.HTML})
    open_execution(page, world, odd)
    expect(page.locator("#receiving")).to_have_text(
        f"waiting for a message on {ui_flows.HTML}")           # as text, never run
    expect(page.locator("form#send-message input[name=topic]")).to_have_value(ui_flows.HTML)
    with Engine(world.store, durability="async") as eng:
        for done in (exec_id, odd):
            eng.delete(done)                    # leave the others' store as it was
