"""Changing a savepoint's locals before an execution goes on from it (``set_locals`` of
Engine.restore and Engine.fork): which frame and slot each name means, and the edited
savepoint, kept as a new explicit savepoint named "edit of <seq>" -- the original stays
as it was.

Names: ``"name"`` is a local (or cell, or free variable) of the innermost flow frame;
``"function.name"`` one of the innermost frame running that function, named by its
qualified name (``"helper"``, ``"Report.build"``, ``"outer.<locals>.inner"``), by a
dotted tail of it (``"build"``), or with its module (``"flows.helper"``) -- the most
exact of these that names something must name one function only.

Identity: setting a name does what an assignment in that frame would.  A plain local is
rebound: another local (or object) that held the same old value keeps it.  A variable
closures share is a cell: the value goes into the cell, so every closure holding it sees
the new value after the resume.  The values given are stored as copies, all together:
one object given for two names stays one object (``{"a": x, "b": x}`` leaves ``a is b``).

The record is rewritten by the codec (engine._codec.rewrite_locals) without decoding
any of its values: nothing is built, imported or run, so this works where the flow's
module cannot be imported (the Savepoints page's process), and every value not edited
keeps its exact encoding.
"""
import dataclasses
import time
from typing import Any

from engine import _codec
from engine.errors import SavepointError
from engine.inspect import STAND_INS, decoded_frames, slot_names


@dataclasses.dataclass
class EditedSavepoint:
    """What commit_savepoint takes for the edited savepoint."""
    meta: dict[str, Any]
    record: bytes
    codes: list[Any]
    chunks: dict[bytes, bytes]


def edit_name(seq):
    """The name of the savepoint that holds an edit of savepoint ``seq``."""
    return f"edit of {seq}"


def edited_savepoint(store, execution_id, seq, set_locals, trust):
    """The savepoint ``seq`` of the execution with ``set_locals`` applied, not stored
    yet.  ValueError naming the problem: a name that is not a local of its frame, a
    function that has no frame there or names more than one, a value that cannot be
    saved."""
    if not isinstance(set_locals, dict) or not set_locals:
        raise ValueError(f"set_locals must be a dict of {{name: value}} naming at least "
                         f"one local, not {set_locals!r}")
    meta, record = store.savepoint(execution_id, seq)
    frames = decoded_frames(store, record, trust)
    edits = targets(frames, set_locals, seq)
    cells = [(index, slot) for index, slot in edits
             if _is_cell(frames[index].code, slot_names(frames[index])[slot])]
    for key, value in set_locals.items():
        try:
            _codec.encode_value(value, trust=trust)
        except SavepointError as e:
            raise ValueError(f"set_locals[{key!r}]: {e}") from None
    chunks = {}
    rewritten = _codec.rewrite_locals(record, edits, cells=cells, trust=trust,
                                      chunks=store.chunk, new_chunks=chunks)
    codes = store.codes_for(rewritten)
    # what a worker will decode: refuse here, saving nothing, if it would not
    _codec.decode_savepoint(rewritten, codes, externals=STAND_INS, trust=trust,
                            chunks=chunks, inspect=True)
    new_meta = {"kind": "explicit", "name": edit_name(seq), "created_at": time.time(),
                "line": meta["line"], "action": meta["action"], "command": meta["command"]}
    return EditedSavepoint(new_meta, rewritten, list(codes.values()), chunks)


def _is_cell(code, name):
    """Whether the variable ``name`` of ``code`` lives in a cell (closures share it)."""
    return name in code.co_cellvars or name in code.co_freevars


def targets(frames, set_locals, seq):
    """{(frame index, slot index): value} for set_locals' names in ``frames`` (outermost
    first)."""
    found, named = {}, {}
    for key, value in set_locals.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise ValueError(f"set_locals: {key!r} is not a name: give 'name' or "
                             f"'function.name'")
        function, dot, name = key.rpartition(".")
        index = frame_of(frames, function, seq) if dot else len(frames) - 1
        names = slot_names(frames[index])
        if name not in names:
            raise ValueError(f"set_locals[{key!r}]: {name!r} is not a local of "
                             f"{frames[index].code.co_qualname} in savepoint {seq} (its "
                             f"locals: {', '.join(names) or 'none'})")
        target = (index, names.index(name))
        if target in named:
            raise ValueError(f"set_locals names one local twice: {named[target]!r} and "
                             f"{key!r}")
        named[target] = key
        found[target] = value
    return found


def frame_of(frames, function, seq):
    """The index of the innermost frame running ``function`` (see the module docstring
    for how it may be named)."""
    def qualified(frame):
        return f"{frame.func.__module__}.{frame.code.co_qualname}"
    tiers = (lambda f: qualified(f) == function,
             lambda f: f.code.co_qualname == function,
             lambda f: f.code.co_qualname.endswith("." + function))
    for matches in tiers:
        hits = [i for i, frame in enumerate(frames) if matches(frame)]
        functions = sorted({qualified(frames[i]) for i in hits})
        if len(functions) > 1:
            raise ValueError(f"set_locals: function {function!r} is ambiguous in savepoint "
                             f"{seq}: it names {', '.join(functions)}; name one of them "
                             f"in full")
        if hits:
            return hits[-1]
    raise ValueError(f"set_locals: savepoint {seq} has no frame of a function "
                     f"{function!r} (its frames, outermost first: "
                     f"{', '.join(f.code.co_qualname for f in frames)})")
