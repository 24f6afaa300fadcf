"""restore's and fork's --set NAME=VALUE: the locals to change before the execution goes
on (Engine.restore/fork set_locals)."""
import argparse
import ast
import json


def set_item(text):
    """--set NAME=VALUE as (NAME, value): VALUE is JSON, or else a Python literal."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE, not {text!r}")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        pass
    try:
        return name.strip(), ast.literal_eval(value.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise argparse.ArgumentTypeError(
            f"{text!r}: VALUE must be JSON or a Python literal (text needs quotes: "
            f"{name.strip()}='\"...\"')") from None


def set_locals_of(args):
    """The set_locals the --set options of a restore or fork ask for (None: no --set)."""
    items = getattr(args, "set", None)
    if not items:
        return None
    names = [name for name, _ in items]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"--set names {', '.join(twice)} more than once")
    return dict(items)
