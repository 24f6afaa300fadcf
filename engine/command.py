"""The source text of the call a savepoint was taken at (a savepoint's "command"), read
from the innermost frame's code positions."""
import linecache
from typing import Any


# (id(code), offset) -> (code, source text); the code keeps the id.  Bounded: a
# long-lived worker meets ever new code objects (each restored savepoint pins its own)
_commands: dict[tuple[int, int], tuple[Any, str | None]] = {}
COMMAND_CACHE_SIZE = 4096


def command(frame):
    """The source text of the call the innermost frame waits on (co_positions)."""
    code = frame.code
    found = _commands.get((id(code), frame.offset))
    if found is not None and found[0] is code:
        return found[1]
    text = _command_text(code, frame.offset)
    if len(_commands) >= COMMAND_CACHE_SIZE:
        _commands.clear()                 # cheap to rebuild: one co_positions() each
    _commands[(id(code), frame.offset)] = (code, text)
    return text


def _command_text(code, offset):
    positions = list(code.co_positions())
    unit = offset // 2
    start, end, col, end_col = positions[unit] if unit < len(positions) else (None,) * 4
    if start is None or col is None:
        return None
    lines = linecache.getlines(code.co_filename)
    if not lines or end > len(lines):
        return None
    if start == end:
        text = lines[start - 1].encode()[col:end_col].decode(errors="replace")
    else:
        first = lines[start - 1].encode()[col:].decode(errors="replace")
        last = lines[end - 1].encode()[:end_col].decode(errors="replace")
        text = first + "".join(lines[start:end - 1]) + last
    return text.strip()
