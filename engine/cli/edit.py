"""The `engine` commands that look into a savepoint's state: `engine diff` and `engine
shell` (restore's and fork's --set: engine.cli.setlocals)."""
import code
import sys

from engine.cli.commands import find_savepoint, open_engine
from engine.cli.output import change_dict, emit, table
from engine.errors import EngineError


def cmd_diff(args):
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        first = find_savepoint(eng, ex.id, args.savepoint_a)
        if args.savepoint_b is None:       # SP_A against the savepoint before it
            before, after = eng.previous_savepoint(ex.id, first.seq), first
        else:
            before, after = first, find_savepoint(eng, ex.id, args.savepoint_b)
        found = eng.diff(ex.id, None if before is None else before.seq, after.seq)
    rows = [change_dict(change) for change in found]

    def human(rows_):
        start = "before the first savepoint" if before is None else f"savepoint {before.seq}"
        head = f"from {start} to savepoint {after.seq}:"
        if not rows_:
            return f"{head} no changes"
        return head + "\n" + table(
            [dict(r, frame=f"{r['frame']} ({r['depth']})", name=r["name"] or "-")
             for r in rows_], ["frame", "name", "kind", "before", "after"])
    emit(args, rows, human)
    return 0


SHELL_BANNER = """\
savepoint {seq} of execution {id} ({action} at line {line}: {command})
The names are the locals of its innermost frame, {function}, as the savepoint holds them
(decoded without running the flow: instances show as stand-ins).  Also:
  frames         every frame, outermost first (.function, .line, .locals)
  save(name=value, ...) or save({{"function.name": value}})
                 restore the execution to this savepoint with those locals changed
                 (kept as the savepoint "edit of {seq}"); nothing else here is saved
{shadowed}Ctrl-D (end of input) leaves."""


def cmd_shell(args):
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        sp = find_savepoint(eng, ex.id, args.savepoint)
        frames = eng.inspect(ex.id, sp.seq)

        def save(changes=None, /, **more):
            """Restore the execution to this savepoint with these locals changed."""
            try:
                restored = eng.restore(ex.id, sp.seq, set_locals=dict(changes or {}, **more))
            except (EngineError, ValueError, KeyError, TypeError) as e:
                print(f"engine: {e}", file=sys.stderr)
                return
            edit = eng.savepoints(ex.id)[-1]
            print(f"saved as savepoint {edit.seq} ({edit.name!r}); execution {ex.id} is "
                  f"{restored.status}, to go on from there")

        innermost = frames[-1]
        helpers = {"frames": frames, "save": save}
        shadowed = sorted(set(helpers) & set(innermost.locals))
        namespace = {**innermost.locals, **helpers}
        banner = SHELL_BANNER.format(
            seq=sp.seq, id=ex.id, action=sp.action, line=sp.line, command=sp.command,
            function=innermost.function,
            shadowed=f"(the locals {', '.join(shadowed)} are in frames[-1].locals)\n"
            if shadowed else "")
        if not sys.stdin.isatty():        # read from a pipe: no prompts in the output
            sys.ps1 = sys.ps2 = ""
        code.InteractiveConsole(namespace, filename="<engine shell>").interact(
            banner=banner, exitmsg="")
    return 0
