"""The installed `engine` command as a user runs it, for the CLI tests: in a directory of
its own that holds the flows (not on PYTHONPATH), on one store."""
import os
import shutil
import subprocess

from locations import SUPPORT

ENGINE = shutil.which("engine")


def engine_cli(work, store, flows):
    """run(*args, expect=0, stdin=None, stdout=None): the command in ``work`` (made
    here), holding ``flows`` ({file name there: file of tests/support}), ENGINE_PATH
    ``store``; its output captured (stdout to ``stdout`` if given, a file descriptor);
    it asserts the exit status and returns the CompletedProcess."""
    assert ENGINE, "the engine command is not installed (pip install -e .)"
    os.makedirs(work)
    for name, source in flows.items():
        shutil.copy(os.path.join(SUPPORT, source), os.path.join(work, name))
    env = dict(os.environ, ENGINE_PATH=str(store), ENGINE_DURABILITY="async",
               COLUMNS="100")
    env.pop("PYTHONPATH", None)

    def run(*args, expect=0, stdin=None, stdout=subprocess.PIPE):
        proc = subprocess.run([ENGINE, *map(str, args)], env=env, stdout=stdout,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=work,
                              input=stdin)
        assert proc.returncode == expect, (proc.stdout, proc.stderr)
        return proc
    return run
