"""A savepoint's frames as the page shows them: every frame outermost first, the source
lines around the call with its line marked, and each local's name, type and repr --
short, and longer (bounded) for the page to expand.

It starts from Engine.inspect, which decodes the savepoint without running any flow
code, building any instance or importing any module; this module adds only what the
page needs besides (engine.shapes.frame_dict is the API's shape).  The source is read as
text from the frame's file, as it is on this machine now -- never imported.
"""
import dataclasses
import linecache
import os
import reprlib

from engine.shapes import short, type_shown

CONTEXT_LINES = 4                 # source lines shown before and after the call
LONG_REPR_CHARS = 20_000          # what an expanded value shows at most

_long = reprlib.Repr()            # the expanded repr: far more, still bounded
_long.maxstring = _long.maxother = LONG_REPR_CHARS
_long.maxlist = _long.maxtuple = _long.maxdict = _long.maxset = _long.maxfrozenset = \
    _long.maxdeque = _long.maxarray = 500
_long.maxlevel = 8


@dataclasses.dataclass
class SourceLine:
    number: int
    text: str
    current: bool                 # the line of the call


@dataclasses.dataclass
class LocalShown:
    name: str
    type: str
    short: str
    long: str                     # == short when there is nothing more to show
    bound: bool = True


@dataclasses.dataclass
class FrameShown:
    function: str
    module: str
    file: str
    line: int | None
    source: list[SourceLine]      # empty when the file cannot be read here
    locals: list[LocalShown]


def long_repr(value):
    text = _long.repr(value)
    return text if len(text) <= LONG_REPR_CHARS else text[:LONG_REPR_CHARS] + "..."


def source_around(file, line, context=CONTEXT_LINES):
    """The lines of ``file`` around ``line`` as it reads now; [] unless it is a Python
    source file that exists here."""
    if not line or not file.endswith(".py") or not os.path.isfile(file):
        return []
    linecache.checkcache(file)          # a file edited since it was read last
    lines = linecache.getlines(file)
    first, last = max(1, line - context), min(len(lines), line + context)
    return [SourceLine(n, lines[n - 1].rstrip("\n"), n == line)
            for n in range(first, last + 1)]


def local_shown(name, value):
    brief = short.repr(value)
    return LocalShown(name, type_shown(value), brief, long_repr(value))


def frames_shown(frames):
    """The page's view of Engine.inspect's frames (outermost first, as given)."""
    return [FrameShown(f.function, f.module, f.file, f.line, source_around(f.file, f.line),
                       [local_shown(n, v) for n, v in f.locals.items()] +
                       [LocalShown(n, "-", "<unbound>", "<unbound>", False)
                        for n in f.unbound])
            for f in frames]
