"""What the `engine` command prints: tables that fit the terminal, times with their zone,
and the plain dicts --json prints (engine.shapes)."""
import datetime
import json
import os
import shutil
import sys

# the dicts --json prints are the API's too (engine.shapes); the commands import them here
from engine.shapes import (change_dict, execution_dict, frame_dict, iso,  # noqa: F401
                           savepoint_dict, short, type_shown)


def text_of(value):
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
    cells = [[text_of(row.get(c)).replace("\n", " ") for c in columns] for row in rows]
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


def log_lines(log, args):
    return [f"{when(at, args, precise=True) or '-':<31} {text}" for at, text in log]
