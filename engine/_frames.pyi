"""Type stubs for the frame core (ext/_frames.pyx)."""
from types import CodeType, FunctionType
from typing import Any, Callable, Sequence

class EmptySlot: ...

EMPTY: EmptySlot

class Unwind(BaseException): ...

class Root:
    @property
    def active(self) -> bool: ...

class Frame:
    func: FunctionType
    code: CodeType
    offset: int
    locals: tuple[Any, ...]
    stack: tuple[Any, ...]
    exc: BaseException | None
    def __init__(self, func: FunctionType, code: CodeType, offset: int,
                 locals: tuple[Any, ...], stack: tuple[Any, ...],
                 exc: BaseException | None = ...) -> None: ...
    @property
    def line(self) -> int: ...

def capture(root: Root, api: object = ...) -> tuple[Frame, ...]: ...
def resume(root: Root, frames: Sequence[Frame], value: Any = ..., *,
           throw: bool = ...) -> Any: ...
def run(root: Root, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...
def stack_table(code: CodeType) -> dict[int, int]: ...
