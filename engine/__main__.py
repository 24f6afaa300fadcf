"""The `engine` command (also `python -m engine`).

    engine worker -n N [--path DIR] [--durability sync|async] --flows MODULE_OR_FILE ...

Runs a pool of N worker processes on the store until SIGTERM or Ctrl-C.  Each --flows
names a module (or a .py file) to import in the workers: the flows themselves, and, if it
has one, its register(eng), which adds the connectors.
"""
import argparse
import importlib
import logging
import os
import sys


def _module_name(spec):
    """A module name for a module name or a path to a .py file (its folder joins
    sys.path, as for a script)."""
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        sys.path.insert(0, os.path.dirname(path))
        return os.path.splitext(os.path.basename(path))[0]
    return spec


def worker(args):
    from engine import Engine
    names = [_module_name(spec) for spec in args.flows]
    for name in names:
        importlib.import_module(name)            # fail here, clearly, not in the workers
    with Engine(args.path, durability=args.durability,
                lease_seconds=args.lease_seconds) as eng:
        registering = [n for n in names if hasattr(sys.modules[n], "register")]
        if len(registering) > 1:
            raise SystemExit("engine worker: more than one --flows module has register(eng)")
        eng.work(processes=args.processes,
                 connectors=registering[0] if registering else None)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="engine", description="savepoint-engine")
    commands = parser.add_subparsers(dest="command", required=True)
    work = commands.add_parser("worker", help="run a pool of worker processes")
    work.add_argument("-n", "--processes", type=int, default=2)
    work.add_argument("--path", default=None, help="the store (default $ENGINE_PATH or "
                                                   "./.engine)")
    work.add_argument("--durability", choices=("sync", "async"), default="sync")
    work.add_argument("--lease-seconds", type=float, default=30.0)
    work.add_argument("--flows", nargs="+", default=[], metavar="MODULE_OR_FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return worker(args)
    except (ImportError, ValueError) as e:
        print(f"engine: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
