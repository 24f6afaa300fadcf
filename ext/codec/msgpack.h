/* msgpack.h -- the msgpack wire format: a growable output buffer with the writers of
 * each header (ints, floats, str/bin/array/map/ext), and the big-endian reader. */
#ifndef SAVEPOINT_CODEC_MSGPACK_H
#define SAVEPOINT_CODEC_MSGPACK_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} cd_buf;

static int
cd_grow(cd_buf *b, Py_ssize_t need)
{
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need) {
        cap *= 2;
    }
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int
cd_reserve(cd_buf *b, Py_ssize_t need)
{
    return (b->len + need <= b->cap) ? 0 : cd_grow(b, need);
}

static inline void
cd_put1(cd_buf *b, unsigned char c)
{
    b->data[b->len++] = (char)c;
}

static inline void
cd_put_be(cd_buf *b, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        b->data[b->len++] = (char)((v >> (8 * i)) & 0xFF);
    }
}

static inline int
cd_write(cd_buf *b, const char *src, Py_ssize_t n)
{
    if (cd_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

/* msgpack integers: the smallest form that holds the value. */
static inline int
cd_int(cd_buf *b, int64_t v)
{
    if (cd_reserve(b, 9) < 0) {
        return -1;
    }
    if (v >= 0) {
        if (v < 128) { cd_put1(b, (unsigned char)v); }
        else if (v < 256) { cd_put1(b, 0xcc); cd_put_be(b, (uint64_t)v, 1); }
        else if (v < 65536) { cd_put1(b, 0xcd); cd_put_be(b, (uint64_t)v, 2); }
        else if (v < 4294967296LL) { cd_put1(b, 0xce); cd_put_be(b, (uint64_t)v, 4); }
        else { cd_put1(b, 0xcf); cd_put_be(b, (uint64_t)v, 8); }
    }
    else {
        if (v >= -32) { cd_put1(b, (unsigned char)(0xe0 | (v + 32))); }
        else if (v >= -128) { cd_put1(b, 0xd0); cd_put_be(b, (uint64_t)v, 1); }
        else if (v >= -32768) { cd_put1(b, 0xd1); cd_put_be(b, (uint64_t)v, 2); }
        else if (v >= -2147483648LL) { cd_put1(b, 0xd2); cd_put_be(b, (uint64_t)v, 4); }
        else { cd_put1(b, 0xd3); cd_put_be(b, (uint64_t)v, 8); }
    }
    return 0;
}

/* A double as 8 big-endian bytes, without a msgpack type byte (complex payloads). */
static inline int
cd_double_raw(cd_buf *b, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, 8);
    if (cd_reserve(b, 8) < 0) {
        return -1;
    }
    cd_put_be(b, bits, 8);
    return 0;
}

/* msgpack float 64 */
static inline int
cd_double(cd_buf *b, double d)
{
    if (cd_reserve(b, 1) < 0) {
        return -1;
    }
    cd_put1(b, 0xcb);
    return cd_double_raw(b, d);
}

/* A header with a 5/8/16/32-bit length: fix (short) form, then 8/16/32-bit forms.
 * fixmask 0 means the type has no fix form or no 8-bit form where the code is 0. */
static inline int
cd_header(cd_buf *b, uint64_t n, int fixmask, uint64_t fixmax, int c8, int c16, int c32)
{
    if (cd_reserve(b, 5) < 0) {
        return -1;
    }
    if (fixmask && n <= fixmax) { cd_put1(b, (unsigned char)(fixmask | n)); }
    else if (c8 && n < 256) { cd_put1(b, (unsigned char)c8); cd_put_be(b, n, 1); }
    else if (n < 65536) { cd_put1(b, (unsigned char)c16); cd_put_be(b, n, 2); }
    else { cd_put1(b, (unsigned char)c32); cd_put_be(b, n, 4); }
    return 0;
}

#define cd_str_header(b, n)   cd_header(b, n, 0xa0, 31, 0xd9, 0xda, 0xdb)
#define cd_bin_header(b, n)   cd_header(b, n, 0, 0, 0xc4, 0xc5, 0xc6)
#define cd_array_header(b, n) cd_header(b, n, 0x90, 15, 0, 0xdc, 0xdd)
#define cd_map_header(b, n)   cd_header(b, n, 0x80, 15, 0, 0xde, 0xdf)

/* msgpack ext header for a payload of n bytes with ext type `type`. */
static inline int
cd_ext_header(cd_buf *b, uint64_t n, int type)
{
    if (cd_reserve(b, 6) < 0) {
        return -1;
    }
    switch (n) {
    case 1: cd_put1(b, 0xd4); break;
    case 2: cd_put1(b, 0xd5); break;
    case 4: cd_put1(b, 0xd6); break;
    case 8: cd_put1(b, 0xd7); break;
    case 16: cd_put1(b, 0xd8); break;
    default:
        if (n < 256) { cd_put1(b, 0xc7); cd_put_be(b, n, 1); }
        else if (n < 65536) { cd_put1(b, 0xc8); cd_put_be(b, n, 2); }
        else { cd_put1(b, 0xc9); cd_put_be(b, n, 4); }
    }
    cd_put1(b, (unsigned char)type);
    return 0;
}

/* ---- reading ---------------------------------------------------------------------- */

static inline uint64_t
cd_get_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

#endif /* SAVEPOINT_CODEC_MSGPACK_H */
