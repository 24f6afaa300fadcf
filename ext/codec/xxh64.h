/* xxh64.h -- XXH64 (seed 0), the savepoint record's integrity checksum. */
#ifndef SAVEPOINT_CODEC_XXH64_H
#define SAVEPOINT_CODEC_XXH64_H

#include <Python.h>
#include <stdint.h>
#include "bits.h"

#define CD_P1 0x9E3779B185EBCA87ULL
#define CD_P2 0xC2B2AE3D27D4EB4FULL
#define CD_P3 0x165667B19E3779F9ULL
#define CD_P4 0x85EBCA77C2B2AE63ULL
#define CD_P5 0x27D4EB2F165667C5ULL

static inline uint64_t
cd_xxh_round(uint64_t acc, uint64_t input)
{
    acc += input * CD_P2;
    acc = cd_rotl(acc, 31);
    return acc * CD_P1;
}

static inline uint64_t
cd_xxh_merge(uint64_t acc, uint64_t val)
{
    acc ^= cd_xxh_round(0, val);
    return acc * CD_P1 + CD_P4;
}

static uint64_t
cd_xxh64(const unsigned char *p, Py_ssize_t len, uint64_t seed)
{
    const unsigned char *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + CD_P1 + CD_P2, v2 = seed + CD_P2, v3 = seed, v4 = seed - CD_P1;
        const unsigned char *limit = end - 32;
        do {
            v1 = cd_xxh_round(v1, cd_read64(p)); p += 8;
            v2 = cd_xxh_round(v2, cd_read64(p)); p += 8;
            v3 = cd_xxh_round(v3, cd_read64(p)); p += 8;
            v4 = cd_xxh_round(v4, cd_read64(p)); p += 8;
        } while (p <= limit);
        h = cd_rotl(v1, 1) + cd_rotl(v2, 7) + cd_rotl(v3, 12) + cd_rotl(v4, 18);
        h = cd_xxh_merge(h, v1);
        h = cd_xxh_merge(h, v2);
        h = cd_xxh_merge(h, v3);
        h = cd_xxh_merge(h, v4);
    }
    else {
        h = seed + CD_P5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h ^= cd_xxh_round(0, cd_read64(p));
        h = cd_rotl(h, 27) * CD_P1 + CD_P4;
        p += 8;
    }
    if (p + 4 <= end) {
        uint32_t v;
        memcpy(&v, p, 4);
        h ^= (uint64_t)v * CD_P1;
        h = cd_rotl(h, 23) * CD_P2 + CD_P3;
        p += 4;
    }
    while (p < end) {
        h ^= (*p) * CD_P5;
        h = cd_rotl(h, 11) * CD_P1;
        p++;
    }
    h ^= h >> 33;
    h *= CD_P2;
    h ^= h >> 29;
    h *= CD_P3;
    h ^= h >> 32;
    return h;
}

static inline uint64_t
cd_checksum(const unsigned char *p, Py_ssize_t len)
{
    return cd_xxh64(p, len, 0);
}

#endif /* SAVEPOINT_CODEC_XXH64_H */
