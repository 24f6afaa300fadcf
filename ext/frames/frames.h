/* frames.h -- the frame core of savepoint-engine: capture and restore of chains of
 * plain-function frames on CPython 3.11, for ext/frames/_frames.pyx (through frames.pxd).
 *
 * Four parts, each building on the ones before:
 *   stacktable.h  for every call site of a code object, how many value-stack items lie
 *                 below the callable and what kind each must be (cached on the code)
 *   capture.h     the walk from the current frame out to a registered boundary
 *   restore.h     each saved frame rebuilt as a generator-backed frame, then driven
 *   unwind.h      leaving a flow's frames without running their handlers
 *
 * Everything version-specific comes from ext/cpython/py311.h, by name.
 */
#ifndef SAVEPOINT_FRAMES_H
#define SAVEPOINT_FRAMES_H

#include "stacktable.h"
#include "capture.h"
#include "restore.h"
#include "unwind.h"

#endif /* SAVEPOINT_FRAMES_H */
