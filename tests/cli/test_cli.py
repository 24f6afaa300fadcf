"""The `engine` command, driven in subprocesses against a real store (LMDB and PostgreSQL:
the store_path fixture): the installed console script, run from a directory of its own
that holds the flows (not on PYTHONPATH), as a user runs it."""
import datetime
import json
import os
import socket
import subprocess

import pytest

import engine
from engine_cli import ENGINE, engine_cli
from pgcluster import PASSWORD


@pytest.fixture
def cli(tmp_path, store_path):
    return engine_cli(tmp_path / "work", store_path, {"cli_flows.py": "user_flows.py"})


def test_run_list_show_savepoints_inspect(cli):
    out = cli("run", "cli_flows:greet", "--input", "name=ann", "--input", "count=3").stdout
    assert "ENDED_SUCCESS" in out and "hello ann 2" in out
    failed = cli("run", "cli_flows.py:greet", "--inputs", '{"fail": true}', expect=1).stdout
    assert "ENDED_ERROR" in failed and "asked to fail for world" in failed

    rows = json.loads(cli("ls", "--json").stdout)
    assert [r["status"] for r in rows] == ["ENDED_ERROR", "ENDED_SUCCESS"]   # newest first
    assert len(json.loads(cli("ls", "--json", "--status", "ended_success").stdout)) == 1
    table = cli("ls").stdout
    assert all(len(line) <= 100 for line in table.splitlines())
    ok = [r for r in rows if r["status"] == "ENDED_SUCCESS"][0]

    shown = json.loads(cli("show", ok["id"][:6], "--json").stdout)
    assert shown["inputs"] == {"name": "ann", "count": 3}
    assert shown["output"] == "hello ann 0 / hello ann 1 / hello ann 2"
    assert "restore_count" in cli("show", ok["id"]).stdout

    savepoints = json.loads(cli("savepoints", ok["id"], "--json").stdout)
    assert [s["action"] for s in savepoints] == ["log", "log", "log", "save_dump"]
    assert savepoints[-1]["name"] == "after-loop" and savepoints[-1]["kind"] == "explicit"
    assert savepoints[0]["command"] == 'this.log("step", i)'
    assert "save_dump" in cli("savepoints", ok["id"]).stdout

    frames = json.loads(cli("inspect", ok["id"], "after-loop", "--json").stdout)
    assert [f["function"] for f in frames] == ["greet"]
    held = {l["name"]: (l["type"], l["value"]) for l in frames[0]["locals"]}
    assert held["words"] == ("list", "['hello ann 0', 'hello ann 1', 'hello ann 2']")
    assert held["i"] == ("int", "2") and held["this"][1] == "<this>"
    human = cli("inspect", ok["id"], "2").stdout
    assert "frame 0: greet" in human
    assert any(line.split() == ["i", "int", "1"] for line in human.splitlines())


def test_schedule_add_ls_rm(cli):
    cli("schedule", "add", "beat", "cli_flows:greet", "--every", "60", "--inputs", "{}")
    before = datetime.datetime.now(datetime.timezone.utc)
    rows = json.loads(cli("schedule", "ls", "--json").stdout)
    assert [(r["name"], r["flow"], r["every"]) for r in rows] == [("beat", "cli_flows:greet",
                                                                  60.0)]
    # an aware UTC time, as every other time --json prints
    upcoming = datetime.datetime.fromisoformat(rows[0]["next"])
    assert upcoming.utcoffset() == datetime.timedelta(0)
    assert before < upcoming <= before + datetime.timedelta(seconds=61)
    assert f"{upcoming:%Y-%m-%d %H:%M:%S} UTC" in cli("schedule", "ls", "--utc").stdout
    cli("schedule", "rm", "beat")
    assert json.loads(cli("schedule", "ls", "--json").stdout) == []
    assert cli("schedule", "rm", "beat", expect=2).stderr == "engine: no schedule named 'beat'\n"


def test_restore_fork_delete(cli):
    cli("run", "cli_flows:greet", "--inputs", '{"fail": true}', expect=1)
    exec_id = json.loads(cli("ls", "--json").stdout)[0]["id"]
    out = cli("restore", exec_id, "after-loop", "--by", "name", "--run").stdout
    assert "ENDED_SUCCESS" in out
    assert json.loads(cli("show", exec_id, "--json").stdout)["restore_count"] == 1
    forked = cli("fork", exec_id, "1", "--run", expect=1).stdout.split()[0]   # it fails again
    assert forked != exec_id
    assert len(json.loads(cli("ls", "--json").stdout)) == 2
    fork = json.loads(cli("show", forked, "--json").stdout)
    # a new execution (restore_count 0) that went on from savepoint 1 to the same failure
    assert fork["status"] == "ENDED_ERROR" and "asked to fail" in fork["error"]
    assert len(json.loads(cli("savepoints", forked, "--json").stdout)) >= 3
    cli("delete", exec_id)
    assert len(json.loads(cli("ls", "--json").stdout)) == 1
    err = cli("savepoints", exec_id, expect=2).stderr
    assert err.startswith("engine: no execution")


def test_errors_are_one_line_and_a_nonzero_exit(cli, store_path, new_store, store_kind):
    cli("run", "cli_flows:greet")
    cli("run", "cli_flows:greet")
    err = cli("show", "nope", expect=2).stderr
    assert err == "engine: no execution 'nope'\n"
    with engine.Engine(store_path, durability="async") as eng:
        ids = [eng.start("cli_flows:greet").id for _ in range(17)]
    first = [i[0] for i in ids]                # 17 ids: two start alike (16 hex digits)
    common = next(c for c in first if first.count(c) > 1)
    err = cli("show", common, expect=2).stderr
    assert "ambiguous" in err and len(err.splitlines()) == 1
    err = cli("restore", ids[0], "no-such-name", "--by", "name", expect=2).stderr
    assert "has no savepoint named 'no-such-name'" in err and len(err.splitlines()) == 1
    empty = new_store("empty")          # a directory without data.mdb, a database without
    if store_kind == "lmdb":            # the schema
        os.mkdir(empty)
    err = cli("ls", "--path", empty, expect=2).stderr
    assert "is not an engine store" in err and len(err.splitlines()) == 1
    err = cli("run", "cli_flows:nothing", expect=2).stderr
    assert "has no function 'nothing'" in err


def test_config_shows_values_and_their_sources(cli):
    data = json.loads(cli("config", "--json", "--lease-seconds", "5").stdout)
    assert data["lease_seconds"] == {"value": 5.0, "source": "--lease-seconds"}
    assert data["durability"] == {"value": "async", "source": "$ENGINE_DURABILITY"}
    assert data["sleep_max_seconds"] == {"value": 60.0, "source": "default"}
    assert data["path"]["source"] == "$ENGINE_PATH"
    assert "source" in cli("config").stdout
    assert PASSWORD not in cli("config").stdout          # a URL's is not shown


def test_cancel_pause_resume_and_stats(cli):
    cli("run", "cli_flows:greet")
    exec_id = json.loads(cli("ls", "--json").stdout)[0]["id"]
    long_output = cli("show", exec_id).stdout
    assert all(len(line) <= 100 for line in long_output.splitlines())
    forked = cli("fork", exec_id, "1").stdout.split()[0]          # QUEUED, not run
    assert "PAUSED" in cli("pause", forked).stdout
    assert "QUEUED" in cli("resume", forked).stdout
    assert "ENDED_CANCELLED" in cli("cancel", forked).stdout
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["workers"] == [] and stats["queue_depth"] == 0
    assert "queue depth: 0" in cli("stats").stdout


def test_a_reader_that_goes_away_stops_the_command_quietly(cli):
    """`engine ls -q | head -1`: the pipe closes under the command; no traceback."""
    for _ in range(3):
        cli("run", "cli_flows:greet")
    reader, writer = os.pipe()
    os.close(reader)                        # every write to the pipe fails (EPIPE)
    try:
        proc = cli("ls", "-q", stdout=writer, expect=1)
    finally:
        os.close(writer)
    assert proc.stderr == ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_postgresql_server_that_cannot_be_reached_is_one_line_naming_it(pg_cluster,
                                                                         tmp_path):
    secret = "not-the-password-4711"
    port = free_port()                      # nothing listens there
    cases = {                               # URL -> what the line must say
        pg_cluster.url("postgres", password=secret): "password authentication failed",
        pg_cluster.url("no_such_db"): 'database "no_such_db" does not exist',
        f"postgresql://postgres:{secret}@127.0.0.1:{port}/db": "Connection refused",
        f"postgresql://postgres:{secret}@127.0.0.1:notaport/db": '"notaport"',
        f"postgresql://postgres:{secret}@[::1/db": "not a PostgreSQL URL",
    }
    env = dict(os.environ)
    env.pop("ENGINE_PATH", None)
    for url, said in cases.items():
        for command in (["ls"], ["worker", "-n", "1"], ["run", "json:dumps"]):
            proc = subprocess.run([ENGINE, *command, "--path", url], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)
            err = proc.stderr
            assert proc.returncode == 2 and proc.stdout == "", (command, url, err)
            assert len(err.splitlines()) == 1 and err.startswith("engine: "), err
            assert said in err and ("127.0.0.1" in err or "[::1" in err), err
            assert secret not in err and PASSWORD not in err, err
        with pytest.raises((engine.StoreUnavailable, ValueError)) as raised:
            engine.Engine(url)
        assert said in str(raised.value) and secret not in str(raised.value)
        assert "\n" not in str(raised.value)
    with pytest.raises(engine.StoreUnavailable, match="password authentication failed"):
        engine.Engine(pg_cluster.url("postgres", password=secret))
