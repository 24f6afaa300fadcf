"""What executions, savepoints, frames and changes look like as plain data: the dicts the
`engine` command prints with --json and the page's API (/api/, engine.ui) answers with --
one shape for both -- and the bounded repr and type name inspection shows a value by."""
import reprlib

from engine._codec import Unbuilt


def iso(moment):
    return moment.isoformat() if moment else None


def execution_dict(ex):
    return {"id": ex.id, "flow": ex.flow, "status": str(ex.status), "inputs": ex.inputs,
            "output": ex.output, "outputs": ex.outputs, "error": ex.error,
            "created_at": iso(ex.created_at), "updated_at": iso(ex.updated_at),
            "restore_count": ex.restore_count, "name": ex.name, "parent": ex.parent,
            "log": [[iso(at), text] for at, text in ex.log], "damaged": ex.damaged,
            "receiving": ex.receiving}


def savepoint_dict(sp):
    return {"id": sp.id, "seq": sp.seq, "created_at": iso(sp.created_at),
            "line": sp.line, "action": sp.action, "command": sp.command, "kind": sp.kind,
            "name": sp.name, "size": sp.size, "damaged": sp.damaged}


short = reprlib.Repr()             # a value as inspect shows it: bounded
short.maxstring = short.maxother = 60


def type_shown(value):
    """The type inspect shows: a stand-in's class name, else the value's type."""
    if isinstance(value, Unbuilt):
        return value.name if value.kind == "instance" else value.kind
    return type(value).__qualname__


def frame_dict(frame):
    """A savepoint's frame (engine.FrameView) as `engine inspect --json` shows it."""
    rows = [{"name": name, "type": type_shown(value), "value": short.repr(value)}
            for name, value in frame.locals.items()]
    rows += [{"name": name, "type": "-", "value": "<unbound>"} for name in frame.unbound]
    return {"function": frame.function, "file": frame.file, "line": frame.line,
            "locals": rows}


def change_dict(change):
    """What changed between two savepoints (engine.Change) as `engine diff --json` shows
    it: the values as inspect shows them (a frame entered or left: its locals), None
    where there is none."""
    def shown(value, present):
        return short.repr(value) if present else None
    return {"frame": change.frame, "depth": change.depth, "name": change.name,
            "kind": change.kind,
            "before": shown(change.before, change.kind not in ("added", "entered")),
            "after": shown(change.after, change.kind not in ("removed", "left"))}
