"""`engine restore/fork --set`, `engine diff` and `engine shell`, driven in subprocesses
against a real store, from a directory of their own that holds the flows (as a user runs
them); the shell through a pipe."""
import json

import pytest

from engine_cli import engine_cli

@pytest.fixture
def cli(tmp_path):
    return engine_cli(tmp_path / "work", tmp_path / "store",
                      {"edit_flows.py": "edit_flows.py"})


def failed_limit(cli):
    """An execution of edit_flows.wrong_limit, failed for its wrong limit; its id."""
    out = cli("run", "edit_flows:wrong_limit", expect=1).stdout
    assert "limit must be >= 0, not -1" in out
    return out.split()[0]


def savepoints(cli, exec_id):
    return [(s["seq"], s["name"]) for s in
            json.loads(cli("savepoints", exec_id, "--json").stdout)]


def test_restore_with_set_as_json_and_as_a_python_literal(cli):
    exec_id = failed_limit(cli)
    out = cli("restore", exec_id, "checked", "--set", "limit=5", "--set", 'label="ok"',
              "--run", "--json").stdout
    done = json.loads(out)
    assert done["status"] == "ENDED_SUCCESS" and done["output"] == {"limit": 5, "label": "ok"}
    assert savepoints(cli, exec_id) == [(1, "checked"), (2, "edit of 1")]
    # Python literals: hex, a single-quoted string, a tuple
    out = cli("fork", exec_id, "1", "--set", "limit=0x10", "--set", "label='hex'",
              "--run", "--json").stdout
    forked = json.loads(out)
    assert forked["id"] != exec_id and forked["output"] == {"limit": 16, "label": "hex"}
    assert savepoints(cli, forked["id"]) == [(1, "edit of 1")]
    frames = json.loads(cli("inspect", exec_id, "1", "--json").stdout)   # untouched
    held = {row["name"]: row["value"] for row in frames[0]["locals"]}
    assert held["limit"] == "-1" and held["label"] == "'limit'"


def test_bad_set_values_and_names_are_one_line_and_change_nothing(cli):
    exec_id = failed_limit(cli)
    for args, words in [
            (["--set", "limit=/upload"], "VALUE must be JSON or a Python literal (text "
                                         "needs quotes: limit='\"...\"')"),
            (["--set", "limit"], "must be NAME=VALUE"),
            (["--set", "zz=1"], "'zz' is not a local of wrong_limit in savepoint 1 (its "
                                "locals: system, this, inputs, limit, label)"),
            (["--set", "nosuch.limit=1"], "has no frame of a function 'nosuch'"),
            (["--set", "limit=1", "--set", "limit=2"], "--set names limit more than once")]:
        err = cli("restore", exec_id, "checked", *args, expect=2).stderr
        assert err.count("\n") == 1 and err.startswith("engine: ") and words in err, err
    assert savepoints(cli, exec_id) == [(1, "checked")]
    assert json.loads(cli("show", exec_id, "--json").stdout)["status"] == "ENDED_ERROR"


def test_diff_against_the_savepoint_before_and_between_two(cli):
    cli("run", "edit_flows:looping")
    exec_id = json.loads(cli("ls", "--json").stdout)[0]["id"]
    rows = json.loads(cli("diff", exec_id, "3", "--json").stdout)
    assert rows == [
        {"frame": "looping", "depth": 0, "name": "total", "kind": "changed",
         "before": "10", "after": "30"},
        {"frame": "looping", "depth": 0, "name": "i", "kind": "changed",
         "before": "1", "after": "2"}]
    human = cli("diff", exec_id, "1", "4").stdout
    assert human.splitlines()[0] == "from savepoint 1 to savepoint 4:"
    assert any(line.split() == ["looping", "(0)", "total", "changed", "0", "60"]
               for line in human.splitlines())
    first = cli("diff", exec_id, "1").stdout
    assert first.startswith("from before the first savepoint to savepoint 1:")
    assert "entered" in first
    assert cli("diff", exec_id, "2", "2").stdout.strip() == \
        "from savepoint 2 to savepoint 2: no changes"
    err = cli("diff", exec_id, "9", expect=2).stderr
    assert err.count("\n") == 1 and "no savepoint with seq, id or name '9'" in err


def test_the_shell_reads_a_pipe_and_saves_only_what_save_is_given(cli):
    exec_id = failed_limit(cli)
    script = ("print('seen', limit, label, len(frames))\n"
              "limit = 99\n"                            # a console variable, not saved
              "save(zz=1)\n"                            # refused, in one line
              "save(limit=7)\n")
    proc = cli("shell", exec_id, "checked", stdin=script)
    assert "savepoint 1 of execution" in proc.stderr            # the banner
    assert "seen -1 limit 1" in proc.stdout
    assert "saved as savepoint 2 ('edit of 1')" in proc.stdout
    assert "engine: set_locals['zz']: 'zz' is not a local" in proc.stderr
    assert savepoints(cli, exec_id) == [(1, "checked"), (2, "edit of 1")]
    out = cli("resume", exec_id, expect=2)            # not PAUSED: restore queued it
    assert "QUEUED" in out.stderr
    ran = json.loads(cli("restore", exec_id, "2", "--run", "--json").stdout)
    assert ran["output"] == {"limit": 7, "label": "limit"}

    nothing = cli("shell", exec_id, "1", stdin="limit = 1\n")     # no save(): nothing kept
    assert "saved" not in nothing.stdout
    assert savepoints(cli, exec_id) == [(1, "checked"), (2, "edit of 1")]
