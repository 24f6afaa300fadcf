"""What a new user does from a terminal, step by step: the installed `engine` command in
a directory that holds flows.py and is not on PYTHONPATH (each test fails on the engine
before these were fixed).  Each test runs on LMDB and on PostgreSQL (the store_path
fixture)."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from engine import Engine, Status
from waiting import wait_for
from locations import SUPPORT

ENGINE = shutil.which("engine")


class User:
    """A terminal in a directory of its own with flows.py in it."""

    def __init__(self, tmp_path, store):
        assert ENGINE, "the engine command is not installed (pip install -e .)"
        self.store = store
        self.work = tmp_path / "work"
        self.work.mkdir()
        shutil.copy(os.path.join(SUPPORT, "user_flows.py"), self.work / "flows.py")
        self.ticks = tmp_path / "ticks"
        self.env = dict(os.environ, ENGINE_PATH=self.store, ENGINE_DURABILITY="async",
                        TICKS=str(self.ticks), COLUMNS="100")
        self.env.pop("PYTHONPATH", None)

    def __call__(self, *args, expect=0, cwd=None, env=None):
        proc = subprocess.run([ENGINE, *map(str, args)], env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=120,
                              cwd=cwd or self.work)
        assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
        return proc

    def error(self, *args, expect=2, **kw):
        """The one line on stderr of a command that fails."""
        err = self(*args, expect=expect, **kw).stderr
        assert len(err.splitlines()) == 1 and err.startswith("engine: "), err
        return err

    def background(self, *args, **kw):
        return subprocess.Popen([ENGINE, *map(str, args)], env=self.env, cwd=self.work,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                **kw)

    def ticked(self):
        return self.ticks.read_text().split() if self.ticks.exists() else []

    def show(self, exec_id):
        return json.loads(self("show", exec_id, "--json").stdout)

    def engine(self):
        return Engine(self.store, durability="async")


@pytest.fixture
def user(tmp_path, store_path):
    return User(tmp_path, store_path)


def test_restore_and_fork_with_run_find_the_flow_and_run_only_that_execution(user):
    user("run", "flows:greet", "--inputs", '{"fail": true}', expect=1)
    exec_id = json.loads(user("ls", "--json").stdout)[0]["id"]
    bystander = user("fork", exec_id, "1").stdout.split()[0]        # QUEUED, not run
    out = user("restore", exec_id, "after-loop", "--by", "name", "--run").stdout
    assert "ENDED_SUCCESS" in out and "hello world 1" in out
    assert user.show(bystander)["status"] == "QUEUED"                # only the named one ran
    forked = user("fork", exec_id[:8], "after-loop", "--by", "name", "--run", expect=1)
    assert "ENDED_ERROR" in forked.stdout     # a new execution (restore_count 0) fails again
    assert user.show(bystander)["status"] == "QUEUED"


def test_a_module_that_cannot_be_imported_leaves_the_execution_queued(user, tmp_path):
    user("run", "flows:greet", "--inputs", '{"fail": true}', expect=1)
    exec_id = json.loads(user("ls", "--json").stdout)[0]["id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    err = user.error("restore", exec_id, "after-loop", "--by", "name", "--run", cwd=elsewhere)
    assert "cannot import flow module 'flows'" in err and "damaged" not in err
    shown = user.show(exec_id)
    assert shown["status"] == "QUEUED" and "FlowNotFound" in shown["error"]
    # back where the code is, it goes on from the savepoint it was restored to
    with user.engine() as eng:
        assert eng.get(exec_id).status == Status.QUEUED
    worker = user.background("worker", "-n", "1", "--flows", "flows")
    try:
        assert wait_for(lambda: user.show(exec_id)["status"] == "ENDED_SUCCESS")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert user.show(exec_id)["error"] is None and user.show(exec_id)["restore_count"] == 1


def test_worker_finds_flows_in_the_current_directory_and_logs_each_execution(user):
    with user.engine() as eng:
        ids = [eng.start("flows:greet", {"name": f"n{i}"}).id for i in range(4)]
    worker = user.background("worker", "-n", "2", "--flows", "flows")
    try:
        assert wait_for(lambda: all(user.show(i)["status"] == "ENDED_SUCCESS" for i in ids))
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    for exec_id in ids:
        assert f"execution {exec_id} (flows:greet) started" in err
        assert f"execution {exec_id} (flows:greet) ended ENDED_SUCCESS" in err


def test_lifecycle_refusals_are_one_line_and_change_nothing(user):
    user("run", "flows:greet")
    exec_id = json.loads(user("ls", "--json").stdout)[0]["id"]
    before = user.show(exec_id)
    for command in ("cancel", "pause", "resume"):
        err = user.error(command, exec_id)
        assert f"cannot {command} execution {exec_id}: it has ended" in err
    assert user.show(exec_id) == before


def test_delete_of_an_execution_a_worker_runs_stops_it_for_good(user):
    with user.engine() as eng:
        exec_id = eng.start("flows:ticking", {"rounds": 100000}).id
    worker = user.background("worker", "-n", "1", "--flows", "flows")
    try:
        assert wait_for(lambda: len(user.ticked()) >= 3)
        assert user.show(exec_id)["status"] == "RUNNING"
        assert user("delete", exec_id[:10]).stdout == f"deleted {exec_id}\n"
        user.error("show", exec_id)
        seen = len(user.ticked())
        time.sleep(0.5)                      # what a resurrected flow would do meanwhile
        assert len(user.ticked()) <= seen + 1
        user.error("show", exec_id)
        assert json.loads(user("ls", "--json").stdout) == []
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def test_ctrl_c_in_engine_run_leaves_the_execution_queued(user):
    proc = user.background("run", "flows:ticking", start_new_session=True)
    assert wait_for(lambda: len(user.ticked()) >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert len(err.splitlines()) == 1 and "interrupted" in err and "QUEUED" in err
    (row,) = json.loads(user("ls", "--json").stdout)
    assert row["status"] == "QUEUED"                 # not RUNNING with no process


def test_bad_input_is_one_line(user):
    user("run", "flows:greet")
    assert "--status must be one of" not in user.error("ls", "--status", "bogus")
    assert "QUEUED" in user.error("ls", "--status", "bogus")
    assert "must be at least 1" in user.error("ls", "--limit", "-1")
    assert "--inputs is not valid JSON" in user.error("run", "flows:greet", "--inputs", "{bad")
    err = user.error("ls", env={"ENGINE_DURABILITY": "fast"})
    assert "durability must be one of sync, async, not 'fast' (from $ENGINE_DURABILITY)" in err
    err = user.error("ls", "--lease-seconds", "-5")
    assert "lease_seconds must be > 0, not '-5' (from --lease-seconds)" in err
    assert "no file" in user.error("run", "missing.py:handler")
    assert "cannot import nosuchmodule" in user.error("worker", "--flows", "nosuchmodule")
    assert "engine " in user("--version").stdout
    for command in ("run", "ls", "show", "logs", "savepoints", "inspect", "restore", "fork",
                    "delete", "cancel", "pause", "resume", "worker", "stats", "config"):
        text = user(command, "--help").stdout
        assert text.count("\n") > 3 and "usage: engine " + command in text


def test_log_is_shown_with_times_and_followed(user):
    user("run", "flows:greet", "--input", "count=3")
    exec_id = json.loads(user("ls", "--json").stdout)[0]["id"]
    shown = user("show", exec_id, "--utc").stdout
    assert "log:" in shown and shown.count(" UTC ") >= 3 and "step 2" in shown
    lines = user("logs", exec_id).stdout.splitlines()
    assert [line.split(None, 3)[-1] for line in lines] == ["step 0", "step 1", "step 2"]
    with user.engine() as eng:
        follow_id = eng.start("flows:ticking", {"rounds": 6, "pause": 0.1}).id
    follower = user.background("logs", follow_id, "--follow", "--json")
    runner = user.background("run", "flows:greet")        # runs nothing of follow_id's
    runner.wait(60)
    worker = user.background("worker", "-n", "1", "--flows", "flows")
    try:
        out, _ = follower.communicate(timeout=60)          # returns when it ends
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    entries = [json.loads(line) for line in out.splitlines()]
    assert [text for _, text in entries] == [f"tick {i}" for i in range(6)]
    assert all(at.endswith("+00:00") for at, _ in entries)


def test_tables_fit_the_terminal_and_times_show_their_zone(user):
    user("run", "flows:greet", "--input", "name=" + "x" * 150, "--inputs", "{}")
    for columns in ("60", "180"):
        out = user("ls", env={"COLUMNS": columns}).stdout
        assert max(len(line) for line in out.splitlines()) <= int(columns)
    wide = user("savepoints", json.loads(user("ls", "--json").stdout)[0]["id"],
                env={"COLUMNS": "200"}).stdout
    assert 'this.log("step", i)' in wide                   # nothing cut at 200
    assert "~" not in wide
    local = user("ls", env={"TZ": "Asia/Kolkata"}).stdout
    assert "IST" in local or "+0530" in local
    assert " UTC" in user("ls", "--utc").stdout
    dated = user("savepoints", json.loads(user("ls", "--json").stdout)[0]["id"], "--utc")
    assert time.strftime("%Y-", time.gmtime()) in dated.stdout


def test_a_flows_module_whose_register_fails_stops_the_pool_with_a_clear_message(user):
    (user.work / "broken.py").write_text("def register(eng):\n    raise RuntimeError('no "
                                         "database configured')\n")
    started = time.monotonic()
    err = user("worker", "-n", "2", "--flows", "broken", expect=2).stderr
    assert "broken.register(eng) failed: RuntimeError: no database configured" in err
    assert time.monotonic() - started < 30 and "starting another" not in err
    # failing only inside the worker processes: a few tries with a growing wait, then
    # the pool gives up
    (user.work / "childonly.py").write_text(
        "import multiprocessing\n"
        "def register(eng):\n"
        "    if multiprocessing.parent_process() is not None:\n"
        "        raise RuntimeError('no database in the worker')\n")
    err = user("worker", "-n", "1", "--flows", "childonly", expect=2).stderr
    assert err.count("starting another") == 4
    assert "failed to start 5 times in a row" in err and "no database in the worker" in err
