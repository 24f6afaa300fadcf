"""The LMDB data file, checked before LMDB maps it and allocated before LMDB writes into it.

Reading a page of a mapped file past its end is a SIGBUS, and so is writing a page of it
that the file system must find a block for (a hole of a sparse file) on a full disk: the
process dies, with no exception and no word.  So data.mdb is checked against LMDB's own
meta before LMDB maps it (check_data_file), and an environment with writemap ("async")
has its whole map allocated (posix_fallocate) before LMDB may write there: at open, and
before the map grows (Room, set_map).  lock.mdb, which LMDB maps and writes in every
mode, is allocated before LMDB opens it.  Where the map cannot be allocated at open,
the environment goes without writemap: pwrite() then fails with ENOSPC, an exception.
"""
import errno
import fcntl
import logging
import os
import struct
import time

import lmdb

from engine.errors import CorruptStore, StoreFull

log = logging.getLogger("engine.store")

# LMDB 0.9 (py-lmdb's; libraries/liblmdb/mdb.c), 64-bit, native byte order.  A page starts
# with MDB_page: pgno u64, pad u16, flags u16, lower u16, upper u16, then the offsets (u16)
# of its nodes.  Pages 0 and 1 are meta pages: MDB_meta follows the header -- magic u32,
# version u32, address u64, mapsize u64, the free DB's and the main DB's MDB_db (pad u32,
# which in the free DB's record is the page size, flags u16, depth u16, then branch, leaf
# and overflow page counts, entries and root, u64 each), last page u64, txnid u64.  An
# MDB_node is lo u16, hi u16, flags u16, key size u16, the key, the data.
_PAGE = struct.Struct("=QHHHH")
_META = struct.Struct("=IIQQ" + "IHHQQQQQ" * 2 + "QQ")
_NODE = struct.Struct("=HHHH")
_PGNO = struct.Struct("=Q")
_PTR = struct.Struct("=H")
_MDB_MAGIC, _MDB_DATA_VERSION = 0xBEEFC0DE, 1
_P_BRANCH, _P_LEAF, _P_META, _F_BIGDATA = 0x01, 0x02, 0x08, 0x01
_MAX_READERS = 1024
# lock.mdb as LMDB sizes it: MDB_txninfo (192 bytes on Linux) and max_readers - 1 more
# 64-byte reader slots
_LOCK_SIZE = (_MAX_READERS - 1) * 64 + 192
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_LAYOUT_KNOWN = struct.calcsize("P") == 8           # else the open check is skipped


def _free_pages_cover(fd, psize, root, first, last):
    """Whether LMDB's free DB (its root page ``root``) lists every page from ``first`` to
    ``last``.  The file may end before such pages: LMDB does not write a page that the
    same commit allocated and freed again.  Pages are read with pread, never mapped; a
    free DB that reaches past ``first`` or does not parse is False."""
    try:
        found, todo, seen = set(), [root], set()
        while todo:
            pgno = todo.pop()
            if pgno in seen or not 2 <= pgno < first or len(seen) > last:
                return False
            seen.add(pgno)
            page = os.pread(fd, psize, pgno * psize)
            if len(page) < psize:
                return False
            flags, lower = _PAGE.unpack_from(page)[2:4]
            if not flags & (_P_BRANCH | _P_LEAF):
                return False
            for i in range((lower - _PAGE.size) >> 1):
                at = _PTR.unpack_from(page, _PAGE.size + 2 * i)[0]
                lo, hi, node_flags, key_size = _NODE.unpack_from(page, at)
                if flags & _P_BRANCH:             # a child page number
                    todo.append(lo | hi << 16 | node_flags << 32)
                    continue
                start, size = at + _NODE.size + key_size, lo | hi << 16
                if node_flags & _F_BIGDATA:       # the list is on overflow pages
                    overflow = _PGNO.unpack_from(page, start)[0]
                    if not 2 <= overflow < first:
                        return False
                    ids = os.pread(fd, size, overflow * psize + _PAGE.size)
                else:
                    ids = page[start:start + size]
                count = _PGNO.unpack_from(ids)[0]   # an IDL: count, then page numbers
                found.update(n for n in struct.unpack_from(f"={count}Q", ids, 8)
                             if first <= n <= last)
        return len(found) == last + 1 - first
    except (struct.error, ValueError, OverflowError, MemoryError):
        return False


def _read_data_file(fd):
    """(page size, the map size LMDB's meta records, file size) of an LMDB data file,
    checked as check_data_file says; or a string saying what is wrong with it."""
    size = os.fstat(fd).st_size
    if size == 0:
        return ("is empty (0 bytes) where a store was expected: LMDB would start a new, "
                "empty store over it, and every execution would be gone")
    metas, offset, psize = [], 0, 0
    for i in (0, 1):
        raw = os.pread(fd, _PAGE.size + _META.size, offset)
        if len(raw) < _PAGE.size + _META.size:
            return (f"is truncated: the file has {size} bytes, less than LMDB's two meta "
                    f"pages")
        meta = _META.unpack_from(raw, _PAGE.size)
        if not _PAGE.unpack_from(raw)[2] & _P_META or meta[0] != _MDB_MAGIC:
            return f"is not an LMDB data file, or it is damaged (meta page {i} is not one)"
        if meta[1] != _MDB_DATA_VERSION:
            return f"is an LMDB data file of another version ({meta[1]})"
        if i == 0:
            psize = offset = meta[4]
            if psize & (psize - 1) or not 512 <= psize <= 65536:
                return f"is damaged: its meta page gives a page size of {psize}"
        metas.append(meta)
    meta = max(metas, key=lambda m: m[21])       # the newest commit (txnid)
    used = (meta[20] + 1) * psize                # pages 0 .. last page
    if size < used and (size < 2 * psize or not _free_pages_cover(
            fd, psize, meta[11], size // psize, meta[20])):
        return f"is truncated: LMDB's meta says {used} bytes are in use, the file has {size}"
    return psize, meta[3], size


def _lmdb_lock(path):
    """The lock another process holds on byte 0 of lock.mdb: fcntl.F_WRLCK while one
    opens the environment first (a data.mdb it creates is empty until it has written the
    meta pages), F_RDLCK while one has it open, F_UNLCK if none does; None without a
    lock.mdb.  Asked with F_GETLK, which takes no lock -- but closing the descriptor
    drops any lock this process holds on lock.mdb: only for a path this process has no
    environment open on."""
    try:
        fd = os.open(os.path.join(path, "lock.mdb"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        flock = struct.Struct("hhqqi4x")          # struct flock (Linux, 64-bit)
        found = fcntl.fcntl(fd, fcntl.F_GETLK, flock.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
        return flock.unpack(found)[0]
    except (OSError, struct.error):
        return None
    finally:
        os.close(fd)


def check_data_file(path):
    """Refuse, with CorruptStore naming the file and what is wrong, a data.mdb that LMDB
    would map past its end (SIGBUS at the first read) or take for a new store: empty,
    shorter than its two meta pages, shorter than the pages LMDB's newest meta says are
    in use (pages the free DB lists aside), or not an LMDB file.  Returns (page size, the
    map size the meta records, file size); None if there is no data.mdb (a new store).
    While another process holds LMDB's exclusive lock -- it is creating the environment
    -- a file that looks wrong is looked at again, for up to 10 seconds."""
    if not _LAYOUT_KNOWN:
        return None
    data = os.path.join(path, "data.mdb")
    deadline = time.monotonic() + 10.0
    attempt = 0
    while True:
        try:
            fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            found = _read_data_file(fd)
        finally:
            os.close(fd)
        if not isinstance(found, str):
            return found
        attempt += 1      # twice more: a commit being written as it was read, say
        if attempt >= 3 and not (time.monotonic() < deadline and
                                 _lmdb_lock(path) == fcntl.F_WRLCK):
            raise CorruptStore(f"{data} {found}; the store was not opened (nothing was "
                               f"changed)")
        time.sleep(0.02)


def store_full(path, error):
    """StoreFull for an LMDB error that says the device is full -- ENOSPC, EDQUOT, or EIO,
    which is how LMDB reports a short write, with almost no room left -- else None."""
    code = getattr(error, "code", None)
    full = isinstance(error, lmdb.DiskError) or code in _FULL_ERRNOS
    if code == errno.EIO:
        try:
            stat = os.statvfs(path)
            free = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
            full = free * stat.f_frsize < (1 << 20)
        except OSError:
            pass
    if full:
        return StoreFull(f"no space left on the device holding {path}: the write was not "
                         f"made ({error})")
    return None


def allocate(path, name, size, *, create=False):
    """Allocate the file's blocks up to ``size`` bytes (growing it to that size if it is
    shorter), so that writes through a shared map never meet a hole.  True if done;
    StoreFull if the device lacks the room; False if the file system cannot do it."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = os.open(os.path.join(path, name), flags, 0o644)
    except FileExistsError:
        return True                    # created meanwhile by LMDB: its own size
    try:
        stat, device = os.fstat(fd), os.fstatvfs(fd)
        # not even tried when it cannot fit: a failed posix_fallocate may keep the blocks
        # it got, the last ones of a full device
        if size - stat.st_blocks * 512 > device.f_bfree * device.f_frsize:
            raise OSError(errno.ENOSPC, "too little free space")
        os.posix_fallocate(fd, 0, size)
        return True
    except OSError as e:
        if e.errno in _FULL_ERRNOS:
            raise StoreFull(f"no space left on the device holding {path}: {size} bytes "
                            f"of {name} could not be allocated") from None
        return False
    finally:
        os.close(fd)


def allocate_lock_file(path):
    """Allocate lock.mdb before LMDB opens (and maps) it: a new one at the size LMDB gives
    it; an existing one's holes, without changing its size, which every process that has
    it open relies on.  (This process has no environment open on the path, so closing
    the descriptor drops no lock of its own.)"""
    try:
        size = os.stat(os.path.join(path, "lock.mdb")).st_size
    except FileNotFoundError:
        allocate(path, "lock.mdb", _LOCK_SIZE, create=True)
        return
    allocate(path, "lock.mdb", size or _LOCK_SIZE)     # 0: one LMDB never opened


class Room:
    """What this process's LMDB map may write into (one per open environment).  With
    writemap, ``allocated`` bytes of data.mdb have their blocks -- at least the map; when
    a map another process grew could not be allocated here, ``short`` is set and every
    write first tries again, failing with StoreFull (reads go on)."""
    __slots__ = ("writemap", "allocated", "short")

    def __init__(self, writemap, allocated):
        self.writemap, self.allocated, self.short = writemap, allocated, False


def _data_size(path):
    try:
        return os.stat(os.path.join(path, "data.mdb")).st_size
    except OSError:
        return 0


def set_map(path, env, room, wanted=0):
    """Set this process's map to ``wanted`` bytes, or with 0 to the size another process
    grew it to (LMDB's meta) -- and never below data.mdb's size: LMDB with writemap cuts
    the file to its map, under other processes' writes.  With writemap the new map is
    allocated first: a growth that cannot be is StoreFull and the map stays as it was."""
    size = max(wanted, _data_size(path), env.info()["map_size"] if wanted else 0)
    if not wanted:
        try:
            fd = os.open(os.path.join(path, "data.mdb"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                found = _read_data_file(fd)
            finally:
                os.close(fd)
            if not isinstance(found, str):
                size = max(size, found[1])
        except OSError:
            pass
    if room.writemap and size > room.allocated:
        try:
            if not allocate(path, "data.mdb", size):
                raise StoreFull(f"{path}: data.mdb could not be allocated")
            room.allocated, room.short = size, False
        except StoreFull:
            if wanted:
                raise
            room.short = True                  # readable; no write until it has room
    env.set_mapsize(size)


def make_room(path, env, room):
    """Before a write, when the map another process grew could not be allocated here
    (writemap): allocate it now, or StoreFull."""
    size = env.info()["map_size"]
    if not allocate(path, "data.mdb", size):
        raise StoreFull(f"{path}: data.mdb could not be allocated")
    room.allocated, room.short = size, False


def open_lmdb(path, map_size, max_dbs, sync, new):
    """lmdb.open, and with writemap ("async") the whole map allocated before anything
    writes into it; where it cannot be (a full device, a file system without fallocate)
    the environment is opened again without writemap.  Returns (env, its Room).  A new
    store the device has no room for: StoreFull, and no empty data.mdb left behind."""
    def open_env(writemap):
        try:
            return lmdb.open(path, map_size=map_size, max_dbs=max_dbs, sync=sync,
                             metasync=sync, writemap=writemap, max_readers=_MAX_READERS)
        except lmdb.Error as e:
            full = store_full(path, e)
            if full is None:
                raise
            data = os.path.join(path, "data.mdb")
            if new and _data_size(path) == 0 and os.path.exists(data) and \
                    _lmdb_lock(path) == fcntl.F_UNLCK:
                os.unlink(data)             # ours, never written: not an emptied store
            raise full from None

    env = open_env(not sync)
    if sync:
        return env, Room(False, 0)
    size = env.info()["map_size"]
    try:
        why = None if allocate(path, "data.mdb", size) else "the file system cannot"
    except StoreFull as e:
        why = str(e)
    if why is None:
        return env, Room(True, size)
    env.close()
    log.warning("%s: writing without writemap, as its map of %d bytes cannot be "
                "allocated (%s): a full disk must fail writes, not kill the process",
                path, size, why)
    return open_env(False), Room(False, 0)
