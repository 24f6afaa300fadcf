/* memo.h -- the identity memos: the encoder's pointer -> index map (an object met twice
 * becomes a back-reference) and the decoder's reusable list of objects by index. */
#ifndef SAVEPOINT_CODEC_MEMO_H
#define SAVEPOINT_CODEC_MEMO_H

#include "../cpython/py311.h"
#include <stdint.h>
#include <string.h>

typedef struct {
    uintptr_t *keys;    /* 0 = free slot */
    int32_t *values;
    Py_ssize_t mask;    /* capacity - 1, capacity a power of two */
    Py_ssize_t used;
} cd_ptrmap;

static inline Py_ssize_t
cd_ptr_slot(uintptr_t key, Py_ssize_t mask)
{
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ULL;
    return (Py_ssize_t)(h >> 20) & mask;
}

static int32_t
cd_ptrmap_get(const cd_ptrmap *m, const void *ptr)
{
    if (m->keys == NULL) {
        return -1;
    }
    uintptr_t key = (uintptr_t)ptr;
    for (Py_ssize_t i = cd_ptr_slot(key, m->mask);; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) {
            return m->values[i];
        }
        if (m->keys[i] == 0) {
            return -1;
        }
    }
}

static int
cd_ptrmap_put(cd_ptrmap *m, const void *ptr, int32_t value)
{
    if (m->keys == NULL || (m->used + 1) * 2 > m->mask + 1) {
        Py_ssize_t cap = m->keys ? (m->mask + 1) * 2 : 64;
        uintptr_t *keys = PyMem_Calloc(cap, sizeof(uintptr_t));
        int32_t *values = PyMem_Malloc(cap * sizeof(int32_t));
        if (keys == NULL || values == NULL) {
            PyMem_Free(keys);
            PyMem_Free(values);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; m->keys && i <= m->mask; i++) {
            if (m->keys[i]) {
                Py_ssize_t j = cd_ptr_slot(m->keys[i], cap - 1);
                while (keys[j]) {
                    j = (j + 1) & (cap - 1);
                }
                keys[j] = m->keys[i];
                values[j] = m->values[i];
            }
        }
        PyMem_Free(m->keys);
        PyMem_Free(m->values);
        m->keys = keys;
        m->values = values;
        m->mask = cap - 1;
    }
    uintptr_t key = (uintptr_t)ptr;
    Py_ssize_t i = cd_ptr_slot(key, m->mask);
    while (m->keys[i] && m->keys[i] != key) {
        i = (i + 1) & m->mask;
    }
    if (!m->keys[i]) {
        m->used++;
    }
    m->keys[i] = key;
    m->values[i] = value;
    return 0;
}

static void
cd_ptrmap_clear(cd_ptrmap *m)
{
    if (m->keys != NULL && m->used) {
        memset(m->keys, 0, (m->mask + 1) * sizeof(uintptr_t));
    }
    m->used = 0;
}

static void
cd_ptrmap_free(cd_ptrmap *m)
{
    PyMem_Free(m->keys);
    PyMem_Free(m->values);
    m->keys = NULL;
    m->values = NULL;
    m->used = 0;
    m->mask = 0;
}

/* Drop a list's items but keep its storage for the next use (the decoder's memo). */
static void
cd_list_empty(PyObject *list)
{
    Py_ssize_t n = Py_SIZE(list);
    Py_SET_SIZE(list, 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_CLEAR(sp_list_items(list)[i]);
    }
}

#endif /* SAVEPOINT_CODEC_MEMO_H */
