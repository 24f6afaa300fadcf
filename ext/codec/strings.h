/* strings.h -- str objects from UTF-8 bytes for the decoder: ASCII copied without
 * decoding, and a cache of short strings that hands back the str made last time. */
#ifndef SAVEPOINT_CODEC_STRINGS_H
#define SAVEPOINT_CODEC_STRINGS_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Whether n bytes are all ASCII, eight at a time. */
static inline int
cd_is_ascii(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    uint64_t acc = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++) {
        acc |= p[i];
    }
    return (acc & 0x8080808080808080ULL) == 0;
}

/* A str from UTF-8 bytes; pure ASCII (the common case) is copied without decoding. */
static PyObject *
cd_make_str(const char *p, Py_ssize_t n)
{
    if (!cd_is_ascii((const unsigned char *)p, n)) {
        return PyUnicode_DecodeUTF8(p, n, "surrogatepass");
    }
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(s), p, n);
    }
    return s;
}


/* ---- short-string cache -------------------------------------------------------------
 * Savepoints of one flow decode the same short strings (dict keys, names) again and
 * again.  A direct-mapped cache of short ASCII strings hands back the str made last time:
 * no allocation, and its hash is already computed for the dict it goes into.  Strings
 * are immutable, so sharing them between decoded values changes nothing observable
 * but `is` between equal strings. */
#define CD_STR_CACHE_SIZE 1024
#define CD_STR_CACHE_MAXLEN 32
static PyObject *cd_str_cache[CD_STR_CACHE_SIZE];

static PyObject *
cd_cached_str(const char *p, Py_ssize_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    if (n > CD_STR_CACHE_MAXLEN || !cd_is_ascii(u, n)) {
        return cd_make_str(p, n);
    }
    /* slot from the length and the first and last (up to) eight bytes */
    uint64_t head = 0, tail = 0;
    memcpy(&head, u, n < 8 ? n : 8);
    if (n > 8) {
        memcpy(&tail, u + n - (n < 16 ? n - 8 : 8), n < 16 ? n - 8 : 8);
    }
    uint64_t h = (head * 0x9E3779B97F4A7C15ULL) ^ (tail * 0xC2B2AE3D27D4EB4FULL) ^ (uint64_t)n;
    PyObject **slot = &cd_str_cache[(h >> 40) & (CD_STR_CACHE_SIZE - 1)];
    PyObject *s = *slot;
    if (s != NULL && PyUnicode_GET_LENGTH(s) == n &&
            memcmp(PyUnicode_1BYTE_DATA(s), p, n) == 0) {
        Py_INCREF(s);
        return s;
    }
    s = PyUnicode_New(n, 127);
    if (s == NULL) {
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(s), p, n);
    PyObject *evicted = *slot;
    *slot = Py_NewRef(s);
    Py_XDECREF(evicted);
    return s;
}

#endif /* SAVEPOINT_CODEC_STRINGS_H */
