"""A savepoint's frames as the page shows them: every frame outermost first, the source
lines around the call with its line marked, and each local's name, type and repr --
short, and longer (bounded) for the page to expand -- with what changed since the
savepoint before (Engine.diff) marked, and what an edit box starts from: the local's
value as JSON when JSON holds it exactly, and the set_locals name that reaches it.

It starts from Engine.inspect, which decodes the savepoint without running any flow
code, building any instance or importing any module; this module adds only what the
page needs besides (engine.shapes.frame_dict is the API's shape).  The source is read as
text from the frame's file, as it is on this machine now -- never imported.
"""
import dataclasses
import json
import linecache
import math
import os
import reprlib

from engine.shapes import short, type_shown

CONTEXT_LINES = 4                 # source lines shown before and after the call
LONG_REPR_CHARS = 20_000          # what an expanded value shows at most
EDIT_JSON_CHARS = 2_000           # an edit box starts from a value's JSON up to this long

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
    change: str | None = None     # "changed" or "added" since the savepoint before
    json: str = ""                # what its edit box starts from ("": JSON cannot hold it)


@dataclasses.dataclass
class FrameShown:
    function: str
    module: str
    file: str
    line: int | None
    source: list[SourceLine]      # empty when the file cannot be read here
    locals: list[LocalShown]
    entered: bool = False         # not there at the savepoint before
    edit_prefix: str | None = None   # its locals' set_locals names start so; None: none


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


def exact_json(value):
    """The value as JSON if JSON gives it back exactly (no tuple turned list, no
    stand-in), not longer than EDIT_JSON_CHARS; else ""."""
    def exact(v, depth=0):
        if depth > 50:
            return False
        if v is None or type(v) in (bool, int, str):
            return True
        if type(v) is float:
            return math.isfinite(v)
        if type(v) is list:
            return all(exact(x, depth + 1) for x in v)
        if type(v) is dict:
            return all(type(k) is str and exact(x, depth + 1) for k, x in v.items())
        return False
    if not exact(value):
        return ""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= EDIT_JSON_CHARS else ""


def local_shown(name, value, change=None):
    brief = short.repr(value)
    return LocalShown(name, type_shown(value), brief, long_repr(value), change=change,
                      json=exact_json(value))


def edit_prefixes(frames):
    """For each frame, how set_locals names its locals: "" for the innermost frame,
    "module.function." for the innermost frame of another function, None for a frame
    a deeper one of the same function hides (set_locals cannot reach it)."""
    prefixes = []
    for depth, f in enumerate(frames):
        deeper = {(g.module, g.function) for g in frames[depth + 1:]}
        prefixes.append("" if depth == len(frames) - 1 else
                        None if (f.module, f.function) in deeper else
                        f"{f.module}.{f.function}.")
    return prefixes


def frames_shown(frames, changes=None):
    """The page's view of Engine.inspect's frames (outermost first, as given), marked
    with ``changes`` (Engine.diff from the savepoint before to this one; None: not
    known)."""
    marks = {(c.depth, c.name): c.kind for c in changes or () if c.name is not None}
    entered = {c.depth for c in changes or () if c.kind == "entered"}
    return [FrameShown(f.function, f.module, f.file, f.line, source_around(f.file, f.line),
                       [local_shown(n, v, marks.get((depth, n)))
                        for n, v in f.locals.items()] +
                       [LocalShown(n, "-", "<unbound>", "<unbound>", False)
                        for n in f.unbound],
                       entered=depth in entered, edit_prefix=prefix)
            for depth, (f, prefix) in enumerate(zip(frames, edit_prefixes(frames)))]

