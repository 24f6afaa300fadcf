# Extensions: the frame core, the savepoint codec, and the store's per-call commit
# path; the rest of the package is plain Python.
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "engine._frames",
        ["ext/_frames.pyx"],
        include_dirs=["ext"],
        depends=["ext/frames.h", "ext/frames.pxd", "ext/cpython311.h"],
    ),
    Extension(
        "engine._codec",
        ["ext/_codec.pyx"],
        include_dirs=["ext"],
        depends=["ext/codec.h"],
    ),
    Extension("engine._commit", ["ext/_commit.pyx"], depends=["ext/engine/_codec.pxd"]),
    Extension("engine._flowapi", ["ext/_flowapi.pyx"], include_dirs=["ext"]),
]

setup(ext_modules=cythonize(extensions, include_path=["ext"], language_level=3))
