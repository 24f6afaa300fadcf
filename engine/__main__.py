"""The `engine` command (also `python -m engine`): run, inspect and steer executions and
their savepoints from a terminal, through the public API only.

    engine run FILE_OR_MODULE:FUNCTION [--input KEY=VALUE ...] [--inputs JSON]
    engine ls [--status S] [--flow NAME] [--limit N]
    engine show ID
    engine savepoints ID
    engine inspect ID SAVEPOINT
    engine restore ID SAVEPOINT [--by name|id] [--run]
    engine fork ID SAVEPOINT [--by name|id] [--run]
    engine delete|cancel|pause|resume ID
    engine worker -n N --flows MODULE_OR_FILE ...
    engine stats
    engine config

Every command takes --path, --durability, --sleep-max-seconds, --lease-seconds and
--savepoint-retention; they come from the flag, else the environment (ENGINE_PATH,
ENGINE_DURABILITY, ENGINE_SLEEP_MAX_SECONDS, ENGINE_LEASE_SECONDS,
ENGINE_SAVEPOINT_RETENTION), else the default; `engine config` shows which.  Listings take
--json.  Execution ids may be shortened to a unique prefix.  Errors are one line on
stderr and a non-zero exit status.
"""
import argparse
import importlib
import json
import logging
import os
import reprlib
import sys

WIDTH = 100
SETTINGS = (  # name, environment variable, default, type
    ("path", "ENGINE_PATH", ".engine", str),
    ("durability", "ENGINE_DURABILITY", "sync", str),
    ("sleep_max_seconds", "ENGINE_SLEEP_MAX_SECONDS", 60.0, float),
    ("lease_seconds", "ENGINE_LEASE_SECONDS", 30.0, float),
    ("savepoint_retention", "ENGINE_SAVEPOINT_RETENTION", "all", str),
)


class CommandError(Exception):
    """A problem to report in one line, exit status 2."""


# --- configuration ---------------------------------------------------------------------------

def configuration(args):
    """{name: (value, source)} from the flags, else the environment, else defaults."""
    out = {}
    for name, variable, default, kind in SETTINGS:
        flag = getattr(args, name, None)
        if flag is not None:
            out[name] = (kind(flag), f"--{name.replace('_', '-')}")
        elif os.environ.get(variable):
            try:
                out[name] = (kind(os.environ[variable]), f"${variable}")
            except ValueError:
                raise CommandError(f"${variable} must be a {kind.__name__}, not "
                                   f"{os.environ[variable]!r}") from None
        else:
            out[name] = (default, "default")
    return out


def open_engine(args, must_exist=True):
    from engine import Engine
    from engine.errors import SavepointError
    config = {name: value for name, (value, _) in configuration(args).items()}
    path = config["path"]
    if must_exist and not os.path.exists(os.path.join(path, "data.mdb")):
        raise CommandError(f"{path} is not an engine store (no data.mdb there)")
    try:
        return Engine(path, durability=config["durability"],
                      savepoint_retention=config["savepoint_retention"],
                      sleep_max_seconds=config["sleep_max_seconds"],
                      lease_seconds=config["lease_seconds"])
    except SavepointError as e:
        raise CommandError(f"{path} is not an engine store: {e}") from None
    except Exception as e:
        raise CommandError(f"{path} is not an engine store: {type(e).__name__}: {e}") \
            from None


# --- output --------------------------------------------------------------------------------

def _text(value):
    return "" if value is None else str(value)


def table(rows, columns):
    """An aligned table of dict rows that fits WIDTH columns: wide cells are cut."""
    if not rows:
        return "(none)"
    cells = [[_text(row.get(c)).replace("\n", " ") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    while sum(widths) + 2 * (len(widths) - 1) > WIDTH:
        widest = widths.index(max(widths))
        widths[widest] -= 1
    def line(values):
        return "  ".join(v[:w - 1] + "~" if len(v) > w else v.ljust(w)
                         for v, w in zip(values, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] +
                     [line(r) for r in cells])


def emit(args, data, human):
    if getattr(args, "json", False):
        print(json.dumps(data, default=str, indent=None))
    else:
        print(human(data))


def execution_dict(ex):
    return {"id": ex.id, "flow": ex.flow, "status": str(ex.status), "inputs": ex.inputs,
            "output": ex.output, "outputs": ex.outputs, "error": ex.error,
            "created_at": ex.created_at.isoformat() if ex.created_at else None,
            "updated_at": ex.updated_at.isoformat() if ex.updated_at else None,
            "restore_count": ex.restore_count, "name": ex.name, "parent": ex.parent}


def savepoint_dict(sp):
    return {"id": sp.id, "seq": sp.seq, "created_at": sp.created_at.isoformat(),
            "line": sp.line, "action": sp.action, "command": sp.command, "kind": sp.kind,
            "name": sp.name, "size": sp.size}


# --- lookups --------------------------------------------------------------------------------

def find_execution(eng, prefix):
    """The execution whose id is ``prefix`` or starts with it, as git does."""
    matches = [ex for ex in eng.executions() if ex.id.startswith(prefix)]
    if not matches:
        raise CommandError(f"no execution {prefix!r}")
    if len(matches) > 1 and not any(ex.id == prefix for ex in matches):
        raise CommandError(f"execution id {prefix!r} is ambiguous: it starts "
                           f"{len(matches)} ids ({', '.join(m.id[:12] for m in matches[:4])}"
                           f"{', ...' if len(matches) > 4 else ''})")
    return next((ex for ex in matches if ex.id == prefix), matches[0])


def import_file_or_module(target):
    """(module name, module) for a dotted module name or a path to a .py file."""
    if target.endswith(".py") or os.sep in target:
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        target = os.path.splitext(os.path.basename(target))[0]
    try:
        return target, importlib.import_module(target)
    except ImportError as e:
        raise CommandError(f"cannot import {target}: {e}") from None


def find_savepoint(eng, ex, spec, by=None):
    """A savepoint of ``ex`` by seq number, full id or name."""
    savepoints = eng.savepoints(ex.id)
    for sp in savepoints:
        if (by in (None, "id") and (spec == sp.id or spec == str(sp.seq))) or \
                (by in (None, "name") and spec == sp.name):
            return sp
    what = "named" if by == "name" else "with id or name" if by is None else "with id"
    raise CommandError(f"execution {ex.id[:12]} has no savepoint {what} {spec!r}")


# --- commands -------------------------------------------------------------------------------

def cmd_run(args):
    if ":" not in args.flow:
        raise CommandError(f"flow {args.flow!r} must be FILE_OR_MODULE:FUNCTION")
    target, _, function = args.flow.rpartition(":")
    sys.path.insert(0, os.getcwd())             # a module here, as with python -m
    target, module = import_file_or_module(target)
    if not callable(getattr(module, function, None)):
        raise CommandError(f"{target} has no function {function!r}")
    inputs = json.loads(args.inputs) if args.inputs else {}
    for item in args.input or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--input {item!r} must be KEY=VALUE")
        try:
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    with open_engine(args, must_exist=False) as eng:
        if hasattr(module, "register"):
            module.register(eng)
        ex = eng.execute(f"{target}:{function}", inputs)
        emit(args, execution_dict(ex), lambda d: f"{d['id']}  {d['status']}\n" + (
            f"output: {d['output']!r}" if d["error"] is None else f"error: {d['error']}"))
        return 1 if str(ex.status) == "ENDED_ERROR" else 0


def cmd_ls(args):
    with open_engine(args) as eng:
        found = eng.executions(status=args.status.upper() if args.status else None)
        if args.flow:
            found = [ex for ex in found if ex.flow == args.flow or
                     ex.flow.endswith(":" + args.flow) or ex.flow.startswith(args.flow)]
        found.sort(key=lambda ex: ex.created_at, reverse=True)
        rows = [execution_dict(ex) for ex in found[:args.limit]]
    emit(args, rows, lambda rows: table(
        [dict(r, id=r["id"][:12], created_at=r["created_at"][:19]) for r in rows],
        ["id", "status", "flow", "created_at", "restore_count", "error"]))
    return 0


def cmd_show(args):
    with open_engine(args) as eng:
        data = execution_dict(find_execution(eng, args.id))
    def human(d):
        lines = []
        for key, value in d.items():
            text = _text(value).replace("\n", " ")
            if len(text) > WIDTH - 15:                # fit the terminal; --json has all
                text = text[:WIDTH - 16] + "~"
            lines.append(f"{key + ':':<15}{text}")
        return "\n".join(lines)
    emit(args, data, human)
    return 0


def cmd_savepoints(args):
    with open_engine(args) as eng:
        ex = find_execution(eng, args.id)
        rows = [savepoint_dict(sp) for sp in eng.savepoints(ex.id)]
    emit(args, rows, lambda rows: table(
        [dict(r, created_at=r["created_at"][11:23]) for r in rows],
        ["seq", "created_at", "line", "action", "command", "kind", "name", "size"]))
    return 0


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


class FlowAPI:
    """Stands for `this` and `system` in an inspected savepoint (nothing runs there)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


def cmd_inspect(args):
    import types
    from engine import _codec, _frames
    sys.path.insert(0, os.getcwd())
    with open_engine(args) as eng:
        ex = find_execution(eng, args.id)
        sp = find_savepoint(eng, ex, args.savepoint)
        store = eng._store
        meta, record = store.savepoint(ex.id, sp.seq)
        try:
            frames, result = _codec.decode_savepoint(
                record, store.codes_for(record), trust=eng._trust_for_record(record),
                chunks=store.chunk,
                externals={"this": FlowAPI("this"), "system": FlowAPI("system")})
        except Exception as e:
            raise CommandError(f"cannot read savepoint {sp.id}: {e}") from None
    out = []
    for frame in frames:
        code = frame.code
        local_rows = []
        for i, value in enumerate(frame.locals):
            name = code._varname_from_oparg(i)
            if value is _frames.EMPTY:
                local_rows.append({"name": name, "type": "-", "value": "<unbound>"})
                continue
            if isinstance(value, types.CellType):
                try:
                    value = value.cell_contents
                except ValueError:
                    local_rows.append({"name": name, "type": "cell", "value": "<empty>"})
                    continue
            local_rows.append({"name": name, "type": type(value).__qualname__,
                               "value": _short.repr(value)})
        out.append({"function": code.co_qualname, "file": code.co_filename,
                    "line": frame.line, "locals": local_rows})

    def human(frames_):
        parts = [f"savepoint {sp.id} ({sp.kind}{' ' + repr(sp.name) if sp.name else ''}): "
                 f"{sp.action} at line {sp.line}: {sp.command}"]
        for n, f in enumerate(frames_):
            parts.append(f"\nframe {n}: {f['function']}  ({f['file']}:{f['line']})")
            parts.append(table(f["locals"], ["name", "type", "value"]))
        return "\n".join(parts)
    emit(args, out, human)
    return 0


def _steer(args, action):
    with open_engine(args) as eng:
        ex = find_execution(eng, args.id)
        if action in ("restore", "fork"):
            sp = find_savepoint(eng, ex, args.savepoint, args.by)
            ex = getattr(eng, action)(ex.id, sp.id)
            if args.run:
                eng.run()
                ex = eng.get(ex.id)
        elif action == "delete":
            eng.delete(ex.id)
            print(f"deleted {ex.id}")
            return 0
        else:
            ex = getattr(eng, action)(ex.id)
        print(f"{ex.id}  {ex.status}")
        return 0


def cmd_worker(args):
    names = []
    for spec in args.flows:
        names.append(import_file_or_module(spec)[0])   # fail here, clearly, not in workers
    registering = [n for n in names if hasattr(sys.modules[n], "register")]
    if len(registering) > 1:
        raise CommandError("more than one --flows module has register(eng)")
    from engine.workers import LOG_FORMAT
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    with open_engine(args, must_exist=False) as eng:
        eng.work(processes=args.processes,
                 connectors=registering[0] if registering else None)
    return 0


def cmd_stats(args):
    with open_engine(args) as eng:
        data = eng.stats()
    emit(args, data, lambda d: table(d["workers"], ["pid", "index", "busy_fraction",
                                                    "calls_per_s", "executions_per_s"]) +
         f"\nqueue depth: {d['queue_depth']}")
    return 0


def cmd_config(args):
    data = {name: {"value": value, "source": source}
            for name, (value, source) in configuration(args).items()}
    emit(args, data, lambda d: table([{"setting": k, **v} for k, v in d.items()],
                                     ["setting", "value", "source"]))
    return 0


def parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--path", help="the store (default: $ENGINE_PATH or ./.engine)")
    common.add_argument("--durability", choices=("sync", "async"))
    common.add_argument("--sleep-max-seconds", dest="sleep_max_seconds", type=float)
    common.add_argument("--lease-seconds", dest="lease_seconds", type=float)
    common.add_argument("--savepoint-retention", dest="savepoint_retention",
                        choices=("all", "last"))
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    top = argparse.ArgumentParser(prog="engine", description="savepoint-engine: durable "
                                  "executions of plain Python functions")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", parents=[common, listing], help="start a flow and run it here")
    p.add_argument("flow", metavar="FILE_OR_MODULE:FUNCTION")
    p.add_argument("--input", action="append", metavar="KEY=VALUE")
    p.add_argument("--inputs", metavar="JSON")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("ls", parents=[common, listing], help="executions, newest first")
    p.add_argument("--status")
    p.add_argument("--flow")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_ls)
    for name, func, text in (("show", cmd_show, "one execution"),
                             ("savepoints", cmd_savepoints, "an execution's savepoints")):
        p = sub.add_parser(name, parents=[common, listing], help=text)
        p.add_argument("id")
        p.set_defaults(func=func)
    p = sub.add_parser("inspect", parents=[common, listing],
                       help="the frames and locals of a savepoint")
    p.add_argument("id")
    p.add_argument("savepoint", help="seq number, id or name")
    p.set_defaults(func=cmd_inspect)
    for name, text in (("restore", "revert an execution to a savepoint"),
                       ("fork", "a new execution from a savepoint")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.add_argument("savepoint")
        p.add_argument("--by", choices=("name", "id"))
        p.add_argument("--run", action="store_true", help="then run it here")
        p.set_defaults(func=lambda a, n=name: _steer(a, n))
    for name in ("delete", "cancel", "pause", "resume"):
        p = sub.add_parser(name, parents=[common], help=f"{name} an execution")
        p.add_argument("id")
        p.set_defaults(func=lambda a, n=name: _steer(a, n))
    p = sub.add_parser("worker", parents=[common], help="run a pool of worker processes")
    p.add_argument("-n", "--processes", type=int, default=2)
    p.add_argument("--flows", nargs="+", default=[], metavar="MODULE_OR_FILE")
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("stats", parents=[common, listing], help="workers and queue")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("config", parents=[common, listing],
                       help="effective settings and where each came from")
    p.set_defaults(func=cmd_config)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CommandError as e:
        print(f"engine: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"engine: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
