"""Who holds an execution: a process named by pid, start time and boot id (Owner), and
its lease on the execution until a time (Lease).  A pid alone is not enough: after the
owner dies another process may get its pid, and must not be taken for it.  (Read from
/proc; without it every owner looks alive, and a lease holds until it runs out.)"""
import os


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


BOOT_ID = _boot_id()


def start_time(pid):
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


_THIS_PROCESS = [None, None]     # [pid, start time] of this process, read once per pid


def _this_process_start(pid):
    if _THIS_PROCESS[0] != pid:       # first call, or a forked child
        _THIS_PROCESS[:] = [pid, start_time(pid)]
    return _THIS_PROCESS[1]


class Owner:
    """A process that holds leases: pid, start time and boot id, so that a pid reused by
    another process after the owner died is not mistaken for the owner."""
    __slots__ = ("pid", "start", "boot", "label")

    def __init__(self, pid, start, boot, label=""):
        self.pid, self.start, self.boot, self.label = pid, start, boot, label

    @classmethod
    def current(cls, label=""):
        pid = os.getpid()
        return cls(pid, start_time(pid), BOOT_ID, label)

    def alive(self):
        """Whether the owner still runs (on this machine, since the same boot).  This
        process itself is known without reading /proc: it holds most leases it meets."""
        if self.boot != BOOT_ID:
            return False
        pid = os.getpid()
        if self.pid == pid:
            return self.start == _this_process_start(pid)
        return start_time(self.pid) == self.start

    def __eq__(self, other):
        return isinstance(other, Owner) and (self.pid, self.start, self.boot) == (
            other.pid, other.start, other.boot)

    def __hash__(self):
        return hash((self.pid, self.start, self.boot))

    def __repr__(self):
        return f"Owner(pid={self.pid}, start={self.start}, label={self.label!r})"


class Lease:
    """``owner`` holds the execution until ``expires`` (a UNIX time), or until it dies."""
    __slots__ = ("owner", "expires")

    def __init__(self, owner, expires):
        self.owner, self.expires = owner, expires

    def held(self, now):
        """Held: the owner is alive and the lease has not run out."""
        return self.expires > now and self.owner.alive()

    def __repr__(self):
        return f"Lease({self.owner!r}, expires={self.expires})"
