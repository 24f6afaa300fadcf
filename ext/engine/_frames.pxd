# The frame core's classes, for other Cython modules of the engine (the codec reads and
# builds Frame objects field by field, and reads and builds generators).
cimport frames


cdef class Root:
    cdef frames.sp_tstate *tstate
    cdef frames.sp_iframe *boundary
    cdef readonly bint active
    cdef bint leaving           # its flow is being left: dropped generators stay quiet
    cdef object links           # {generator: (via, default)} of a restored chain, or None
    cdef int enter(self) except -1
    cdef void leave(self)


cdef class Frame:
    cdef readonly object func
    cdef readonly object code
    cdef readonly int offset
    cdef readonly tuple locals
    cdef readonly tuple stack
    cdef readonly object exc
    cdef tuple link             # None; for a generator's frame, (generator, via, default)
    cdef fill(self, func, code, int offset, tuple locals, tuple stack, exc, tuple link)


cdef Frame new_frame(object func, object code, int offset, tuple locals, tuple stack,
                     object exc, tuple link=*)


cpdef tuple capture(Root root, object api=*)

# Generators as values (the codec): what one holds, a blank one, and filling it.
cdef tuple generator_state(object gen)
cdef object blank_generator(object code, object name, object qualname)
cdef int fill_generator(object gen, object func, int state, int offset, tuple locals,
                        tuple stack, object exc) except -1
cdef void quiet_enter()
cdef void quiet_exit()
