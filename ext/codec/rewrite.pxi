# Rewriting local slots of a savepoint record without decoding its values (set_locals of
# Engine.restore and Engine.fork): the body is read into a graph of encoded pieces -- each
# value's own bytes, every REF resolved to the piece it names, chunks read in place --
# the slots edited get new pieces, and the graph is written out again with the memo
# numbered afresh (a piece met again becomes a REF to where it was first written).
# Nothing is built, imported or run, and every value not edited keeps its encoding.


cdef class _Piece:
    """One encoded value: a leaf's whole encoding, or a container's header (with its
    marker) and its items (a map's keys and values, alternating)."""
    cdef bytes head
    cdef list parts          # None for a leaf
    cdef bint indexed        # takes a memo index (see the module docstring)
    cdef bint chunkable      # a value encode_snapshot may cut out as a chunk
    cdef int tag             # a marker composite's marker, else 0


cdef _Piece _piece(bytes head, list parts, bint indexed, bint chunkable, int tag=0):
    cdef _Piece piece = _Piece.__new__(_Piece)
    piece.head, piece.parts, piece.indexed, piece.chunkable, piece.tag = \
        head, parts, indexed, chunkable, tag
    return piece


# the marker composites encode_snapshot cuts out as chunks (_CHUNKABLE): tuple, set,
# frozenset, deque, OrderedDict
cdef frozenset _CHUNKABLE_MARKERS = frozenset({M_TUPLE, M_SET, M_FROZENSET, M_DEQUE,
                                               M_ORDEREDDICT})


cdef class _PieceReader:
    """Reads values as pieces, numbering the memo as the Decoder does."""
    cdef bytes data
    cdef const unsigned char *p
    cdef Py_ssize_t pos
    cdef Py_ssize_t end
    cdef list memo           # index -> piece (None: record structure)
    cdef object chunks       # as decode_savepoint takes them
    cdef int depth

    def __cinit__(self, bytes data, Py_ssize_t start, chunks):
        self.memo = []
        self.chunks = chunks
        self.depth = 0
        self.use(data, start)

    cdef use(self, bytes data, Py_ssize_t start):
        self.data = data
        self.p = <const unsigned char *>PyBytes_AS_STRING(data)
        self.pos = start
        self.end = PyBytes_GET_SIZE(data)

    cdef Py_ssize_t take(self, Py_ssize_t n) except -1:
        """Step over ``n`` bytes; where they start."""
        if n < 0 or self.end - self.pos < n:
            raise CorruptSavepoint("savepoint data is truncated")
        self.pos += n
        return self.pos - n

    cdef Py_ssize_t length(self, int nbytes) except -1:
        return <Py_ssize_t>cd_get_be(self.p + self.take(nbytes), nbytes)

    cdef bytes since(self, Py_ssize_t start):
        return self.data[start:self.pos]

    cdef tuple structure(self):
        """A plain array that is record structure: (its header bytes, its length); it
        takes a memo index nobody refers to."""
        cdef Py_ssize_t start = self.pos
        cdef unsigned char b = self.p[self.take(1)]
        cdef Py_ssize_t n
        if 0x90 <= b <= 0x9f:
            n = b & 0x0f
        elif b == 0xdc:
            n = self.length(2)
        elif b == 0xdd:
            n = self.length(4)
        else:
            raise CorruptSavepoint("savepoint record is damaged")
        self.memo.append(None)
        return self.since(start), n

    cdef _Piece read(self):
        cdef Py_ssize_t start = self.pos
        cdef unsigned char b = self.p[self.take(1)]
        cdef Py_ssize_t n
        if b <= 0x7f or b >= 0xe0 or b in (0xc0, 0xc2, 0xc3):
            return _piece(self.since(start), None, False, False)
        if 0xa0 <= b <= 0xbf:                        # a short str: no memo index
            self.take(b & 0x1f)
            return _piece(self.since(start), None, False, True)
        if b in (0xcc, 0xd0):
            self.take(1)
        elif b in (0xcd, 0xd1):
            self.take(2)
        elif b in (0xce, 0xd2, 0xca):
            self.take(4)
        elif b in (0xcf, 0xd3, 0xcb):
            self.take(8)
        elif 0xd9 <= b <= 0xdb:                      # str8/16/32
            n = self.length(1 << (b - 0xd9))
            self.take(n)
            return self.remember(_piece(self.since(start), None, n >= CD_MEMO_STR_MIN,
                                        True))
        elif 0xc4 <= b <= 0xc6:                      # bytes
            self.take(self.length(1 << (b - 0xc4)))
            return _piece(self.since(start), None, False, True)
        elif 0x90 <= b <= 0x9f:
            return self.array(start, b & 0x0f)
        elif b == 0xdc:
            return self.array(start, self.length(2))
        elif b == 0xdd:
            return self.array(start, self.length(4))
        elif 0x80 <= b <= 0x8f:
            return self.map(start, b & 0x0f)
        elif b == 0xde:
            return self.map(start, self.length(2))
        elif b == 0xdf:
            return self.map(start, self.length(4))
        elif 0xd4 <= b <= 0xd8:
            return self.ext(start, 1 << (b - 0xd4))
        elif 0xc7 <= b <= 0xc9:
            return self.ext(start, self.length(1 << (b - 0xc7)))
        else:
            raise CorruptSavepoint(f"savepoint data holds an unknown msgpack byte "
                                   f"0x{b:02x}")
        return _piece(self.since(start), None, False, False)

    cdef _Piece remember(self, _Piece piece):
        if piece.indexed:
            self.memo.append(piece)
        return piece

    cdef _Piece array(self, Py_ssize_t start, Py_ssize_t n):
        cdef int tag = 0
        if n > self.end - self.pos:
            raise CorruptSavepoint("savepoint data is truncated")
        if n > 0 and self.end - self.pos >= 3 and self.p[self.pos] == 0xd4 and \
                M_FIRST <= self.p[self.pos + 1] <= M_LAST:
            tag = self.p[self.pos + 1]
            self.take(3)
            n -= 1
        cdef _Piece piece = self.remember(_piece(
            self.since(start), [], True, tag == 0 or tag in _CHUNKABLE_MARKERS, tag))
        self.items(piece, n)
        return piece

    cdef _Piece map(self, Py_ssize_t start, Py_ssize_t n):
        if n > self.end - self.pos:
            raise CorruptSavepoint("savepoint data is truncated")
        cdef _Piece piece = self.remember(_piece(self.since(start), [], True, True))
        self.items(piece, 2 * n)
        return piece

    cdef items(self, _Piece piece, Py_ssize_t n):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CorruptSavepoint("savepoint data is nested too deeply")
        for _ in range(n):
            piece.parts.append(self.read())
        self.depth -= 1

    cdef _Piece ext(self, Py_ssize_t start, Py_ssize_t n):
        cdef int kind = <signed char>self.p[self.take(1)]
        cdef Py_ssize_t at = self.take(n)
        if kind == EXT_REF:
            if n not in (1, 2, 4):
                raise CorruptSavepoint("savepoint data holds a malformed reference")
            index = cd_get_be(self.p + at, n)
            if index >= <uint64_t>len(self.memo) or self.memo[index] is None:
                raise CorruptSavepoint("savepoint data refers to an object not seen yet")
            return self.memo[index]
        if kind == EXT_CHUNK and n == 16:
            return self.chunk(self.data[at:at + 16])
        return self.remember(_piece(self.since(start), None, kind == EXT_BYTEARRAY,
                                    kind == EXT_BYTEARRAY))

    cdef _Piece chunk(self, bytes digest):
        """A big value stored apart, read as if its bytes stood here (they share the
        record's memo numbering)."""
        if self.chunks is None:
            raise CorruptSavepoint("savepoint refers to a chunk, but no chunks were given")
        data = self.chunks.get(digest) if isinstance(self.chunks, dict) else \
            self.chunks(digest)
        if type(data) is not bytes or chunk_hash(data) != digest:
            raise CorruptSavepoint(f"savepoint chunk {digest.hex()} is missing or damaged")
        saved_data, saved_pos = self.data, self.pos
        self.use(data, 0)
        try:
            piece = self.read()
            if self.pos != self.end:
                raise CorruptSavepoint(f"savepoint chunk {digest.hex()} is damaged")
        finally:
            self.use(saved_data, saved_pos)
        return piece


cdef class _PieceWriter:
    """Writes pieces back, numbering the memo afresh: a piece written before becomes a
    REF; values of CHUNK_MIN bytes or more are cut out as encode_snapshot cuts them."""
    cdef bytearray out
    cdef dict written        # piece -> its memo index
    cdef Py_ssize_t count
    cdef dict chunks         # hash -> bytes of the chunks cut, or None

    def __cinit__(self, dict chunks):
        self.out = bytearray()
        self.written = {}
        self.count = 0
        self.chunks = chunks

    cdef structure(self, bytes header):
        self.count += 1
        self.out += header

    cdef write(self, _Piece piece):
        cdef Py_ssize_t start = len(self.out)
        if piece.indexed:
            index = self.written.get(piece)
            if index is not None:
                self.ref(index)
                return
            self.written[piece] = self.count
            self.count += 1
        self.out += piece.head
        if piece.parts is not None:
            for part in piece.parts:
                self.write(part)
        if self.chunks is not None and piece.chunkable and \
                len(self.out) - start >= CHUNK_MIN:
            data = bytes(self.out[start:])
            digest = chunk_hash(data)
            self.chunks.setdefault(digest, data)
            del self.out[start:]
            self.out += b"\xd8" + bytes([EXT_CHUNK]) + digest

    cdef ref(self, Py_ssize_t index):
        # as Encoder.ref writes it: fixext 1, 2 or 4
        cdef int size = 1 if index < 256 else 2 if index < 65536 else 4
        self.out += bytes([0xd4 if size == 1 else 0xd5 if size == 2 else 0xd6, EXT_REF])
        self.out += bytes([(index >> (8 * (size - 1 - i))) & 0xFF for i in range(size)])


def rewrite_locals(record, edits, *, cells=(), Trust trust=None, chunks=None,
                   dict new_chunks=None):
    """A new savepoint record: ``record`` with some local slots holding new values, and
    every other value encoded as it was -- nothing of the record is decoded into objects,
    imported or run.

    ``edits``: {(frame index, slot index): value}, frames outermost first, slots as in
    Frame.locals.  The slots in ``cells`` are cell variables (a variable closures share,
    or an inner function's free variable): the value goes into the cell, so every
    closure holding the cell sees it.  Any other slot is rebound, as an assignment
    would: another slot or object that held the old value keeps it.  The values are
    encoded together (with ``trust``), so one object given for several slots stays one
    object.  ``chunks``: the record's chunks, as decode_savepoint takes them;
    ``new_chunks``: a dict that gets the new record's (values of CHUNK_MIN bytes or more
    cut out again).  Raises
    SavepointError for a value that cannot be saved, IndexError for a slot the record
    does not have (or a slot of ``cells`` that holds no cell), CorruptSavepoint for a
    damaged record."""
    if type(record) is not bytes:
        record = bytes(record)
    cdef Py_ssize_t start = _check_header(record)
    cdef Decoder dec = _decoder(record, start, None, None)
    try:
        _read_codes(dec)              # the code table is kept as it is
        body = dec.pos
    except Exception as e:
        raise _damaged(e) from None
    finally:
        _done_decoding(dec)
    slots = list(edits)
    fresh = _PieceReader(encode_value(tuple([edits[s] for s in slots]), trust=trust), 0,
                         None).read().parts
    cdef _PieceReader reader = _PieceReader(record, body, chunks)
    try:
        frames_head, n = reader.structure()
        frames = []
        for _ in range(n):
            frame_head, size = reader.structure()
            if size != 6 and size != 9:
                raise CorruptSavepoint("malformed frame")
            head = [reader.read(), reader.read(), reader.read()]   # code, module, offset
            locals_head, size_locals = reader.structure()
            values = [reader.read() for _ in range(size_locals)]
            stack_head, size_stack = reader.structure()
            stack = [reader.read() for _ in range(size_stack)]
            # the exception; a generator's frame: its generator, via and next()'s default
            after = [reader.read() for _ in range(size - 5)]
            frames.append((frame_head, head, locals_head, values, stack_head, stack, after))
        result = reader.read()
        if reader.pos != reader.end:
            raise CorruptSavepoint("savepoint body has trailing bytes")
    except Exception as e:
        raise _damaged(e) from None
    cdef _Piece slot_piece
    cells = set(cells)
    for (frame_index, slot), piece in zip(slots, fresh):
        if not 0 <= frame_index < len(frames) or not 0 <= slot < len(frames[frame_index][3]):
            raise IndexError(f"the savepoint has no local slot {slot} in frame {frame_index}")
        values = frames[frame_index][3]
        if (frame_index, slot) not in cells:
            values[slot] = piece
            continue
        slot_piece = values[slot]
        if slot_piece.tag != M_CELL:
            raise IndexError(f"local slot {slot} in frame {frame_index} holds no cell")
        slot_piece.parts[0] = piece
    cdef _PieceWriter writer = _PieceWriter(new_chunks)
    writer.structure(frames_head)
    for frame_head, head, locals_head, values, stack_head, stack, after in frames:
        writer.structure(frame_head)
        for piece in head:
            writer.write(piece)
        writer.structure(locals_head)
        for piece in values:
            writer.write(piece)
        writer.structure(stack_head)
        for piece in stack:
            writer.write(piece)
        for piece in after:
            writer.write(piece)
    writer.write(result)
    cdef bytes tail = record[_TAIL_START:body] + bytes(writer.out)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _TAIL_START + len(tail))
    cdef char *p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(_RECORD_HEAD), len(_RECORD_HEAD))
    memcpy(p + _TAIL_START, PyBytes_AS_STRING(tail), len(tail))
    _put_u64(p + len(_RECORD_HEAD), _record_checksum(
        <const unsigned char *>p, len(_RECORD_HEAD), _TAIL_START + len(tail)))
    return out
