# The frame core's classes, for other Cython modules of the engine (the codec reads and
# builds Frame objects field by field).
cimport frames


cdef class Root:
    cdef frames.sp_tstate *tstate
    cdef frames.sp_iframe *boundary
    cdef readonly bint active
    cdef int enter(self) except -1
    cdef void leave(self)


cdef class Frame:
    cdef readonly object func
    cdef readonly object code
    cdef readonly int offset
    cdef readonly tuple locals
    cdef readonly tuple stack
    cdef readonly object exc
    cdef fill(self, func, code, int offset, tuple locals, tuple stack, exc)


cdef Frame new_frame(object func, object code, int offset, tuple locals, tuple stack,
                     object exc)


cpdef tuple capture(Root root, object api=*)
