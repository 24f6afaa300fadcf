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
