/* codec.h -- the C helpers of the savepoint codec (ext/_codec.pyx), in one include:
 *   msgpack.h  the wire format: output buffer, header writers, big-endian reader
 *   memo.h     the identity memos: encoder's pointer -> index map, decoder's list
 *   scalars.h  the encoder's fast path for None, bool, int, float, bytes and str
 *   strings.h  str from UTF-8 for the decoder, with a short-string cache
 *   xxh64.h    the record checksum;  siphash.h  the store's MAC
 * The few CPython internals they read (small ints, list items, compact ASCII strs) come
 * from ext/cpython/py311.h, by name. */
#ifndef SAVEPOINT_CODEC_H
#define SAVEPOINT_CODEC_H

#include "msgpack.h"
#include "memo.h"
#include "scalars.h"
#include "strings.h"
#include "xxh64.h"
#include "siphash.h"

#endif /* SAVEPOINT_CODEC_H */
