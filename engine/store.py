"""The LMDB store: executions, savepoints, pinned code, chunks, the run queue, leases and
settings, in one LMDB environment that any number of processes on this machine share.

Every value is signed with the store's secret key (engine.signing: a 16-byte SipHash tag
in front of it, pinned code and chunks too); a damaged or forged record raises
CorruptSavepoint naming what it belonged to, and every other record stays readable.  Writes go through one helper that grows a full map and retries.  Claiming an
execution happens inside LMDB's single write transaction, so two processes never claim the
same one; a lease names its owner by pid, process start time and boot id, so a dead owner
(even one whose pid was reused) is noticed at once and a hung one when its lease expires.

An execution is written in two places: put_execution writes the whole dict to
`executions`; commit_savepoint writes its STATE_FIELDS *inside the savepoint* -- one put
per savepoint, so a savepoint costs about what a bare LMDB put does, and a savepoint and
the state change that comes with it are one value.  The current execution (the head) is
the record, updated with the newest savepoint's state when that is newer (a version
stamp: nanoseconds, never decreasing for one execution).

One damaged record affects only its own execution: reading heads never fails (a damaged
execution comes back marked "damaged", _damaged_head), a damaged lease counts as none, a
queue entry out of step with the due index is repaired by the claim that meets it, and
Store.check (engine.storecheck, `engine doctor`) verifies and repairs the whole store.

Named databases (keys -> values):
    executions   id -> execution dict                       (sealed msgpack)
    savepoints   id NUL seq -> [meta, record, state]         (sealed msgpack; meta and
                                                             state as lists in
                                                             META_FIELDS/STATE_FIELDS
                                                             order)
    names        id NUL name -> seq                          (u64)
    code         fingerprint -> engine._codec.encode_code    (signed, then checked
                                                             against the fingerprint)
    code_users   fingerprint id -> ""                        (which executions pin it)
    exec_codes   id NUL fingerprint -> ""                    (the same, by execution)
    chunks       hash -> bytes                               (checked against the hash)
    chunk_refs   hash -> count                               (u64)
    queue        due id -> ""                                (due: u64 microseconds)
    due          id -> due                                   (u64; where its queue key is)
    leases       id -> [pid, start, boot, expires, label]    (sealed msgpack)
    settings     name -> value                               (sealed msgpack)
    meta         b"format" -> format version; b"key-check" -> the tag of a fixed text
                 (a store opened with another key is refused at once)
"""
import errno
import fcntl
import logging
import os
import struct
import threading
import time

import lmdb

from engine import _codec, _commit, signing
from engine.config import DURABILITIES, RETENTIONS, default_path
from engine.errors import CorruptSavepoint, CorruptStore, SavepointError, StoreFull

FORMAT = 2                   # 2: every value signed (engine.signing); 1 had checksums
_KEY_CHECK = b"savepoint-engine: the key this store is signed with"
_U64 = struct.Struct(">Q")
# What a savepoint stores about itself (the codec lays the savepoint value out).
META_FIELDS = _codec.META_FIELDS
_DBS = ("executions", "savepoints", "names", "code", "code_users", "exec_codes", "chunks",
        "chunk_refs", "queue", "due", "leases", "settings", "meta")


def retention_error(value):
    """The ValueError for a savepoint_retention that is not one of RETENTIONS."""
    return ValueError(f"savepoint_retention must be one of {RETENTIONS}, not {value!r}")


_UNCHANGED = object()        # commit_savepoint: the due time stays as it is
log = logging.getLogger("engine.store")
# What this process remembers as pinned (Store._pinned_ids, read at every commit) covers
# at most this many executions; the oldest are forgotten first (they pin again, once).
PINNED_EXECUTIONS = 1024
_ENDED_ERROR = "ENDED_ERROR"     # the status of an execution whose record is lost


def _with_prefix(txn, db, prefix):
    """[(key, value)] of every entry whose key starts with ``prefix`` (copied, so the
    caller may delete them as it goes)."""
    cursor = txn.cursor(db=db)
    found = []
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            found.append((bytes(key), value))
    return found


def _meta(fields):
    return dict(zip(META_FIELDS, fields))


def _key(exec_id):
    return exec_id.encode()


def _sp_key(exec_id, seq):
    return exec_id.encode() + b"\0" + _U64.pack(seq)


def _name_key(exec_id, name):
    return exec_id.encode() + b"\0" + name.encode()


def _id_of(key):
    """The execution id a key holds, or None if it is not one (not UTF-8, or empty)."""
    try:
        exec_id = bytes(key).decode()
    except UnicodeDecodeError:
        return None
    return exec_id if exec_id and "\0" not in exec_id else None


def _shown(key):
    """A key as people read it: its text if it is printable UTF-8, else hex."""
    key = bytes(key)
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()
    return text if text.isprintable() else "0x" + key.hex()


# --- process identity ---------------------------------------------------------------------

def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


_BOOT_ID = _boot_id()


def _start_time(pid):
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22),
    or None if there is no such live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):            # exited, not yet reaped: dead all the same
        return None
    return int(fields[19])


class Owner:
    """A process that holds leases: pid, start time and boot id, so that a pid reused by
    another process after the owner died is not mistaken for the owner."""
    __slots__ = ("pid", "start", "boot", "label")

    def __init__(self, pid, start, boot, label=""):
        self.pid, self.start, self.boot, self.label = pid, start, boot, label

    @classmethod
    def current(cls, label=""):
        pid = os.getpid()
        return cls(pid, _start_time(pid), _BOOT_ID, label)

    def alive(self):
        """Whether the owner still runs (on this machine, since the same boot)."""
        return self.boot == _BOOT_ID and _start_time(self.pid) == self.start

    def __eq__(self, other):
        return isinstance(other, Owner) and (self.pid, self.start, self.boot) == (
            other.pid, other.start, other.boot)

    def __hash__(self):
        return hash((self.pid, self.start, self.boot))

    def __repr__(self):
        return f"Owner(pid={self.pid}, start={self.start}, label={self.label!r})"


class Lease:
    __slots__ = ("owner", "expires")

    def __init__(self, owner, expires):
        self.owner, self.expires = owner, expires

    def held(self, now):
        """Held: the owner is alive and the lease has not run out."""
        return self.expires > now and self.owner.alive()

    def __repr__(self):
        return f"Lease({self.owner!r}, expires={self.expires})"


# --- the data file: checked before LMDB maps it, allocated before LMDB writes into it ------
#
# Reading a page of a mapped file past its end is a SIGBUS, and so is writing a page of it
# that the file system must find a block for (a hole of a sparse file) on a full disk: the
# process dies, with no exception and no word.  So data.mdb is checked against LMDB's own
# meta before LMDB maps it (_check_data_file), and an environment with writemap ("async")
# has its whole map allocated (posix_fallocate) before LMDB may write there: at open, and
# before the map grows (_Room, _set_map).  lock.mdb, which LMDB maps and writes in every
# mode, is allocated before LMDB opens it.  Where the map cannot be allocated at open,
# the environment goes without writemap: pwrite() then fails with ENOSPC, an exception.
#
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
    checked as _check_data_file says; or a string saying what is wrong with it."""
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


def _check_data_file(path):
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


def _store_full(path, error):
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


def _allocate(path, name, size, *, create=False):
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


def _allocate_lock_file(path):
    """Allocate lock.mdb before LMDB opens (and maps) it: a new one at the size LMDB gives
    it; an existing one's holes, without changing its size, which every process that has
    it open relies on.  (This process has no environment open on the path, so closing
    the descriptor drops no lock of its own.)"""
    try:
        size = os.stat(os.path.join(path, "lock.mdb")).st_size
    except FileNotFoundError:
        _allocate(path, "lock.mdb", _LOCK_SIZE, create=True)
        return
    _allocate(path, "lock.mdb", size or _LOCK_SIZE)     # 0: one LMDB never opened


class _Room:
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


def _set_map(path, env, room, wanted=0):
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
            if not _allocate(path, "data.mdb", size):
                raise StoreFull(f"{path}: data.mdb could not be allocated")
            room.allocated, room.short = size, False
        except StoreFull:
            if wanted:
                raise
            room.short = True                  # readable; no write until it has room
    env.set_mapsize(size)


def _open_lmdb(path, map_size, sync, new):
    """lmdb.open, and with writemap ("async") the whole map allocated before anything
    writes into it; where it cannot be (a full device, a file system without fallocate)
    the environment is opened again without writemap.  Returns (env, its _Room).  A new
    store the device has no room for: StoreFull, and no empty data.mdb left behind."""
    def open_lmdb(writemap):
        try:
            return lmdb.open(path, map_size=map_size, max_dbs=len(_DBS), sync=sync,
                             metasync=sync, writemap=writemap, max_readers=_MAX_READERS)
        except lmdb.Error as e:
            full = _store_full(path, e)
            if full is None:
                raise
            data = os.path.join(path, "data.mdb")
            if new and _data_size(path) == 0 and os.path.exists(data) and \
                    _lmdb_lock(path) == fcntl.F_UNLCK:
                os.unlink(data)             # ours, never written: not an emptied store
            raise full from None

    env = open_lmdb(not sync)
    if sync:
        return env, _Room(False, 0)
    size = env.info()["map_size"]
    try:
        why = None if _allocate(path, "data.mdb", size) else "the file system cannot"
    except StoreFull as e:
        why = str(e)
    if why is None:
        return env, _Room(True, size)
    env.close()
    log.warning("%s: writing without writemap, as its map of %d bytes cannot be "
                "allocated (%s): a full disk must fail writes, not kill the process",
                path, size, why)
    return open_lmdb(False), _Room(False, 0)


# --- the store ------------------------------------------------------------------------------

# py-lmdb allows one Environment per path and process: Stores on the same path share it.
# real path -> [Environment, {name: db}, users, durability, _Room]
_ENVIRONMENTS: dict[str, list] = {}


def _open_environment(path, map_size, durability):
    entry = _ENVIRONMENTS.get(path)
    if entry is None:
        # "sync" is LMDB's own: data pages are flushed before the meta page that makes
        # them current, so a power cut leaves either transaction, never a torn one.
        # "async" adds writemap: commits write into the shared map instead of pwrite()ing
        # each page (1.3 us instead of 7.5 us here).  LMDB warns against mixing processes
        # with and without writemap because msync and fsync may not see each other's
        # pages; Linux has one page cache for both, so sync and async engines may share
        # a store there.  (writemap's msync covers the whole map: slower for "sync".)
        # Before LMDB maps anything: a truncated or emptied data.mdb is refused, lock.mdb
        # allocated, and with writemap the map (see "the data file" above).
        sync = durability == "sync"
        found = _check_data_file(path)
        if found is not None:               # never below the file: see _set_map
            map_size = max(map_size, found[1], -(-found[2] // found[0]) * found[0])
        _allocate_lock_file(path)
        env, room = _open_lmdb(path, map_size, sync, found is None)
        try:
            with env.begin(write=True) as txn:    # one transaction for all of them
                dbs = {n: env.open_db(n.encode(), txn=txn) for n in _DBS}
        except BaseException as e:
            env.close()
            full = _store_full(path, e) if isinstance(e, lmdb.Error) else None
            if full is None:
                raise
            raise full from None
        entry = _ENVIRONMENTS[path] = [env, dbs, 0, durability, room]
    elif entry[3] != durability:
        raise ValueError(f"{path} is already open in this process with durability "
                         f"{entry[3]!r}; close that first to use {durability!r}")
    entry[2] += 1
    return entry[0], entry[1]


def _forget_environments():
    """In a forked child: the parent's environments are not usable here (LMDB forbids
    it); forget them without closing, so the child opens its own."""
    _ENVIRONMENTS.clear()


os.register_at_fork(after_in_child=_forget_environments)


def _close_environment(path):
    entry = _ENVIRONMENTS.get(path)
    if entry is not None:
        entry[2] -= 1
        if entry[2] == 0:
            del _ENVIRONMENTS[path]
            entry[0].close()


class Store:
    """One LMDB environment.  ``durability``: "sync" fsyncs every commit (survives power
    loss); "async" commits without fsync (survives a killed process, not an OS crash)."""

    def __init__(self, path=None, *, durability="sync", map_size=64 << 20):
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        self.path = os.path.realpath(path or default_path())
        self.durability = durability
        os.makedirs(self.path, exist_ok=True)
        self.env, self.db = _open_environment(self.path, map_size, durability)
        self._room = _ENVIRONMENTS[self.path][4]
        self._savepoints = self.db["savepoints"]
        self._open = True
        self._code = {}             # fingerprint -> code object (verified when loaded)
        # What this process knows is pinned, by execution: forgotten when the execution is
        # released or deleted, and beyond PINNED_EXECUTIONS executions (_remember_pins).
        self._pinned = {}           # execution id -> fingerprints known recorded for it
        self._pinned_ids = {}       # execution id -> ids of its code objects known pinned
        self._keep = {}             # id -> [code object behind it, executions using it]
        self._pins_lock = threading.Lock()
        self._writes = 0
        try:
            self.env.reader_check()     # clear reader slots of dead processes
            found = self._read(lambda txn: (txn.get(b"format", db=self.db["meta"]),
                                            txn.get(b"key-check", db=self.db["meta"])))
            if found[0] is not None and found[0] != _U64.pack(FORMAT):
                self._write(self._check_format)          # says which format it is
            # a new store makes its key; an existing one must find the key it was signed with
            self._signer = _codec.Signer(signing.store_key(self.path,
                                                           create=found[0] is None))
            if found != (_U64.pack(FORMAT), self._signer.tag(_KEY_CHECK)):
                self._write(self._check_format)
        except BaseException:
            self.close()
            raise

    def _check_format(self, txn):
        found = txn.get(b"format", db=self.db["meta"])
        if found is not None and found != _U64.pack(FORMAT):
            raise SavepointError(f"{self.path} holds a savepoint-engine store of another "
                                 f"format ({bytes(found).hex()}; this engine reads format "
                                 f"{FORMAT})")
        check = self._signer.tag(_KEY_CHECK)
        if found is None:
            txn.put(b"format", _U64.pack(FORMAT), db=self.db["meta"])
            txn.put(b"key-check", check, db=self.db["meta"])
        elif txn.get(b"key-check", db=self.db["meta"]) != check:
            raise SavepointError(f"{self.path} was signed with another key than this "
                                 f"process has ($ENGINE_SECRET_KEY, $ENGINE_SECRET_KEY_FILE "
                                 f"or {signing.KEY_FILE} beside it): its records cannot be "
                                 f"trusted here")

    # -- signing: every value the store keeps --
    def _seal(self, value):
        return _codec.seal(value, self._signer)

    def _unseal(self, raw, what):
        return _codec.unseal(raw, what, self._signer)

    def close(self):
        if self._open:
            self._open = False
            _close_environment(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transactions --
    def _write(self, work):
        """Run ``work(txn)`` in a write transaction and commit; a full map is grown and
        the whole transaction retried, so nothing is lost.  A full device raises
        StoreFull, and nothing was written."""
        while True:
            if self._room.short:
                self._make_room()
            try:
                with self.env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                self._resize(self.env.info()["map_size"] * 2)
            except lmdb.MapResizedError:          # another process grew it
                self._resize(0)
            except lmdb.Error as e:
                full = _store_full(self.path, e)
                if full is None:
                    raise
                raise full from None

    def _resize(self, size):
        """The map to ``size`` bytes, or (0) as another process grew it: _set_map."""
        _set_map(self.path, self.env, self._room, size)

    def _make_room(self):
        """Before a write, when the map another process grew could not be allocated here
        (writemap): allocate it now, or StoreFull."""
        size = self.env.info()["map_size"]
        if not _allocate(self.path, "data.mdb", size):
            raise StoreFull(f"{self.path}: data.mdb could not be allocated")
        self._room.allocated, self._room.short = size, False

    def _read(self, work):
        while True:
            try:
                with self.env.begin() as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                self._resize(0)

    # -- executions --
    def _get_execution(self, txn, exec_id):
        """The execution's head: the newer of its record and its latest savepoint's.  A
        damaged record never makes it fail: see _damaged_head."""
        raw = txn.get(_key(exec_id), db=self.db["executions"])
        latest = self._latest_savepoint(txn, exec_id)
        try:
            head = None if raw is None else self._unseal_execution(raw, exec_id)
            if latest is not None:
                state = self._unseal_savepoint(latest[1], latest[0], exec_id)[2]
                if head is None:
                    head = {"id": exec_id}
                if state[0] > head.get("version", 0):
                    _codec.apply_state(head, state)
        except CorruptSavepoint:
            return self._damaged_head(exec_id, raw, latest)
        return head

    def _damaged_head(self, exec_id, raw, latest):
        """The head of an execution whose record or newest savepoint is damaged, with
        "damaged": what is damaged (one line, for people).

        Its execution record readable: that record (its own state, the last it wrote
        itself), with last_seq at least the newest savepoint's seq -- so a new savepoint
        never takes a damaged one's place, resuming from the damaged one fails with
        CorruptSavepoint (the execution ends ENDED_ERROR saying so), and a restore to an
        intact savepoint writes a record that stays the head until the execution's next
        savepoint (a record holding last_seq >= the newest seq was written after it).
        Its record damaged (or missing): status ENDED_ERROR, error "CorruptSavepoint:
        ...", flow "" (unknown: the flow, inputs and log are lost) and what the newest
        savepoint says, if it is readable; nothing but delete applies to it."""
        damage = []
        head = None
        if raw is not None:
            try:
                head = self._unseal_execution(raw, exec_id)
            except CorruptSavepoint as e:
                damage.append((str(e), f"execution {exec_id}", "execution record"))
        else:
            damage.append((f"execution {exec_id} has no execution record", "", ""))
        state = None
        if latest is not None:
            try:
                state = self._unseal_savepoint(latest[1], latest[0], exec_id)[2]
            except CorruptSavepoint as e:
                damage.append((str(e), f"savepoint {latest[0]} of execution {exec_id}",
                               f"newest savepoint {latest[0]}"))
        if head is not None:
            if state is not None:
                if state[0] > head.get("version", 0):
                    _codec.apply_state(head, state)
            elif latest is not None:
                head["last_seq"] = max(head.get("last_seq") or 0, latest[0])
        else:
            head = {"id": exec_id, "flow": "", "created_at": None}
            if state is not None:
                _codec.apply_state(head, state)
            elif latest is not None:
                head["last_seq"] = latest[0]
            head.update(status=_ENDED_ERROR, due=None,
                        error=f"CorruptSavepoint: {damage[0][0]}")
        # short, as the execution's own field: "newest savepoint 5 is damaged (...)"
        head["damaged"] = "; ".join(text.replace(long, short, 1) if long else text
                                    for text, long, short in damage)
        return head

    def _unseal_execution(self, raw, exec_id):
        """An execution record; CorruptSavepoint if it is damaged."""
        what = f"execution {exec_id}"
        record = self._unseal(raw, what)
        if type(record) is not dict or not isinstance(record.get("status", ""), str):
            raise CorruptSavepoint(f"{what} is damaged (not an execution record)")
        return record

    def _unseal_savepoint(self, raw, seq, exec_id):
        """[meta, record, state] of a savepoint; CorruptSavepoint if it is damaged."""
        what = f"savepoint {seq} of execution {exec_id}"
        value = self._unseal(raw, what)
        if type(value) is not list or len(value) != 3 or type(value[0]) is not list or \
                not value[0] or type(value[1]) is not bytes or type(value[2]) is not list \
                or len(value[2]) < len(_codec.STATE_FIELDS):
            raise CorruptSavepoint(f"{what} is damaged (not a savepoint)")
        return value

    def _latest_savepoint(self, txn, exec_id):
        """(seq, raw value) of the execution's newest savepoint, or None.  (A key under
        the execution's prefix that is no savepoint key -- damage -- is passed over.)"""
        prefix = _key(exec_id) + b"\0"
        cursor = txn.cursor(db=self.db["savepoints"])
        if cursor.set_range(prefix + b"\xff" * 8):
            if not cursor.prev():
                return None
        elif not cursor.last():
            return None
        while True:
            key = cursor.key()
            if not key.startswith(prefix):
                return None
            if len(key) == len(prefix) + 8:
                return _U64.unpack(key[len(prefix):])[0], cursor.value()
            if not cursor.prev():
                return None

    def _put_execution(self, txn, execution):
        execution["version"] = _commit.version_after(execution)
        exec_id = execution["id"]
        execution.pop("_due_written", None)        # this process's note, not stored
        execution.pop("damaged", None)             # said when read (_damaged_head)
        txn.put(_key(exec_id), self._seal(execution), db=self.db["executions"])
        self._schedule(txn, exec_id, execution.get("due"))

    def _schedule(self, txn, exec_id, due):
        """Keep the run queue in step with the execution's due time (None: not runnable)."""
        key = _key(exec_id)
        old = txn.get(key, db=self.db["due"])
        new = None if due is None else _U64.pack(max(0, int(due * 1_000_000)))
        if old == new:
            return
        if old is not None:
            txn.delete(bytes(old) + key, db=self.db["queue"])
            txn.delete(key, db=self.db["due"])
        if new is not None:
            txn.put(new + key, b"", db=self.db["queue"])
            txn.put(key, new, db=self.db["due"])

    def put_execution(self, execution):
        """Create or replace an execution (a dict with at least "id"); its "due" (a UNIX
        time, or None) puts it on the run queue or takes it off.  Sets its "version"."""
        self._write(lambda txn: self._put_execution(txn, execution))

    def get_execution(self, exec_id):
        return self._read(lambda txn: self._get_execution(txn, exec_id))

    def ids_with_prefix(self, prefix, limit=2):
        """Up to ``limit`` execution ids that start with ``prefix`` (the exact id, if
        there is one, comes first)."""
        start = prefix.encode()

        def scan(txn):
            if txn.get(start, db=self.db["executions"]) is not None:
                found = [prefix]
            else:
                found = []
            cursor = txn.cursor(db=self.db["executions"])
            if cursor.set_range(start):
                for key in cursor.iternext(values=False):
                    if not key.startswith(start) or len(found) >= limit:
                        break
                    if bytes(key) != start:
                        exec_id = _id_of(key)
                        if exec_id is not None:
                            found.append(exec_id)
            return found
        return self._read(scan)

    def update_unless_leased(self, exec_id, change, now=None):
        """In one write transaction: unless a live owner leases the execution, apply
        ``change(head)`` (which may raise: then nothing is written) and store the head.
        Returns ("missing", None), ("leased", head) or ("done", head)."""
        now = time.time() if now is None else now

        def work(txn):
            head = self._get_execution(txn, exec_id)
            if head is None:
                return "missing", None
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.held(now):
                return "leased", head
            change(head)
            self._put_execution(txn, head)
            txn.delete(b"signal:" + _key(exec_id), db=self.db["settings"])
            return "done", head
        return self._write(work)

    def delete_unless_leased(self, exec_id, now=None):
        """delete_execution, unless a live owner leases it: "missing", "leased" or
        "done"."""
        now = time.time() if now is None else now

        def work(txn):
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.held(now):
                return "leased"
            return "done" if self._delete_execution(txn, exec_id) else "missing"
        return self._write(work)

    def executions(self):
        """Every execution's head, in id order; a damaged one marked (_damaged_head).  A
        key that is not an execution id (not UTF-8: damage) is passed over and logged;
        `engine doctor` reports it."""
        def scan(txn):
            ids = []
            for key in txn.cursor(db=self.db["executions"]).iternext(values=False):
                exec_id = _id_of(key)
                if exec_id is None:
                    log.warning("executions: passed over a record whose key is not an "
                                "execution id (%s)", _shown(key))
                else:
                    ids.append(exec_id)
            return [self._get_execution(txn, exec_id) for exec_id in ids]
        return self._read(scan)

    # -- savepoints --
    def commit_savepoint(self, execution, meta, record, codes=(), chunks=None, *,
                         retention="all"):
        """Store a savepoint and the execution's new state in one transaction: never a
        savepoint without its execution, never an execution pointing at a missing
        savepoint.  ``meta`` describes it (kind "implicit"/"explicit", name, ...);
        ``codes`` are the code objects the record refers to, pinned here; ``chunks``
        ({hash: bytes}) the big values cut out of it.  With retention "last", the
        execution's previous implicit savepoint goes.  Returns the savepoint's seq."""
        if retention not in RETENTIONS:
            raise retention_error(retention)
        if self._room.short:
            self._make_room()
        try:
            seq = _commit.try_commit(self.env, self._savepoints, self._pinned_ids,
                                     execution, meta, record, codes, chunks, retention,
                                     self._signer)
        except (lmdb.MapFullError, lmdb.MapResizedError):
            seq = None
        except lmdb.Error as e:                   # a full device: StoreFull
            full = _store_full(self.path, e)
            if full is None:
                raise
            raise full from None
        if seq is not None:
            return seq
        version = _commit.version_after(execution)
        exec_id = execution["id"]
        chunk_list = list(chunks) if chunks else []
        previous = execution.get("last_implicit")
        # encode outside the write transaction: it holds the lock of every process
        sealed, seq, state = _codec.seal_savepoint(execution, meta, record, chunk_list,
                                                   version, self._signer)
        name = meta.get("name")
        # the queue changes only when this commit changes the due time
        due = execution.get("due")
        reschedule = "_due_written" not in execution or execution["_due_written"] != due
        drop = retention == "last" and previous and meta.get("kind") == "implicit"
        known = self._pinned_ids.get(exec_id)
        new_codes = [code for code in codes if known is None or id(code) not in known]
        self._commit_slow(exec_id, _sp_key(exec_id, seq), sealed, seq, name, new_codes,
                          chunks, previous if drop else None,
                          execution.get("last_implicit_chunks"),
                          due if reschedule else _UNCHANGED)
        _codec.apply_state(execution, state)
        execution["_due_written"] = due
        return seq

    def _commit_slow(self, exec_id, sp_key, sealed, seq, name, new_codes, chunks, drop,
                     drop_chunks, due):
        """commit_savepoint when it pins code, stores chunks or a name, drops the previous
        savepoint or moves the execution on the queue."""
        db = self.db

        def work(txn):
            pinned = self._pin(txn, exec_id, new_codes) if new_codes else ()
            if chunks:
                for digest, blob in chunks.items():
                    self._ref_chunk(txn, digest, blob)
            txn.put(sp_key, sealed, db=db["savepoints"])
            if name is not None:
                txn.put(_name_key(exec_id, name), _U64.pack(seq), db=db["names"])
            if drop:
                self._drop_savepoint(txn, exec_id, drop, drop_chunks)
            if due is not _UNCHANGED:
                self._schedule(txn, exec_id, due)
            return pinned

        pinned = self._write(work)
        if new_codes:                             # once committed: a retry redoes it
            self._remember_pins(exec_id, pinned, new_codes)

    def _remember_pins(self, exec_id, pinned, codes):
        """After a commit that pinned ``codes`` for the execution: remember it, so its
        next commits take the one-put path (_commit.try_commit reads _pinned_ids).  The
        execution counted first is forgotten beyond PINNED_EXECUTIONS."""
        with self._pins_lock:
            ids = self._pinned_ids.get(exec_id)
            if ids is None:
                while len(self._pinned_ids) >= PINNED_EXECUTIONS:
                    self._forget_pins_locked(next(iter(self._pinned_ids)))
                ids = self._pinned_ids[exec_id] = set()
            self._pinned.setdefault(exec_id, set()).update(d for d, _ in pinned)
            for code in codes:
                key = id(code)
                if key not in ids:
                    ids.add(key)
                    kept = self._keep.get(key)
                    if kept is None:
                        self._keep[key] = [code, 1]   # keeps the id valid while counted
                    else:
                        kept[1] += 1

    def forget_pins(self, exec_id):
        """Forget what this process knows is pinned for the execution (it was released
        or deleted): its next commit, if any, pins again.  Keeps the caches bounded."""
        with self._pins_lock:
            self._forget_pins_locked(exec_id)

    def _forget_pins_locked(self, exec_id):
        self._pinned.pop(exec_id, None)
        for key in self._pinned_ids.pop(exec_id, ()):
            kept = self._keep.get(key)
            if kept is not None:
                kept[1] -= 1
                if kept[1] <= 0:
                    del self._keep[key]

    def _pin(self, txn, exec_id, codes):
        """Store each code object once, and note that this execution uses it."""
        pinned = []
        known = self._pinned.get(exec_id, ())
        for code in codes:
            digest = _codec.fingerprint(code)
            if digest in known:
                continue
            if txn.get(digest, db=self.db["code"]) is None:
                txn.put(digest, self._seal(_codec.encode_code(code)), db=self.db["code"])
            txn.put(digest + _key(exec_id), b"", db=self.db["code_users"])
            txn.put(_key(exec_id) + b"\0" + digest, b"", db=self.db["exec_codes"])
            self._code.setdefault(digest, code)
            pinned.append((digest, exec_id))
        return pinned

    def _ref_chunk(self, txn, digest, blob):
        count = txn.get(digest, db=self.db["chunk_refs"])
        if count is None:
            txn.put(digest, self._seal(blob), db=self.db["chunks"])
            txn.put(digest, _U64.pack(1), db=self.db["chunk_refs"])
        else:
            txn.put(digest, _U64.pack(_U64.unpack(count)[0] + 1), db=self.db["chunk_refs"])

    def _unref_chunk(self, txn, digest):
        count = txn.get(digest, db=self.db["chunk_refs"])
        if count is None:
            return
        left = _U64.unpack(count)[0] - 1
        if left <= 0:
            txn.delete(digest, db=self.db["chunk_refs"])
            txn.delete(digest, db=self.db["chunks"])
        else:
            txn.put(digest, _U64.pack(left), db=self.db["chunk_refs"])

    def _drop_savepoint(self, txn, exec_id, seq, chunks=None):
        key = _sp_key(exec_id, seq)
        if chunks is None:
            raw = txn.get(key, db=self.db["savepoints"])
            if raw is None:
                return
            try:
                meta = _meta(self._unseal_savepoint(raw, seq, exec_id)[0])
            except CorruptSavepoint as e:           # it goes all the same
                log.warning("%s; dropped (its chunks stay: engine doctor --repair)", e)
                meta = {}
            chunks = meta.get("chunks") or ()
            if meta.get("name") is not None:
                txn.delete(_name_key(exec_id, meta["name"]), db=self.db["names"])
        for digest in chunks:
            self._unref_chunk(txn, digest)
        txn.delete(key, db=self.db["savepoints"])

    def savepoints(self, exec_id):
        """The execution's savepoints' meta dicts, oldest first.  A damaged one is
        {"seq": its seq, "kind": "damaged", "size": its stored bytes, "damaged": what is
        damaged}, its other fields None."""
        prefix = _key(exec_id) + b"\0"

        def scan(txn):
            found = []
            for key, raw in _with_prefix(txn, self.db["savepoints"], prefix):
                if len(key) != len(prefix) + 8:
                    continue                     # no savepoint key (engine doctor says)
                seq = _U64.unpack(key[len(prefix):])[0]
                try:
                    found.append(_meta(self._unseal_savepoint(raw, seq, exec_id)[0]))
                except CorruptSavepoint as e:
                    meta = dict.fromkeys(META_FIELDS)
                    meta.update(seq=seq, kind="damaged", size=len(raw), damaged=str(e))
                    found.append(meta)
            return found
        return self._read(scan)

    def savepoint(self, exec_id, seq):
        """(meta, record) of one savepoint, or None."""
        try:
            with self.env.begin() as txn:
                raw = txn.get(_sp_key(exec_id, seq), db=self._savepoints)
        except lmdb.MapResizedError:
            self._resize(0)
            return self.savepoint(exec_id, seq)
        if raw is None:
            return None
        meta, record, _ = self._unseal(raw, f"savepoint {seq} of execution {exec_id}")
        return _meta(meta), record

    def seq_of(self, exec_id, name):
        """The seq of the execution's savepoint called ``name``, or None."""
        raw = self._read(lambda txn: txn.get(_name_key(exec_id, name), db=self.db["names"]))
        if raw is not None and len(raw) != 8:
            raise CorruptSavepoint(f"the savepoint name {name!r} of execution {exec_id} is "
                                   f"damaged (engine doctor --repair deletes it)")
        return None if raw is None else _U64.unpack(raw)[0]

    def code(self, digest):
        """The pinned code object with this fingerprint (verified), or None."""
        code = self._code.get(digest)
        if code is None:
            blob = self._read(lambda txn: txn.get(digest, db=self.db["code"]))
            if blob is None:
                return None
            data = self._unseal(blob, f"pinned code {digest.hex()}")
            code = self._code.setdefault(digest, _codec.decode_code(data, digest))
        return code

    def codes_for(self, record):
        """{fingerprint: code} for every code a savepoint record needs."""
        out = {}
        for module, qualname, digest in _codec.read_header(record):
            code = self.code(digest)
            if code is None:
                raise CorruptSavepoint(f"savepoint needs code {module}.{qualname} "
                                       f"({digest.hex()}), which the store does not hold")
            out[digest] = code
        return out

    def chunk(self, digest):
        """A chunk's bytes, or None (decode_snapshot checks them against the hash)."""
        raw = self._read(lambda txn: txn.get(digest, db=self.db["chunks"]))
        return None if raw is None else self._unseal(raw, f"chunk {digest.hex()}")

    def delete_execution(self, exec_id):
        """Delete the execution, all its savepoints and names, its queue entry and lease,
        in one transaction; collect code and chunks nothing uses any more."""
        return self._write(lambda txn: self._delete_execution(txn, exec_id))

    def _delete_execution(self, txn, exec_id):
        if txn.get(_key(exec_id), db=self.db["executions"]) is None and \
                self._latest_savepoint(txn, exec_id) is None:
            return False
        prefix = _key(exec_id) + b"\0"
        for key, raw in _with_prefix(txn, self.db["savepoints"], prefix):
            try:
                tail = key[len(prefix):]
                seq = _U64.unpack(tail)[0] if len(tail) == 8 else _shown(tail)
                meta = _meta(self._unseal_savepoint(raw, seq, exec_id)[0])
            except CorruptSavepoint:
                meta = {}             # a damaged savepoint goes all the same
            for digest in meta.get("chunks") or ():
                self._unref_chunk(txn, digest)
            txn.delete(key, db=self.db["savepoints"])
        for key, _ in _with_prefix(txn, self.db["names"], prefix):
            txn.delete(key, db=self.db["names"])
        self._unpin(txn, exec_id)
        self._schedule(txn, exec_id, None)
        txn.delete(_key(exec_id), db=self.db["leases"])
        txn.delete(_key(exec_id), db=self.db["executions"])
        txn.delete(b"signal:" + _key(exec_id), db=self.db["settings"])
        return True

    def _unpin(self, txn, exec_id):
        """Forget this execution's use of code; delete code no execution uses."""
        users, by_exec = self.db["code_users"], self.db["exec_codes"]
        prefix = _key(exec_id) + b"\0"
        self.forget_pins(exec_id)
        for key, _ in _with_prefix(txn, by_exec, prefix):
            digest = key[len(prefix):]
            txn.delete(key, db=by_exec)
            txn.delete(digest + _key(exec_id), db=users)
            cursor = txn.cursor(db=users)
            if not (cursor.set_range(digest) and bytes(cursor.key()).startswith(digest)):
                txn.delete(digest, db=self.db["code"])
                self._code.pop(digest, None)

    # -- run queue and leases --
    def _lease(self, txn, exec_id):
        """The execution's lease, or None; a damaged lease is taken as none (and logged),
        as _recover takes it: it names no owner that could be alive."""
        raw = txn.get(_key(exec_id), db=self.db["leases"])
        if raw is None:
            return None
        try:
            return self._lease_of(raw, f"lease of execution {exec_id}")
        except CorruptSavepoint as e:
            log.warning("%s; taken as no lease", e)
            return None

    def _lease_of(self, raw, what):
        try:
            pid, start, boot, expires, label = self._unseal(raw, what)
        except (TypeError, ValueError):
            raise CorruptSavepoint(f"{what} is damaged (not a lease)") from None
        return Lease(Owner(pid, start, boot, label), expires)

    def _put_lease(self, txn, exec_id, owner, expires):
        txn.put(_key(exec_id), self._seal([owner.pid, owner.start, owner.boot, expires,
                                      owner.label]), db=self.db["leases"])

    def lease(self, exec_id):
        return self._read(lambda txn: self._lease(txn, exec_id))

    def claim(self, owner, *, lease_seconds=30.0, now=None):
        """Atomically take the earliest runnable execution that is due and not leased to
        a live owner; lease it to ``owner`` and return its id, or None.  Executions whose
        owner died (or whose lease ran out) become runnable again first.  A queue entry
        that is not in step with the due index (or whose execution is gone) is deleted
        on the way, and logged: it is never handed out."""
        now = time.time() if now is None else now
        self._writes += 1
        if self._writes % 64 == 1:
            self.env.reader_check()

        def work(txn):
            self._recover(txn, now)
            cursor = txn.cursor(db=self.db["queue"])
            limit = _U64.pack(int(now * 1_000_000))
            orphans = []
            taken = None
            for key in cursor.iternext(values=False):
                key = bytes(key)
                if key[:8] > limit:
                    break
                problem = self._queue_problem(txn, key)
                if problem is not None:
                    why, fix = problem
                    if fix == "delete":
                        orphans.append((key, why))       # deleted below, past the cursor
                        continue
                    self._repair_queue_entry(txn, key, fix)      # the due index, back
                    log.warning("run queue: %s; added it back (the execution is due "
                                "then)", why)
                exec_id = key[8:].decode()
                lease = self._lease(txn, exec_id)
                if lease is not None and lease.owner != owner and lease.held(now):
                    continue
                taken = exec_id
                break
            for key, why in orphans:
                self._repair_queue_entry(txn, key, "delete")
                log.warning("run queue: deleted the entry of %s: %s", _shown(key[8:]), why)
            if taken is not None:
                self._put_lease(txn, taken, owner, now + lease_seconds)
                self._schedule(txn, taken, None)     # off the queue while it runs
            return taken
        return self._write(work)

    def _queue_problem(self, txn, key):
        """None if a queue entry (due u64 + id) is in step with the due index and its
        execution; else (why, repair): repair "index" when only the due-index entry is
        missing and the execution is due at that very time (its head says so), else
        "delete"."""
        if len(key) <= 8:
            return "it is no queue key", "delete"
        exec_id = _id_of(key[8:])
        if exec_id is None:
            return "its execution id is not UTF-8 text", "delete"
        if txn.get(_key(exec_id), db=self.db["executions"]) is None:
            return f"execution {exec_id} does not exist", "delete"
        due = txn.get(_key(exec_id), db=self.db["due"])
        if due is not None:
            if due == key[:8]:
                return None
            return f"the due index puts execution {exec_id} at another time", "delete"
        head_due = self._get_execution(txn, exec_id).get("due")
        if head_due is not None and _U64.pack(max(0, int(head_due * 1_000_000))) == key[:8]:
            return f"execution {exec_id} is due then, but its due-index entry is " \
                   f"missing", "index"
        return f"execution {exec_id} has no due-index entry (it is not due then)", "delete"

    def _repair_queue_entry(self, txn, key, how):
        """Repair an out-of-step queue entry as _queue_problem says: "index" adds the
        due-index entry; "delete" deletes the entry (and the due entry of an execution
        that is gone)."""
        exec_id = _id_of(key[8:]) if len(key) > 8 else None
        if how == "index":
            txn.put(_key(exec_id), key[:8], db=self.db["due"])
            return
        txn.delete(key, db=self.db["queue"])
        if exec_id is not None and \
                txn.get(_key(exec_id), db=self.db["executions"]) is None and \
                txn.get(_key(exec_id), db=self.db["due"]) == key[:8]:
            txn.delete(_key(exec_id), db=self.db["due"])

    def claim_one(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        """Lease this execution to ``owner`` unless a live owner holds it; True if taken."""
        now = time.time() if now is None else now

        def work(txn):
            if txn.get(_key(exec_id), db=self.db["executions"]) is None:
                return False
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.owner != owner and lease.held(now):
                return False
            self._put_lease(txn, exec_id, owner, now + lease_seconds)
            self._schedule(txn, exec_id, None)
            return True
        return self._write(work)

    def _recover(self, txn, now):
        """Leases of dead owners or past their expiry: put the execution back on the
        queue (due now) so it resumes from its last savepoint."""
        stale, bad = [], []
        for key, raw in txn.cursor(db=self.db["leases"]):
            exec_id = _id_of(key)
            if exec_id is None:                  # damage: no execution can hold it
                bad.append(bytes(key))
                continue
            try:
                lease = self._lease_of(raw, "lease")
            except CorruptSavepoint:
                stale.append(exec_id)
                continue
            if not lease.held(now):
                stale.append(exec_id)
        for key in bad:
            log.warning("leases: deleted a lease whose key is not an execution id (%s)",
                        _shown(key))
            txn.delete(key, db=self.db["leases"])
        for exec_id in stale:
            txn.delete(_key(exec_id), db=self.db["leases"])
            if txn.get(_key(exec_id), db=self.db["due"]) is None and \
                    txn.get(_key(exec_id), db=self.db["executions"]) is not None:
                self._schedule(txn, exec_id, now)
        return stale

    def renew(self, exec_id, owner, *, lease_seconds=30.0, now=None):
        """Extend ``owner``'s lease; False if it no longer holds it."""
        now = time.time() if now is None else now

        def work(txn):
            lease = self._lease(txn, exec_id)
            if lease is None or lease.owner != owner:
                return False
            self._put_lease(txn, exec_id, owner, now + lease_seconds)
            return True
        return self._write(work)

    def release(self, exec_id, owner, execution=None):
        """Give up ``owner``'s lease, writing the execution's new state with it if given.
        This process forgets what it knew was pinned for it (forget_pins)."""
        def work(txn):
            lease = self._lease(txn, exec_id)
            if lease is not None and lease.owner == owner:
                txn.delete(_key(exec_id), db=self.db["leases"])
            if execution is not None:
                self._put_execution(txn, execution)
        self._write(work)
        self.forget_pins(exec_id)

    # -- settings --
    def get_setting(self, name, default=None):
        raw = self._read(lambda txn: txn.get(name.encode(), db=self.db["settings"]))
        return default if raw is None else self._unseal(raw, f"setting {name!r}")

    def set_setting(self, name, value):
        sealed = self._seal(value)
        self._write(lambda txn: txn.put(name.encode(), sealed, db=self.db["settings"]))

    def settings(self, prefix=""):
        """{name: value} of the settings whose names start with ``prefix``; a damaged
        one (or a name that is not UTF-8) is left out and logged (engine doctor)."""
        start = prefix.encode()

        def scan(txn):
            found = {}
            for key, raw in _with_prefix(txn, self.db["settings"], start):
                try:
                    name = key.decode()
                    found[name] = self._unseal(raw, f"setting {name!r}")
                except UnicodeDecodeError:
                    log.warning("settings: left out one whose name is not UTF-8 (%s)",
                                _shown(key))
                except CorruptSavepoint as e:
                    log.warning("settings: left out: %s", e)
            return found
        return self._read(scan)

    def delete_setting(self, name):
        self._write(lambda txn: txn.delete(name.encode(), db=self.db["settings"]))

    def queue_depth(self, now=None):
        """How many executions are due and waiting for a worker."""
        limit = _U64.pack(int((time.time() if now is None else now) * 1_000_000))

        def count(txn):
            n = 0
            for key in txn.cursor(db=self.db["queue"]).iternext(values=False):
                if bytes(key[:8]) > limit:
                    break
                n += 1
            return n
        return self._read(count)

    def size(self):
        """Bytes in use by the environment's pages."""
        info, stat = self.env.info(), self.env.stat()
        return (info["last_pgno"] + 1) * stat["psize"]

    def check(self, repair=False):
        """Verify every record and index (engine.storecheck says what and how);
        ``repair``: also fix what can be fixed without losing anything, in one write
        transaction.  Returns {"checked": {database: entries}, "problems": [{"db",
        "key", "execution", "problem", "repair", "repaired"}, ...]}."""
        from engine import storecheck
        return storecheck.check(self, repair)
