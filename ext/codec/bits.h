/* bits.h -- 64-bit rotation and little-endian loads, shared by the two hashes. */
#ifndef SAVEPOINT_CODEC_BITS_H
#define SAVEPOINT_CODEC_BITS_H

#include <stdint.h>
#include <string.h>

static inline uint64_t cd_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t
cd_read64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);          /* little-endian hosts (x86-64, aarch64) */
    return v;
}

#endif /* SAVEPOINT_CODEC_BITS_H */
