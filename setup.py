# Extensions: the frame core, the savepoint codec, and the store's per-call commit
# path; the rest of the package is plain Python.
from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

# No debug information in the shipped modules: the interpreter's CFLAGS carry -g, which
# made them 5.3 MB, mostly DWARF; -g0 (it comes last on the command line, so it wins over
# -g, also one from $CFLAGS) leaves under 1 MB.  To debug the C code, drop it here.
NO_DEBUG = {"extra_compile_args": ["-g0"]}
# The codec's functions and loops at fixed alignment: otherwise an edit anywhere in it
# shifts its hot loops and encode_snapshot's time moves by ~7% with the same
# instructions (measured when it was split into ext/codec/*.pxi).
CODEC_FLAGS = {"extra_compile_args": [*NO_DEBUG["extra_compile_args"],
                                      "-falign-functions=64", "-falign-loops=32"]}

# C headers, for rebuilding what includes them: the frame core's parts, the codec's, and
# the one header of CPython internals both use.
CPYTHON_H = sorted(glob("ext/cpython/*.h"))
FRAMES_H = sorted(glob("ext/frames/*.h")) + CPYTHON_H
CODEC_H = sorted(glob("ext/codec/*.h")) + CPYTHON_H

extensions = [
    Extension(
        "engine._frames",
        ["ext/frames/_frames.pyx"],
        include_dirs=["ext"],
        depends=["ext/frames/frames.pxd", *FRAMES_H],
        **NO_DEBUG,
    ),
    Extension(
        "engine._codec",
        ["ext/_codec.pyx"],
        include_dirs=["ext"],
        depends=[*CODEC_H, *FRAMES_H, *sorted(glob("ext/codec/*.pxi"))],  # + its parts
        **CODEC_FLAGS,
    ),
    Extension("engine._commit", ["ext/_commit.pyx"],
              depends=["ext/engine/_codec.pxd", *sorted(glob("ext/commit/*.pxi"))],  # + its parts
              **NO_DEBUG),
    Extension("engine._flowapi", ["ext/_flowapi.pyx"], include_dirs=["ext"], depends=FRAMES_H,
              **NO_DEBUG),
]

# ext/frames holds frames.pxd, which ext/engine/_frames.pxd cimports as `frames`.
setup(ext_modules=cythonize(extensions, include_path=["ext", "ext/frames"], language_level=3))
