"""The engine's settings, in one place: each Engine keyword, its ENGINE_* environment
variable, its default and its validation.  Engine, the `engine` command and the worker
processes all resolve settings here: an explicit value wins, then the environment, then
the default; an invalid value raises ValueError naming the setting and where it came from.
"""
import math
import os
import re

DURABILITIES = ("sync", "async")
RETENTIONS = ("all", "last")


def _choice(options):
    def parse(value):
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text
    return parse


def _seconds(minimum, inclusive):
    def parse(value):
        if isinstance(value, bool):
            raise ValueError("must be a number of seconds")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number of seconds") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number of seconds")
        if number < minimum or (number == minimum and not inclusive):
            raise ValueError(f"must be {'>=' if inclusive else '>'} {minimum:g}")
        return number
    return parse


def _count(value):
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None
    if number != value and not isinstance(value, str):
        raise ValueError("must be a whole number")
    if number < 1:
        raise ValueError("must be >= 1")
    return number


def _path(value):
    try:
        text = os.fspath(value)
    except TypeError:
        raise ValueError("must be a directory or a postgresql:// URL") from None
    if not text:
        raise ValueError("must not be empty")
    return text


# name -> (environment variable, default, parser)
SETTINGS = {
    "path": ("ENGINE_PATH", ".engine", _path),
    "durability": ("ENGINE_DURABILITY", "sync", _choice(DURABILITIES)),
    "savepoint_retention": ("ENGINE_SAVEPOINT_RETENTION", "all", _choice(RETENTIONS)),
    "sleep_max_seconds": ("ENGINE_SLEEP_MAX_SECONDS", 60.0, _seconds(0, True)),
    "lease_seconds": ("ENGINE_LEASE_SECONDS", 30.0, _seconds(0, False)),
    "concurrency": ("ENGINE_CONCURRENCY", 32, _count),
}


def resolve(name, explicit=None, source=None):
    """(value, source) of one setting: ``explicit`` if not None (described by ``source``,
    default "argument"), else its environment variable if set and not empty, else the
    default."""
    variable, default, parse = SETTINGS[name]
    if explicit is not None:
        where, raw = source or "argument", explicit
    elif os.environ.get(variable):
        where, raw = f"${variable}", os.environ[variable]
    else:
        return default, "default"
    try:
        return parse(raw), where
    except ValueError as e:
        raise ValueError(f"{name} {e}, not {raw!r} (from {where})") from None


def value(name, explicit=None):
    """The value of one setting (see resolve)."""
    return resolve(name, explicit)[0]


HOST_ID_VARIABLE = "ENGINE_HOST_ID"
HOST_ID_MAX = 36            # what an LMDB lease key holds (a boot id's length)
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def host_id():
    """$ENGINE_HOST_ID: the name this host's processes give themselves in the leases they
    hold (engine.store.leases), instead of this machine's boot id; None when unset.
    Processes that present the same host id must see each other's pids: one per machine,
    or per container.  ValueError for what could not name a host."""
    raw = os.environ.get(HOST_ID_VARIABLE)
    if not raw:
        return None
    if len(raw) > HOST_ID_MAX or not _HOST_ID.fullmatch(raw):
        raise ValueError(f"{HOST_ID_VARIABLE} must be 1 to {HOST_ID_MAX} letters, digits, "
                         f"'.', '_', ':' or '-', starting with a letter or digit (it names "
                         f"this host in the leases its processes hold), not {raw!r}")
    return raw


def default_path():
    """$ENGINE_PATH, else ./.engine."""
    return value("path")
