"""Reading a savepoint without running it (Engine.inspect, Engine.diff, `engine inspect`,
`engine diff`): its frames and their locals, decoded without running any flow code,
building any instance or importing any module; and what changed between two of them."""
import math
import types

from engine import _codec, _frames
from engine.types import Change, FrameView

# what stands in, when inspecting, for the objects a running flow has as externals
STAND_INS = {name: _codec.Unbuilt("global", name) for name in ("this", "system")}


def decoded_frames(store, record, trust):
    """The savepoint ``record``'s frames (engine._frames.Frame), outermost first, decoded
    for showing: ``this`` and ``system`` are stand-ins, and so is whatever inspection
    does not build (engine._codec.Unbuilt)."""
    frames, _ = _codec.decode_savepoint(record, store.codes_for(record), externals=STAND_INS,
                                        trust=trust, chunks=store.chunk, inspect=True)
    return frames


def slot_names(frame):
    """The name of each of a decoded frame's local slots (locals, cells, free variables),
    in Frame.locals order."""
    code = frame.code
    return [code._varname_from_oparg(i)  # type: ignore[attr-defined]
            for i in range(len(frame.locals))]


def frame_views(store, record, trust):
    """Every frame of the savepoint ``record``, outermost first; ``this`` and
    ``system`` show as stand-ins."""
    views = []
    for frame in decoded_frames(store, record, trust):
        code = frame.code
        shown, unbound = {}, []
        for name, value in zip(slot_names(frame), frame.locals):
            if type(value) is types.CellType:
                try:
                    value = value.cell_contents
                except ValueError:
                    value = _frames.EMPTY
            if value is _frames.EMPTY:
                unbound.append(name)
            else:
                shown[name] = value
        views.append(FrameView(function=code.co_qualname, module=frame.func.__module__,
                               file=code.co_filename, line=frame.line, locals=shown,
                               unbound=unbound))
    return views


# --- what changed between two savepoints ------------------------------------------------------

def changes(before, after):
    """What the flow's frames did from the FrameViews ``before`` to ``after`` (both
    outermost first): frames are the same frame while both chains run the same function
    at the same depth; in those, each local that changed, was added (bound) or removed
    (unbound); below the first difference, frames left and frames entered."""
    out = []
    common = 0
    for old, new in zip(before, after):
        if (old.module, old.function) != (new.module, new.function):
            break
        out.extend(_local_changes(old, new, common))
        common += 1
    out.extend(Change(frame.function, None, frame.locals, None, "left", depth)
               for depth, frame in enumerate(before[common:], common))
    out.extend(Change(frame.function, None, None, frame.locals, "entered", depth)
               for depth, frame in enumerate(after[common:], common))
    return out


def _local_changes(old, new, depth):
    found = []
    for name in [*old.locals, *(n for n in new.locals if n not in old.locals)]:
        if name not in new.locals:
            found.append(Change(old.function, name, old.locals[name], None, "removed", depth))
        elif name not in old.locals:
            found.append(Change(new.function, name, None, new.locals[name], "added", depth))
        elif not same_value(old.locals[name], new.locals[name]):
            found.append(Change(new.function, name, old.locals[name], new.locals[name],
                                "changed", depth))
    return found


def same_value(a, b, _pairs=None):
    """Whether two values decoded from two savepoints are the same: equal containers of
    equal items, stand-ins of the same class and state, exceptions of the same type and
    arguments, NaN the same as NaN; without calling any flow code's __eq__ on a
    stand-in, and with cycles compared once."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (str, bytes, int, complex)) or a is None:
        return a == b
    pairs = set() if _pairs is None else _pairs
    if (id(a), id(b)) in pairs:
        return True                          # a cycle: equal so far
    pairs.add((id(a), id(b)))
    if isinstance(a, _codec.Unbuilt):
        return a.kind == b.kind and a.name == b.name and same_value(a.state, b.state, pairs)
    if isinstance(a, BaseException):
        return same_value(a.args, b.args, pairs)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y, pairs) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(v, b[k], pairs) for k, v in a.items())
    try:
        return bool(a == b)
    except Exception:                        # a comparison that cannot be made: changed
        return False
