"""The `engine` command's commands: each cmd_NAME(args) does one command over the public
API (engine.Engine) and returns the exit status."""
import datetime
import importlib
import json
import logging
import os
import sys
import time

from engine import Engine, Status, config
from engine.errors import SavepointError, SavepointNotFound, StoreUnavailable
from engine.store import missing_store
from engine.store.location import redacted, shown
from engine.store.leases import this_host
from engine.cli.setlocals import set_locals_of
from engine.cli.output import (emit, execution_dict, iso, log_lines, savepoint_dict, short,
                               table, terminal_width, text_of, type_shown, when)

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
    this_host()                 # a bad $ENGINE_HOST_ID: said before anything opens
    return out


def open_engine(args, must_exist=True):
    """The engine on --path; unless ``must_exist`` is false, only if a store is there
    already (a mistyped path or URL creates nothing)."""
    settings = {name: value for name, (value, _) in configuration(args).items()}
    path = settings.pop("path")
    try:
        missing = missing_store(path) if must_exist else None
        if missing is not None:
            raise CommandError(f"{shown(path)} is not an engine store ({missing})")
        return Engine(path, **settings)
    except (StoreUnavailable, ValueError) as e:         # they name the server already
        raise CommandError(str(e)) from None
    except SavepointError as e:
        raise CommandError(f"{shown(path)} is not an engine store: {e}") from None
    except CommandError:
        raise
    except Exception as e:
        raise CommandError(f"cannot open the store {shown(path)}: {type(e).__name__}: "
                           f"{redacted(str(e))}") from None


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


def flow_argument(text):
    """"FILE_OR_MODULE:FUNCTION" as a flow name, its module imported to check it."""
    if ":" not in text:
        raise CommandError(f"flow {text!r} must be FILE_OR_MODULE:FUNCTION")
    target, _, function = text.rpartition(":")
    target, module = import_file_or_module(target)
    if not callable(getattr(module, function, None)):
        raise CommandError(f"{target} has no function {function!r}")
    return f"{target}:{function}"


def cmd_run(args):
    flow = flow_argument(args.flow)
    inputs = _inputs(args)
    with open_engine(args, must_exist=False) as eng:
        if args.id is not None and eng.store.get_execution(args.id) is not None:
            ex = eng.start(flow, inputs, id=args.id)          # checks the id
            emit(args, execution_dict(ex), lambda d: f"{d['id']}  {d['status']}  "
                 f"(started before: nothing new started)")
            return 0
        ex = eng.start(flow, inputs, id=args.id)
        return _run_here(eng, ex.id, args, args.flows or ())


def cmd_ls(args):
    with open_engine(args) as eng:
        # one page, newest first, from the store's listing: it costs the same with
        # 100,000 executions as with 100
        shown = eng.executions_page(args.status, args.flow, limit=args.limit).executions
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
            text = text_of(value).replace("\n", " ")
            if width is not None and len(text) > width - 15:   # --json has all of it
                text = text[:width - 16] + "~"
            lines.append(f"{key + ':':<15}{text}")
        lines.append("log:" + ("" if ex.log else "           (empty)"))
        lines.extend("  " + line for line in log_lines(ex.log, args))
        return "\n".join(lines)
    emit(args, data, human)
    return 0


def cmd_logs(args):
    ended = {Status.ENDED_SUCCESS, Status.ENDED_ERROR, Status.ENDED_CANCELLED}
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        printed = 0
        while True:
            for at, text in ex.log[printed:]:
                if args.json:
                    print(json.dumps([iso(at), text]), flush=True)
                else:
                    print(log_lines([(at, text)], args)[0], flush=True)
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


def cmd_inspect(args):
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        sp = find_savepoint(eng, ex.id, args.savepoint)
        frames = eng.inspect(ex.id, sp.seq)
    out = []
    for frame in frames:
        rows = [{"name": name, "type": type_shown(value), "value": short.repr(value)}
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


def steer(args, action):
    with open_engine(args) as eng:
        ex = eng.get(args.id)
        if getattr(args, "flows", None) and not args.run:
            raise CommandError("--flows is for --run")
        if action in ("restore", "fork"):
            sp = find_savepoint(eng, ex.id, args.savepoint, args.by)
            ex = getattr(eng, action)(ex.id, sp.id, set_locals=set_locals_of(args))
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


def cmd_send(args):
    try:
        value = json.loads(args.value)
    except ValueError as e:
        raise CommandError(f"the message is not JSON: {e}") from None
    with open_engine(args) as eng:
        eng.send(args.id, args.topic, value)
    return 0


def cmd_schedule(args):
    """engine schedule add|ls|rm."""
    if args.action == "add":
        flow = flow_argument(args.flow)
        inputs = None
        if args.inputs is not None:
            try:
                inputs = json.loads(args.inputs)
            except ValueError as e:
                raise CommandError(f"--inputs is not JSON: {e}") from None
        with open_engine(args, must_exist=False) as eng:
            eng.schedule(args.name, flow, every=args.every,
                         cron=args.cron, inputs=inputs)
        return 0
    with open_engine(args) as eng:
        if args.action == "rm":
            eng.unschedule(args.name)
            return 0
        found = eng.schedules()
        now = time.time()
    # --json: an aware UTC time, as every other --json time; the table: local (or --utc)
    moments = [datetime.datetime.fromtimestamp(s.next_tick(now), datetime.timezone.utc)
               for s in found]
    rows = [{"name": s.name, "flow": s.flow, "every": s.every, "cron": s.cron,
             "inputs": s.inputs, "next": iso(moment)} for s, moment in zip(found, moments)]
    emit(args, rows, lambda rows: table(
        [dict(row, next=when(moment, args)) for row, moment in zip(rows, moments)],
        ["name", "flow", "every", "cron", "next", "inputs"]))
    return 0


def cmd_worker(args):
    names = []
    for spec in args.flows:
        names.append(import_file_or_module(spec)[0])   # fail here, clearly, not in workers
    registering = [n for n in names if hasattr(sys.modules[n], "register")]
    if len(registering) > 1:
        raise CommandError("more than one --flows module has register(eng)")
    from engine.workers import LOG_FORMAT    # multiprocessing: only for this command
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    with open_engine(args, must_exist=False) as eng:
        server = None
        if args.metrics_port is not None:
            from engine import metrics
            server = metrics.serve(eng.store, args.metrics_port, args.metrics_host)
        try:
            eng.work(processes=args.processes,
                     connectors=registering[0] if registering else None)
        finally:
            if server is not None:
                server.shutdown()
    return 0


def cmd_stats(args):
    with open_engine(args) as eng:
        data = eng.stats()
    emit(args, data, lambda d: table(d["workers"], ["host", "pid", "index",
                                                    "busy_fraction", "running", "parked",
                                                    "calls_per_s", "executions_per_s"]) +
         f"\nqueue depth: {d['queue_depth']}")
    return 0


def cmd_config(args):
    data = {name: {"value": shown(value) if name == "path" else value, "source": source}
            for name, (value, source) in configuration(args).items()}
    data["host_id"] = {"value": this_host(), "source": f"${config.HOST_ID_VARIABLE}"
                       if config.host_id() else "this machine (boot id)"}
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


