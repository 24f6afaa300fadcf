"""Reading a savepoint without running it (Engine.inspect, `engine inspect`): its frames
and their locals, decoded without running any flow code, building any instance or
importing any module."""
import types

from engine import _codec, _frames
from engine.types import FrameView


def frame_views(store, record, trust):
    """Every frame of the savepoint ``record``, outermost first; ``this`` and
    ``system`` show as stand-ins."""
    stand_ins = {name: _codec.Unbuilt("global", name) for name in ("this", "system")}
    frames, _ = _codec.decode_savepoint(record, store.codes_for(record), externals=stand_ins,
                                        trust=trust, chunks=store.chunk, inspect=True)
    views = []
    for frame in frames:
        code = frame.code
        shown, unbound = {}, []
        for i, value in enumerate(frame.locals):
            name = code._varname_from_oparg(i)  # type: ignore[attr-defined]
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
