"""README.md's terminal tour works when pasted into a shell: each command of its
"From a terminal" block, then of its "Changing a savepoint's state" block, run by bash in
a copy of examples/ (not on PYTHONPATH), with $ENGINE_PATH an LMDB directory or a
PostgreSQL URL (the store_path fixture)."""
import os
import re
import shutil
import subprocess

from locations import ROOT



def terminal_block(heading):
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()


def run_block(tmp_path, store_path, *headings):
    """Each command of these sections' bash blocks, run by bash in a copy of examples/:
    (the commands, {index: exit status}, the output)."""
    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples")
    script = ["set -u"]
    lines = [line for heading in headings for line in terminal_block(heading)]
    commands = [line.split("  #")[0].strip() for line in lines if line.strip()]
    for n, command in enumerate(commands):
        if command.startswith("engine worker"):
            command = "timeout -s TERM 5 " + command      # it runs until stopped
        script.append(f"{command}\necho \"::{n} exit $?\"")
    env = dict(os.environ, ENGINE_PATH=store_path)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    codes = dict(re.findall(r"^::(\d+) exit (\d+)$", proc.stdout, re.M))
    assert len(codes) == len(commands), out
    return commands, codes, proc, out


def test_the_readme_terminal_tour_runs(tmp_path, store_path):
    commands, codes, proc, out = run_block(tmp_path, store_path, "## From a terminal",
                                           "## Changing a savepoint's state")
    for n, command in enumerate(commands):
        expected = "1" if "fail=true" in command else "124" if "worker" in command else "0"
        assert codes[str(n)] == expected, (command, out)
    assert "ENDED_SUCCESS" in proc.stdout and "with-fetched-data" in proc.stdout
    # the state changed: the upload went on for bob, a fork for eve; the shell saved zoe
    assert "uploaded 3 rows for bob" in proc.stdout and "edit of 2" in proc.stdout
    assert "uploaded 3 rows for eve" in proc.stdout
    assert "saved as savepoint" in proc.stdout and "'edit of 2'" in proc.stdout


def test_the_readme_messages_ids_retries_and_schedules_run(tmp_path, store_path):
    commands, codes, proc, out = run_block(tmp_path, store_path,
                                           "## Reaching a running execution")
    for n, command in enumerate(commands):
        expected = "124" if "worker" in command else "0"
        assert codes[str(n)] == expected, (command, out)
    assert "nothing new started" in proc.stdout
    assert "ENDED_SUCCESS" in proc.stdout and "'approved_by': 'ann'" in proc.stdout
    assert "attempt 1 of 4 failed: ConnectionError" in proc.stdout
    assert proc.stdout.count("heartbeat@") >= 2
