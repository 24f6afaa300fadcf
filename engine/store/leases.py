"""Who holds an execution: a process named by pid, start time and host (Owner), and its
lease on the execution until a time (Lease).  A pid alone is not enough: after the owner
dies another process may get its pid, and must not be taken for it.  (Read from /proc;
without it every owner looks alive, and a lease holds until it runs out.)

The host is what decides whether an owner's pid can be looked up here: this machine's
boot id -- or, in a container with a pid namespace of its own, the boot id and that
namespace together (containers on one machine share the kernel's boot id, not their
pids) -- unless $ENGINE_HOST_ID names the host (engine.config.host_id)."""
import hashlib
import os
import uuid

from engine import config

_INITIAL_PID_NAMESPACE = "pid:[4026531836]"     # the kernel's own (PROC_PID_INIT_INO)


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _pid_namespace():
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return _INITIAL_PID_NAMESPACE


def machine_host(boot_id, pid_namespace):
    """This machine's host id without $ENGINE_HOST_ID: its boot id, made unique per pid
    namespace (a UUID of both) when the process has one of its own."""
    if pid_namespace == _INITIAL_PID_NAMESPACE or not boot_id:
        return boot_id
    digest = hashlib.blake2b(f"{boot_id} {pid_namespace}".encode(), digest_size=16)
    return str(uuid.UUID(bytes=digest.digest()))


MACHINE_HOST = machine_host(_boot_id(), _pid_namespace())
_HOST = [None, None]        # [$ENGINE_HOST_ID as last read, the host id it gave]


def this_host():
    """The host id of this process's owners: $ENGINE_HOST_ID, else MACHINE_HOST.
    ValueError if $ENGINE_HOST_ID is not a host id (engine.config.host_id)."""
    raw = os.environ.get(config.HOST_ID_VARIABLE)
    if _HOST[0] != raw or _HOST[1] is None:
        _HOST[:] = [raw, config.host_id() or MACHINE_HOST]
    return _HOST[1]


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
    """A process that holds leases: pid, start time and host (see this_host), so that a
    pid reused by another process after the owner died is not mistaken for the owner."""
    __slots__ = ("pid", "start", "host", "label")

    def __init__(self, pid, start, host, label=""):
        self.pid, self.start, self.host, self.label = pid, start, host, label

    @classmethod
    def current(cls, label=""):
        pid = os.getpid()
        return cls(pid, start_time(pid), this_host(), label)

    def here(self):
        """Whether the owner runs on this host: its pid can be looked up here."""
        return self.host == this_host()

    def alive(self):
        """Whether the owner still runs on this host (an owner on another host -- or
        before this machine's last boot -- is not).  This process itself is known
        without reading /proc: it holds most leases it meets."""
        if not self.here():
            return False
        pid = os.getpid()
        if self.pid == pid:
            return self.start == _this_process_start(pid)
        return start_time(self.pid) == self.start

    def __eq__(self, other):
        return isinstance(other, Owner) and (self.pid, self.start, self.host) == (
            other.pid, other.start, other.host)

    def __hash__(self):
        return hash((self.pid, self.start, self.host))

    def __repr__(self):
        return (f"Owner(pid={self.pid}, start={self.start}, host={self.host!r}, "
                f"label={self.label!r})")


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
