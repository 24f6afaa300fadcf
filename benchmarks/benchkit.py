"""What the benchmarks made of parts share: the command line (--json, --quick, --only),
running the parts asked for (one that fails is reported as "<part>_error" and the
others still run), and the lines of the table."""
import argparse
import importlib.util
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pgcluster():
    """tests/support/pgcluster.py, imported by its path (it is the tests' harness)."""
    spec = importlib.util.spec_from_file_location(
        "pgcluster", os.path.join(ROOT, "tests", "support", "pgcluster.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_parts(parts, funcs, *args):
    """{figure: value} of each (part, func) in ``funcs`` whose part is asked for:
    func(*args) returns its figures."""
    result = {}
    for part, func in funcs:
        if part in parts:
            try:
                result.update(func(*args))
            except Exception as e:
                result[f"{part}_error"] = f"{type(e).__name__}: {e}"
    return result


def table(result, targets):
    """A function printing one line of the table: a figure of ``result`` (if it is
    there) with its unit, and its target if it has one."""
    def line(label, key, unit="", extra=""):
        if key in result:
            target = f"(target {targets[key]})" if key in targets else ""
            print(f"  {label:<44} {result[key]!s:>10} {unit:<4} {target} {extra}".rstrip())
    return line


def print_header(title, result, parts, quick):
    """The table's first lines: what is measured, on what, and the parts that failed."""
    print(f"{title}, CPython {sys.version.split()[0]}, {os.cpu_count()} cores"
          f"{', --quick sizes' if quick else ''}")
    for part in parts:
        if f"{part}_error" in result:
            print(f" {part}: FAILED: {result[f'{part}_error']}")


def main(doc, parts, sizes, measure, report, argv=None, options=()):
    """The command: ``measure(size, parts, args)`` -> result; printed as one JSON object
    (--json) or by ``report(result, size, quick)``.  ``options``: more (flags, keywords)
    of parser.add_argument."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes (to try the script; ratios are noisier)")
    parser.add_argument("--only", default=",".join(parts),
                        help=f"comma-separated parts to run, of {','.join(parts)}")
    for flags, keywords in options:
        parser.add_argument(*flags, **keywords)
    args = parser.parse_args(argv)
    asked = set(args.only.split(","))
    if not asked <= set(parts):
        parser.error(f"--only takes {','.join(parts)}")
    size = {key: values[1 if args.quick else 0] for key, values in sizes.items()}
    t0 = time.perf_counter()
    result = measure(size, asked, args)
    result["bench_seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result))
        return
    report(result, size, args.quick)
    print(f"  (the whole benchmark took {result['bench_seconds']:.0f} s)")
