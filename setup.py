# Two extensions: the frame core and the savepoint codec; the rest of the package is
# plain Python.
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
]

setup(ext_modules=cythonize(extensions, include_path=["ext"], language_level=3))
