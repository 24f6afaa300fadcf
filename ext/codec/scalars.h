/* scalars.h -- the encoder's fast path: None, bool, int, float, bytes and str straight
 * into the buffer, without a call into the Cython encoder. */
#ifndef SAVEPOINT_CODEC_SCALARS_H
#define SAVEPOINT_CODEC_SCALARS_H

#include "../cpython/py311.h"
#include "msgpack.h"
#include "memo.h"

/* A str of at least this many UTF-8 bytes takes a memo index (both sides agree). */
#define CD_MEMO_STR_MIN 33

/* Encode the common scalars -- None, bool, int that fits 64 bits, float, bytes, and str
 * (through the identity memo: every str takes the next index) -- straight into the
 * buffer.  Returns 1 when done, 0 when `o` is something else (the Cython encoder handles
 * it), -1 on error. */
static int
cd_encode_simple(cd_buf *b, cd_ptrmap *memo, int32_t *count, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type) {
        if (sp_long_is_compact(o)) {
            return cd_int(b, sp_long_compact_value(o)) < 0 ? -1 : 1;
        }
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow) {
            return 0;
        }
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        return cd_int(b, v) < 0 ? -1 : 1;
    }
    if (t == &PyUnicode_Type) {
        const char *data;
        Py_ssize_t n;
        if (sp_str_is_compact_ascii(o)) {
            data = (const char *)PyUnicode_DATA(o);
            n = PyUnicode_GET_LENGTH(o);
        }
        else {
            data = PyUnicode_AsUTF8AndSize(o, &n);
            if (data == NULL) {
                PyErr_Clear();         /* lone surrogates: the Cython side copes */
                return 0;
            }
        }
        /* Only long strings take a memo index (CD_MEMO_STR_MIN); a short one costs no
         * more to repeat than to refer to, and decodes from the short-string cache. */
        if (n >= CD_MEMO_STR_MIN) {
            if (cd_ptrmap_get(memo, o) >= 0) {
                return 0;              /* a back-reference: the Cython side writes it */
            }
            if (cd_ptrmap_put(memo, o, *count) < 0) {
                return -1;
            }
            (*count)++;
        }
        if (cd_str_header(b, n) < 0 || cd_write(b, data, n) < 0) {
            return -1;
        }
        return 1;
    }
    if (o == Py_None) {
        if (cd_reserve(b, 1) < 0) return -1;
        cd_put1(b, 0xc0);
        return 1;
    }
    if (t == &PyFloat_Type) {
        return cd_double(b, PyFloat_AS_DOUBLE(o)) < 0 ? -1 : 1;
    }
    if (t == &PyBool_Type) {
        if (cd_reserve(b, 1) < 0) return -1;
        cd_put1(b, o == Py_True ? 0xc3 : 0xc2);
        return 1;
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        if (cd_bin_header(b, n) < 0 || cd_write(b, PyBytes_AS_STRING(o), n) < 0) {
            return -1;
        }
        return 1;
    }
    return 0;
}

#endif /* SAVEPOINT_CODEC_SCALARS_H */
