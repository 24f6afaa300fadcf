"""The `engine` command (also `python -m engine`): run, inspect and steer executions and
their savepoints from a terminal, through the public API only.

    engine run FILE_OR_MODULE:FUNCTION [--input KEY=VALUE ...] [--inputs JSON] [--id ID]
    engine ls [--status S] [--flow NAME] [--limit N]
    engine show ID
    engine logs ID [--follow]
    engine savepoints ID
    engine inspect ID SAVEPOINT
    engine diff ID SAVEPOINT_A [SAVEPOINT_B]
    engine shell ID SAVEPOINT
    engine restore ID SAVEPOINT [--by name|id] [--set NAME=VALUE ...] [--run [--flows MODULE ...]]
    engine fork ID SAVEPOINT [--by name|id] [--set NAME=VALUE ...] [--run [--flows MODULE ...]]
    engine resume ID [--run [--flows MODULE ...]]
    engine delete|cancel|pause ID
    engine send ID TOPIC JSON
    engine schedule add NAME FILE_OR_MODULE:FUNCTION (--every SECONDS | --cron EXPR) [--inputs JSON]
    engine schedule ls | engine schedule rm NAME
    engine worker -n N --flows MODULE_OR_FILE ... [--metrics-port PORT]
    engine stats
    engine config
    engine doctor [--repair]
    engine ui [--host 127.0.0.1] [--port 8765] [--token T]

Every command takes --path, --durability, --sleep-max-seconds, --lease-seconds,
--savepoint-retention and --concurrency; they come from the flag, else the environment
(ENGINE_PATH, ENGINE_DURABILITY, ENGINE_SLEEP_MAX_SECONDS, ENGINE_LEASE_SECONDS,
ENGINE_SAVEPOINT_RETENTION, ENGINE_CONCURRENCY), else the default; `engine config` shows which.  Listings take
--json; times are local (--utc for UTC).  Execution ids may be shortened to a unique
prefix.  Modules are found as `python -m` finds them: the current directory first, then
sys.path.  Errors are one line on stderr and a non-zero exit status.
"""
import argparse
import logging
import os
import sys

from engine import Status, __version__
from engine.errors import EngineError
from engine.cli.commands import (EXIT_USAGE, CommandError, Interrupted, cmd_config,
                                 cmd_doctor, cmd_inspect, cmd_logs, cmd_ls, cmd_run,
                                 cmd_savepoints, cmd_schedule, cmd_send, cmd_show,
                                 cmd_stats, cmd_worker, steer)
from engine.cli.edit import cmd_diff, cmd_shell
from engine.cli.setlocals import set_item
from engine.cli.ui import cmd_ui


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, not {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), not {value}")
    return value


def _port_or_any(text):
    return 0 if text.strip() == "0" else _port(text)


def _status_name(text):
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
    common = _Parser(add_help=False)
    common.add_argument("--path", help="the store: a directory, or a postgresql:// URL "
                        "(default: $ENGINE_PATH or ./.engine)")
    common.add_argument("--durability", help="sync (default) or async")
    common.add_argument("--sleep-max-seconds", dest="sleep_max_seconds", metavar="SECONDS",
                        help="waits longer than this unload the execution (default 60)")
    common.add_argument("--lease-seconds", dest="lease_seconds", metavar="SECONDS",
                        help="how long a hung worker keeps its executions (default 30)")
    common.add_argument("--savepoint-retention", dest="savepoint_retention",
                        help="all (default) or last")
    common.add_argument("--concurrency", metavar="N",
                        help="executions run at once in each process (default 32)")
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
    p.add_argument("--id", help="the execution's id: if one has it already, nothing new "
                   "is started (idempotent start)")
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
        p = command(name, text, lambda a, n=name: steer(a, n), (common, listing, running))
        p.add_argument("id", help="execution id or a unique prefix")
        p.add_argument("savepoint", help="seq number or id (or name, see --by)")
        p.add_argument("--by", choices=("name", "id"),
                       help="how SAVEPOINT names it (default: seq or id, else name)")
        p.add_argument("--set", action="append", type=set_item, metavar="NAME=VALUE",
                       help="go on with this local changed: NAME of the innermost frame, "
                       "or FUNCTION.NAME; VALUE is JSON or a Python literal; repeatable "
                       "(kept as the savepoint 'edit of SEQ')")
        p.add_argument("--run", action="store_true",
                       help="then run that execution here until it ends or waits")
    p = command("diff", "what the locals did between two savepoints: changed, added, "
                "removed, frames entered and left (runs nothing)", cmd_diff,
                (common, listing))
    p.add_argument("id", help="execution id or a unique prefix")
    p.add_argument("savepoint_a", metavar="SAVEPOINT_A", help="seq number, id or name")
    p.add_argument("savepoint_b", metavar="SAVEPOINT_B", nargs="?",
                   help="compared with SAVEPOINT_A (default: SAVEPOINT_A is compared with "
                   "the savepoint before it)")
    p = command("shell", "a Python console on a savepoint's locals; save(name=value) "
                "restores the execution with them changed", cmd_shell)
    p.add_argument("id", help="execution id or a unique prefix")
    p.add_argument("savepoint", help="seq number, id or name")
    p = command("resume", "a PAUSED execution goes on (a sleeper at its wake time)",
                lambda a: steer(a, "resume"), (common, listing, running))
    p.add_argument("id", help="execution id or a unique prefix")
    p.add_argument("--run", action="store_true",
                   help="then run it here until it ends or waits")
    for name, text in (("delete", "delete an execution and all its savepoints (a running "
                                  "one is stopped first)"),
                       ("cancel", "end an execution (and its unfinished children) "
                                  "ENDED_CANCELLED"),
                       ("pause", "pause an execution until `engine resume`")):
        p = command(name, text, lambda a, n=name: steer(a, n))
        p.add_argument("id", help="execution id or a unique prefix")
    p = command("send", "send a message to an execution (this.receive(TOPIC) there gets it)",
                cmd_send)
    p.add_argument("id", help="execution id or a unique prefix")
    p.add_argument("topic")
    p.add_argument("value", metavar="JSON", help="the message, as JSON")
    p = command("schedule", "start a flow at each tick, once per tick across all workers "
                "(a worker pool starts them)", cmd_schedule, ())
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               parser_class=_Parser)
    add = actions.add_parser("add", help="add or replace a schedule", parents=[common])
    add.add_argument("name")
    add.add_argument("flow", metavar="FILE_OR_MODULE:FUNCTION")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", type=float, metavar="SECONDS", help="a tick every N s")
    when.add_argument("--cron", metavar="EXPR",
                      help='a 5-field cron expression in UTC, e.g. "*/5 * * * *"')
    add.add_argument("--inputs", metavar="JSON", help="the flow's inputs, as JSON")
    actions.add_parser("ls", help="list the schedules and their next tick",
                       parents=[common, listing])
    rm = actions.add_parser("rm", help="delete a schedule", parents=[common])
    rm.add_argument("name")
    p = command("worker", "run a pool of worker processes on the store (Ctrl-C or SIGTERM "
                "stops it cleanly)", cmd_worker)
    p.add_argument("-n", "--processes", type=_positive_int, default=2,
                   help="worker processes (default 2)")
    p.add_argument("--flows", nargs="+", default=[], metavar="MODULE_OR_FILE",
                   help="modules the flows need; one may have register(eng)")
    p.add_argument("--metrics-port", type=_port, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (needs "
                   "savepoint-engine[metrics])")
    p.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST",
                   help="the address the metrics are served on (default 0.0.0.0)")
    command("stats", "live workers (busy fraction, running and parked executions, "
            "calls/s) and the queue depth", cmd_stats,
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
    p = command("ui", "serve the Savepoints page: executions, their savepoints, Load, Fork "
                "and Inspect in a browser (needs savepoint-engine[ui])", cmd_ui)
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1; another than "
                   "loopback needs --token)")
    p.add_argument("--port", type=_port_or_any, default=8765,
                   help="the port (default 8765; 0: any free one)")
    p.add_argument("--token", help="every request must carry this access token "
                   "(default: $ENGINE_UI_TOKEN, else none: loopback only)")
    return top


def main(argv=None):
    # psycopg warns of the connections it recovers from -- a Ctrl-C in the middle of a
    # query leaves one its pool throws away -- on stderr, where the command's own error
    # is one line; a worker's log (logging configured) still has them
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    # modules are found as with `python -m`: the current directory first
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    args = parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()          # here, where a closed pipe is caught, not at exit
        return status
    except BrokenPipeError:
        # the reader went away (`engine ls -q | head -1`): stop quietly, as other
        # commands do; stdout goes to /dev/null so the interpreter's own flush at exit
        # cannot raise again (the recipe in the docs of the signal module)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (CommandError, EngineError, KeyError, ValueError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"engine: {text}", file=sys.stderr)
        return getattr(e, "status", EXIT_USAGE)
    except KeyboardInterrupt:
        print("engine: interrupted", file=sys.stderr)
        return Interrupted.status


