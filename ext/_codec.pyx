# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The savepoint codec: frame snapshots and Python values to msgpack bytes and back.

Everything is standard msgpack.  Values without a msgpack type are arrays whose first item
is a *marker* (a one-byte ext whose ext type names the Python type, e.g. tuple, set,
datetime); an object met a second time is an ext REF to its index in encounter order, so
sharing and cycles survive.  Every str, list, dict, marker array and bytearray takes the
next index, on both sides.

A savepoint record is a msgpack array::

    ["SPE", FORMAT_VERSION, "3.11", <bytecode magic>, <crc32 of the rest>, codes, body]

``codes`` lists the code objects the snapshot runs, as [module, qualname, fingerprint]; the
code itself is pinned elsewhere (the store) and handed back to :func:`decode_snapshot` by a
resolver.  ``body`` is one value: the frames, outermost first, each
[code index, module, offset, locals, stack, exception being handled], and for a
generator's frame also [..., the generator, via, next()'s default]; then the result of
the interrupted call.  Generators held as values are marker composites with their frame
(codec/generators.pxi).

Decoding never runs pickle and builds only the types listed in this module, functions and
classes found by import path, the flow's code, and instances of trusted classes; damage
of any kind raises :class:`engine.CorruptSavepoint`.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

import collections
import copyreg
import datetime
import decimal
import enum
import fractions
import hashlib
import importlib
import importlib.util
import io
import math
import operator
import pathlib
import sys
import types
import uuid
import zlib

from engine cimport _frames
from engine._frames cimport (Frame, new_frame, generator_state, blank_generator,
                             fill_generator, quiet_enter, quiet_exit)
from engine.errors import CorruptSavepoint, SavepointError
from engine._frames import EMPTY as _EMPTY
from engine._frames import (GEN_CREATED as _FRAMES_GEN_CREATED,
                            GEN_SUSPENDED as _FRAMES_GEN_SUSPENDED,
                            GEN_RUNNING as _FRAMES_GEN_RUNNING,
                            GEN_FINISHED as _FRAMES_GEN_FINISHED)

cdef extern from "codec/codec.h":
    ctypedef struct cd_buf:
        char *data
        Py_ssize_t len
        Py_ssize_t cap
    ctypedef struct cd_ptrmap:
        Py_ssize_t used
    int cd_reserve(cd_buf *, Py_ssize_t) except -1
    void cd_put1(cd_buf *, unsigned char)
    void cd_put_be(cd_buf *, uint64_t, int)
    int cd_write(cd_buf *, const char *, Py_ssize_t) except -1
    int cd_int(cd_buf *, int64_t) except -1
    int cd_double(cd_buf *, double) except -1
    int cd_double_raw(cd_buf *, double) except -1
    int cd_str_header(cd_buf *, uint64_t) except -1
    int cd_bin_header(cd_buf *, uint64_t) except -1
    int cd_array_header(cd_buf *, uint64_t) except -1
    int cd_map_header(cd_buf *, uint64_t) except -1
    int cd_ext_header(cd_buf *, uint64_t, int) except -1
    int32_t cd_ptrmap_get(const cd_ptrmap *, const void *)
    int cd_ptrmap_put(cd_ptrmap *, const void *, int32_t) except -1
    void cd_ptrmap_clear(cd_ptrmap *)
    void cd_ptrmap_free(cd_ptrmap *)
    uint64_t cd_get_be(const unsigned char *, int)
    uint64_t cd_checksum(const unsigned char *, Py_ssize_t)
    uint64_t cd_xxh64(const unsigned char *, Py_ssize_t, uint64_t)
    void cd_siphash128(const unsigned char *, Py_ssize_t, uint64_t, uint64_t, uint64_t *)
    int cd_encode_simple(cd_buf *, cd_ptrmap *, int32_t *, PyObject *) except -1
    object cd_make_str(const char *, Py_ssize_t)
    object cd_cached_str(const char *, Py_ssize_t)
    void cd_list_empty(object)
    int CD_MEMO_STR_MIN

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void *PyUnicode_DATA(object)
    const char *PyUnicode_AsUTF8AndSize(object, Py_ssize_t *) except NULL
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1
    double PyFloat_AS_DOUBLE(object)
    char *PyByteArray_AS_STRING(object)
    Py_ssize_t PyByteArray_GET_SIZE(object)
    object PyCell_New(PyObject *)
    int PyCell_Set(object, PyObject *) except -1
    PyObject *PyCell_GET(object)
    int PyList_SetSlice(object, Py_ssize_t, Py_ssize_t, PyObject *) except -1
    PyObject *PyModule_GetDict(object)
    PyObject *PyFunction_GET_MODULE(object)
    PyObject *PyFunction_GET_GLOBALS(object)
    int PyFunction_SetClosure(object, object) except -1

# CPython 3.11 internals, by name (ext/cpython/py311.h cites each one's source)
cdef extern from "cpython/py311.h":
    ctypedef struct PyCodeObject
    dict sp_dict_new_presized(Py_ssize_t)
    Py_ssize_t sp_request_code_extra_index(void (*)(void *))
    int sp_code_get_extra(PyCodeObject *, Py_ssize_t, void **)
    int sp_code_set_extra(PyCodeObject *, Py_ssize_t, void *)

# One concern per file, in dependency order: each uses only names of those before it
# (compile-time DEFs must come first; module-level statements run in this order).
include "codec/markers.pxi"
include "codec/types.pxi"
include "codec/trust.pxi"
include "codec/fingerprint.pxi"
include "codec/chunks.pxi"
include "codec/generators.pxi"
include "codec/encoder.pxi"
include "codec/decoder.pxi"
include "codec/signing.pxi"
include "codec/snapshot.pxi"
include "codec/rewrite.pxi"

_CYFUNCTION = type(checksum)      # a def function of this module: Cython's function type
