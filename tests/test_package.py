"""The package refuses interpreters it cannot serve."""
import subprocess
import sys


def test_import_on_another_python_version_raises_importerror_saying_so():
    code = ("import sys; sys.version_info = (3, 12, 0, 'final', 0)\n"
            "try:\n    import engine\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "needs CPython 3.11" in out


def test_public_names():
    import engine
    assert issubclass(engine.CorruptSavepoint, engine.SavepointError)
    assert issubclass(engine.SavepointError, Exception)


def test_version_is_written_once():
    import importlib.metadata

    import engine
    assert importlib.metadata.version("savepoint-engine") == engine.__version__


def test_source_tree_without_compiled_core_says_so(tmp_path):
    # A non-editable install, then `python -c "import engine"` in the repository root:
    # the source tree (no compiled modules) shadows the installed package.  Simulated by
    # a copy of engine/*.py without the .so files; -S keeps an editable install's finder
    # (which would supply the missing modules from the real tree) out of the picture.
    import glob
    import os
    import shutil

    import engine
    package = tmp_path / "engine"
    package.mkdir()
    for source in glob.glob(os.path.join(os.path.dirname(engine.__file__), "*.py")):
        shutil.copy(source, package)
    result = subprocess.run([sys.executable, "-S", "-c", "import engine"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: savepoint-engine's compiled core is not built in "
                           f"{package}"), last
    assert "pip install -e ." in last and "outside the source tree" in last
    assert "circular import" not in result.stderr


def test_flow_api_types_are_public():
    import engine
    from engine import _flowapi
    assert engine.This is _flowapi.This and engine.System is _flowapi.System
    assert {"This", "System"} <= set(engine.__all__)


def test_the_public_status_names_are_the_stored_ones():
    """engine.Status (the API) spells exactly the statuses records carry (the store's
    layout, engine/store/records.py): one vocabulary."""
    import engine
    from engine.store import records
    assert tuple(s.value for s in engine.Status) == records.STATUSES
