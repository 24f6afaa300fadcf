"""The `engine` command (also `python -m engine`): run, inspect and steer executions and
their savepoints from a terminal, through the public API only.

    engine run FILE_OR_MODULE:FUNCTION [--input KEY=VALUE ...] [--inputs JSON]
    engine ls [--status S] [--flow NAME] [--limit N]
    engine show ID
    engine logs ID [--follow]
    engine savepoints ID
    engine inspect ID SAVEPOINT
    engine restore ID SAVEPOINT [--by name|id] [--run [--flows MODULE ...]]
    engine fork ID SAVEPOINT [--by name|id] [--run [--flows MODULE ...]]
    engine resume ID [--run [--flows MODULE ...]]
    engine delete|cancel|pause ID
    engine worker -n N --flows MODULE_OR_FILE ...
    engine stats
    engine config
    engine doctor [--repair]

Every command takes --path, --durability, --sleep-max-seconds, --lease-seconds and
--savepoint-retention; they come from the flag, else the environment (ENGINE_PATH,
ENGINE_DURABILITY, ENGINE_SLEEP_MAX_SECONDS, ENGINE_LEASE_SECONDS,
ENGINE_SAVEPOINT_RETENTION), else the default; `engine config` shows which.  Listings take
--json; times are local (--utc for UTC).  Execution ids may be shortened to a unique
prefix.  Modules are found as `python -m` finds them: the current directory first, then
sys.path.  Errors are one line on stderr and a non-zero exit status.
"""
import argparse
import datetime
import importlib
import json
import logging
import os
import reprlib
import shutil
import sys
import time

from engine import config

EXIT_FAILED = 1          # the execution ended in error
EXIT_USAGE = 2           # the command could not do what was asked


class CommandError(Exception):
    """A problem to report in one line, exit status 2."""
    status = EXIT_USAGE


class Interrupted(CommandError):
    """Ctrl-C, reported in one line with exit status 130."""
    status = 130


# --- configuration ---------------------------------------------------------------------------

def configuration(args):
    """{name: (value, source)} from the flags, else the environment, else defaults."""
    out = {}
    for name in config.SETTINGS:
        flag = getattr(args, name, None)
        try:
            out[name] = config.resolve(name, flag, f"--{name.replace('_', '-')}")
        except ValueError as e:
            raise CommandError(str(e)) from None
    return out


def open_engine(args, must_exist=True):
    from engine import Engine
    from engine.errors import SavepointError
    settings = {name: value for name, (value, _) in configuration(args).items()}
    path = settings.pop("path")
    if must_exist and not os.path.exists(os.path.join(path, "data.mdb")):
        raise CommandError(f"{path} is not an engine store (no data.mdb there)")
    try:
        return Engine(path, **settings)
    except SavepointError as e:
        raise CommandError(f"{path} is not an engine store: {e}") from None
    except Exception as e:
        raise CommandError(f"cannot open the store {path}: {type(e).__name__}: {e}") \
            from None


# --- output --------------------------------------------------------------------------------

def _text(value):
    return "" if value is None else str(value)


def terminal_width():
    """The terminal's width; None (no cutting) when the output is not a terminal and
    $COLUMNS does not say."""
    if os.environ.get("COLUMNS", "").isdigit():
        return max(40, int(os.environ["COLUMNS"]))
    if sys.stdout.isatty():
        return max(40, shutil.get_terminal_size().columns)
    return None


def table(rows, columns):
    """An aligned table of dict rows that fits the terminal: the widest cells are cut."""
    if not rows:
        return "(none)"
    cells = [[_text(row.get(c)).replace("\n", " ") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    width = terminal_width()
    while width is not None and sum(widths) + 2 * (len(widths) - 1) > width and \
            max(widths) > 4:
        widest = widths.index(max(widths))
        widths[widest] -= 1

    def line(values):
        return "  ".join(v[:w - 1] + "~" if len(v) > w else v.ljust(w)
                         for v, w in zip(values, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] +
                     [line(r) for r in cells])


def when(moment, args, precise=False):
    """A time as people read it: local with its zone (UTC with --utc)."""
    if moment is None:
        return ""
    moment = moment.astimezone(datetime.timezone.utc) if getattr(args, "utc", False) \
        else moment.astimezone()
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if precise:
        text += f".{moment.microsecond // 1000:03d}"
    return f"{text} {moment.strftime('%Z') or moment.strftime('%z')}"


def emit(args, data, human):
    if getattr(args, "json", False):
        print(json.dumps(data, default=str, indent=None))
    else:
        print(human(data))


def _iso(moment):
    return moment.isoformat() if moment else None


def execution_dict(ex):
    return {"id": ex.id, "flow": ex.flow, "status": str(ex.status), "inputs": ex.inputs,
            "output": ex.output, "outputs": ex.outputs, "error": ex.error,
            "created_at": _iso(ex.created_at), "updated_at": _iso(ex.updated_at),
            "restore_count": ex.restore_count, "name": ex.name, "parent": ex.parent,
            "log": [[_iso(at), text] for at, text in ex.log], "damaged": ex.damaged}


def savepoint_dict(sp):
    return {"id": sp.id, "seq": sp.seq, "created_at": _iso(sp.created_at),
            "line": sp.line, "action": sp.action, "command": sp.command, "kind": sp.kind,
            "name": sp.name, "size": sp.size, "damaged": sp.damaged}


def _parse_time(text):
    return None if text is None else datetime.datetime.fromisoformat(text)


# --- lookups --------------------------------------------------------------------------------

def import_file_or_module(target):
    """(module name, module) for a dotted module name or a path to a .py file; the
    file's directory goes first on sys.path."""
    if target.endswith(".py") or os.sep in target:
        if not os.path.exists(target):
            raise CommandError(f"no file {target}")
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        target = os.path.splitext(os.path.basename(target))[0]
    try:
        return target, importlib.import_module(target)
    except Exception as e:
        raise CommandError(f"cannot import {target}: {type(e).__name__}: {e}") from None


def register_flows(eng, specs):
    """Import each --flows module; those with register(eng) add their connectors."""
    names = []
    for spec in specs or ():
        name, module = import_file_or_module(spec)
        register = getattr(module, "register", None)
        if register is not None:
            try:
                register(eng)
            except Exception as e:
                raise CommandError(f"{name}.register(eng) failed: {type(e).__name__}: "
                                   f"{e}") from None
        names.append(name)
    return names


def find_savepoint(eng, exec_id, spec, by=None):
    """A savepoint of the execution by seq, id or (with --by name, or failing those)
    name."""
    from engine.errors import SavepointNotFound
    if by is not None:
        return eng.savepoint(exec_id, spec, by=by)
    try:
        return eng.savepoint(exec_id, spec, by="id")
    except SavepointNotFound:
        try:
            return eng.savepoint(exec_id, spec, by="name")
        except SavepointNotFound:
            raise SavepointNotFound(f"execution {exec_id[:12]} has no savepoint with seq, "
                                    f"id or name {spec!r}") from None


# --- commands -------------------------------------------------------------------------------

def _inputs(args):
    try:
        inputs = json.loads(args.inputs) if args.inputs else {}
    except ValueError as e:
        raise CommandError(f"--inputs is not valid JSON ({e}): {args.inputs!r}") from None
    if not isinstance(inputs, dict) and args.input:
        raise CommandError("--input KEY=VALUE needs --inputs to be a JSON object")
    for item in args.input or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--input {item!r} must be KEY=VALUE")
        try:
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    return inputs


def _run_here(eng, exec_id, args, flows=()):
    """Run one execution in this process; report it; exit 1 if it ended in error.  The
    flow's own module registers its connectors (register(eng)), as with `engine run`."""
    module = eng.get(exec_id).flow.partition(":")[0]
    try:
        importlib.import_module(module)
    except Exception:
        pass                                 # the run says it cannot import it
    else:
        flows = [module] + [f for f in flows if f != module]
    register_flows(eng, flows)
    try:
        eng.run(execution_id=exec_id)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: execution {exec_id} is QUEUED again; a worker (engine worker) "
            f"on this store goes on from its last savepoint") from None
    ex = eng.get(exec_id)
    emit(args, execution_dict(ex), lambda d: f"{d['id']}  {d['status']}" + (
        f"\noutput: {d['output']!r}" if d["status"] == "ENDED_SUCCESS" else
        f"\nerror: {d['error']}" if d["error"] else ""))
    return EXIT_FAILED if str(ex.status) == "ENDED_ERROR" else 0


def cmd_run(args):
    if ":" not in args.flow:
        raise CommandError(f"flow {args.flow!r} must be FILE_OR_MODULE:FUNCTION")
    target, _, function = args.flow.rpartition(":")
    target, module = import_file_or_module(target)
    if not callable(getattr(module, function, None)):
        raise CommandError(f"{target} has no function {function!r}")
    inputs = _inputs(args)
    with open_engine(args, must_exist=False) as eng:
        ex = eng.start(f"{target}:{function}", inputs)
        return _run_here(eng, ex.id, args, args.flows or ())


def cmd_ls(args):
    with open_engine(args) as eng:
        found = eng.executions(status=args.status)
        if args.flow:
            found = [ex for ex in found if ex.flow == args.flow or
                     ex.flow.endswith(":" + args.flow) or ex.flow.startswith(args.flow)]
        # newest first; one whose record is lost (no created_at) last
        found.sort(key=lambda ex: (ex.created_at is not None, ex.created_at or 0),
                   reverse=True)
        shown = found[:args.limit]
        rows = [execution_dict(ex) for ex in shown]
    if args.quiet:
        for ex in shown:
            print(ex.id)
        return 0
    emit(args, rows, lambda rows: table(
        [dict(r, id=ex.id[:12], created_at=when(ex.created_at, args))
         for r, ex in zip(rows, shown)],
        ["id", "status", "flow", "created_at", "restore_count", "error"] +
        (["damaged"] if any(ex.damaged for ex in shown) else [])))
    return 0


def _log_lines(log, args):
    return [f"{when(at, args, precise=True) or '-':<31} {text}" for at, text in log]


def cmd_show(args):
    with open_engine(args) as eng:
        ex = eng.get(args.id)
    data = execution_dict(ex)

    def human(d):
        lines = []
        width = terminal_width()
        for key, value in d.items():
            if key == "log" or (key == "damaged" and value is None):
                continue
            if key in ("created_at", "updated_at"):
                value = when(getattr(ex, key), args, precise=True)
            text = _text(value).replace("\n", " ")
            if width is not None and len(text) > width - 15:   # --json has all of it
                text = text[:width - 16] + "~"
            lines.append(f"{key + ':':<15}{text}")
        lines.append("log:" + ("" if ex.log else "           (empty)"))
        lines.extend("  " + line for line in _log_lines(ex.log, args))
        return "\n".join(lines)
    emit(args, data, human)
    return 0


def cmd_logs(args):
    from engine import Status
    ended = {Status.ENDED_SUCCESS, Status.ENDED_ERROR, Status.ENDED_CANCELLED}
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        printed = 0
        while True:
            for at, text in ex.log[printed:]:
                if args.json:
                    print(json.dumps([_iso(at), text]), flush=True)
                else:
                    print(_log_lines([(at, text)], args)[0], flush=True)
            printed = len(ex.log)
            if not args.follow or ex.status in ended:
                return 0
            time.sleep(0.2)
            ex = eng.get(ex.id)


def cmd_savepoints(args):
    with open_engine(args) as eng:
        found = eng.savepoints(args.id)
    rows = [savepoint_dict(sp) for sp in found]
    emit(args, rows, lambda rows: table(
        [dict(r, created_at=when(sp.created_at, args, precise=True))
         for r, sp in zip(rows, found)],
        ["seq", "created_at", "line", "action", "command", "kind", "name", "size"] +
        (["damaged"] if any(sp.damaged for sp in found) else [])))
    return 0


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


def _type_shown(value):
    from engine._codec import Unbuilt
    if isinstance(value, Unbuilt):
        return value.name if value.kind == "instance" else value.kind
    return type(value).__qualname__


def cmd_inspect(args):
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        sp = find_savepoint(eng, ex.id, args.savepoint)
        frames = eng.inspect(ex.id, sp.seq)
    out = []
    for frame in frames:
        rows = [{"name": name, "type": _type_shown(value), "value": _short.repr(value)}
                for name, value in frame.locals.items()]
        rows += [{"name": name, "type": "-", "value": "<unbound>"} for name in frame.unbound]
        out.append({"function": frame.function, "file": frame.file, "line": frame.line,
                    "locals": rows})

    def human(frames_):
        parts = [f"savepoint {sp.id} ({sp.kind}{' ' + repr(sp.name) if sp.name else ''}, "
                 f"{when(sp.created_at, args, precise=True)}): "
                 f"{sp.action} at line {sp.line}: {sp.command}"]
        for n, f in enumerate(frames_):
            parts.append(f"\nframe {n}: {f['function']}  ({f['file']}:{f['line']})")
            parts.append(table(f["locals"], ["name", "type", "value"]))
        return "\n".join(parts)
    emit(args, out, human)
    return 0


def _steer(args, action):
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        if getattr(args, "flows", None) and not args.run:
            raise CommandError("--flows is for --run")
        if action in ("restore", "fork"):
            sp = find_savepoint(eng, ex.id, args.savepoint, args.by)
            ex = getattr(eng, action)(ex.id, sp.id)
        elif action == "delete":
            eng.delete(ex.id)
            print(f"deleted {ex.id}")
            return 0
        else:
            ex = getattr(eng, action)(ex.id)
        if getattr(args, "run", False):
            return _run_here(eng, ex.id, args, args.flows or ())
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


def cmd_doctor(args):
    with open_engine(args) as eng:
        report = eng.check(repair=args.repair)

    def human(d):
        lines = []
        for p in d["problems"]:
            line = f"{p['db']} {p['key']}: {p['problem']}"
            if p["repaired"]:
                line += f" -- repaired: {p['repair']}"
            elif p["repair"]:
                line += f" (--repair would {p['repair']})"
            lines.append(line)
        checked = d["checked"]
        summary = (f"checked {checked['executions']} executions, {checked['savepoints']} "
                   f"savepoints, {sum(checked.values())} records in all: ")
        problems = d["problems"]
        if not problems:
            summary += "no problems"
        else:
            repaired = sum(p["repaired"] for p in problems)
            summary += f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
            if args.repair:
                summary += f", {repaired} repaired"
            elif any(p["repair"] for p in problems):
                summary += f", {sum(bool(p['repair']) for p in problems)} of them " \
                           f"repairable with --repair"
        return "\n".join(lines + [summary])
    emit(args, report, human)
    return EXIT_FAILED if report["problems"] else 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _status_name(text):
    from engine import Status
    names = [s.value for s in Status]
    if text.upper() not in names:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(names)} (any case), "
                                         f"not {text!r}")
    return text.upper()


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, as every other error of the command."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"engine: {message} (see: {self.prog} --help)\n")


def parser():
    from engine import __version__
    common = _Parser(add_help=False)
    common.add_argument("--path", help="the store (default: $ENGINE_PATH or ./.engine)")
    common.add_argument("--durability", help="sync (default) or async")
    common.add_argument("--sleep-max-seconds", dest="sleep_max_seconds", metavar="SECONDS",
                        help="waits longer than this unload the execution (default 60)")
    common.add_argument("--lease-seconds", dest="lease_seconds", metavar="SECONDS",
                        help="how long a hung worker keeps its executions (default 30)")
    common.add_argument("--savepoint-retention", dest="savepoint_retention",
                        help="all (default) or last")
    listing = _Parser(add_help=False)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--utc", action="store_true", help="times in UTC, not local time")
    running = _Parser(add_help=False)
    running.add_argument("--flows", nargs="+", metavar="MODULE_OR_FILE",
                         help="modules to import first; register(eng) adds connectors")

    top = _Parser(prog="engine", description="savepoint-engine: durable executions of "
                  "plain Python functions, saved at every Flow-API call")
    top.add_argument("--version", action="version", version=f"engine {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND",
                             parser_class=_Parser)

    def command(name, text, func, parents=(common,)):
        p = sub.add_parser(name, parents=list(parents), help=text, description=text)
        p.set_defaults(func=func)
        return p

    p = command("run", "start a flow and run it here until it ends or waits; exit 1 if it "
                "ended in error", cmd_run, (common, listing, running))
    p.add_argument("flow", metavar="FILE_OR_MODULE:FUNCTION")
    p.add_argument("--input", action="append", metavar="KEY=VALUE",
                   help="one input (VALUE is JSON, else a string); repeatable")
    p.add_argument("--inputs", metavar="JSON", help="all inputs as a JSON object")
    p = command("ls", "list executions, newest first", cmd_ls, (common, listing))
    p.add_argument("--status", type=_status_name, help="only executions in this status")
    p.add_argument("--flow", help="only executions of this flow (module:function or part)")
    p.add_argument("--limit", type=_positive_int, default=50, help="at most N (default 50)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the ids, one a line")
    p = command("show", "one execution: status, inputs, output or error, log, times",
                cmd_show, (common, listing))
    p.add_argument("id", help="execution id or a unique prefix")
    p = command("logs", "an execution's log lines, with their times", cmd_logs,
                (common, listing))
    p.add_argument("id", help="execution id or a unique prefix")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new lines until the execution ends")
    p = command("savepoints", "an execution's savepoints: created at, line, action, "
                "command, kind, name, size", cmd_savepoints, (common, listing))
    p.add_argument("id", help="execution id or a unique prefix")
    p = command("inspect", "every frame and local a savepoint holds (runs nothing)",
                cmd_inspect, (common, listing))
    p.add_argument("id", help="execution id or a unique prefix")
    p.add_argument("savepoint", help="seq number, id or name")
    for name, text in (("restore", "revert an execution to a savepoint (QUEUED to go on "
                                   "from there)"),
                       ("fork", "a new QUEUED execution that goes on from a savepoint")):
        p = command(name, text, lambda a, n=name: _steer(a, n), (common, listing, running))
        p.add_argument("id", help="execution id or a unique prefix")
        p.add_argument("savepoint", help="seq number or id (or name, see --by)")
        p.add_argument("--by", choices=("name", "id"),
                       help="how SAVEPOINT names it (default: seq or id, else name)")
        p.add_argument("--run", action="store_true",
                       help="then run that execution here until it ends or waits")
    p = command("resume", "a PAUSED execution goes on (a sleeper at its wake time)",
                lambda a: _steer(a, "resume"), (common, listing, running))
    p.add_argument("id", help="execution id or a unique prefix")
    p.add_argument("--run", action="store_true",
                   help="then run it here until it ends or waits")
    for name, text in (("delete", "delete an execution and all its savepoints (a running "
                                  "one is stopped first)"),
                       ("cancel", "end an execution (and its unfinished children) "
                                  "ENDED_CANCELLED"),
                       ("pause", "pause an execution until `engine resume`")):
        p = command(name, text, lambda a, n=name: _steer(a, n))
        p.add_argument("id", help="execution id or a unique prefix")
    p = command("worker", "run a pool of worker processes on the store (Ctrl-C or SIGTERM "
                "stops it cleanly)", cmd_worker)
    p.add_argument("-n", "--processes", type=_positive_int, default=2,
                   help="worker processes (default 2)")
    p.add_argument("--flows", nargs="+", default=[], metavar="MODULE_OR_FILE",
                   help="modules the flows need; one may have register(eng)")
    command("stats", "live workers (busy fraction, calls/s) and the queue depth", cmd_stats,
            (common, listing))
    command("config", "effective settings and where each came from (flag, $ENGINE_*, "
            "default)", cmd_config, (common, listing))
    p = command("doctor", "verify every record of the store and report each problem, one "
                "a line; exit 0 if there is none, 1 if there are (with --repair too)",
                cmd_doctor, (common, listing))
    p.add_argument("--repair", action="store_true",
                   help="also fix what can be fixed without losing anything: run-queue "
                   "entries out of step, dangling names, unused code and chunks, stale "
                   "leases (damaged executions and savepoints are only reported)")
    return top


def main(argv=None):
    # modules are found as with `python -m`: the current directory first
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    args = parser().parse_args(argv)
    from engine.errors import EngineError
    try:
        return args.func(args)
    except (CommandError, EngineError, KeyError, ValueError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"engine: {text}", file=sys.stderr)
        return getattr(e, "status", EXIT_USAGE)
    except KeyboardInterrupt:
        print("engine: interrupted", file=sys.stderr)
        return Interrupted.status


if __name__ == "__main__":
    sys.exit(main())
