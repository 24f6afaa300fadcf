"""Type stubs for the LMDB store's savepoint commit (ext/_commit.pyx)."""
from types import CodeType
from typing import Any, Iterable, Mapping, final

from engine._codec import Signer

def version_after(execution: dict[str, Any]) -> int: ...

@final
class SavepointLayout:
    @property
    def meta_fields(self) -> tuple[str, ...]: ...
    @property
    def state_fields(self) -> tuple[str, ...]: ...
    def __init__(self, meta_fields: tuple[str, ...],
                 state_fields: tuple[str, ...]) -> None: ...
    def seal(self, execution: dict[str, Any], meta: dict[str, Any], record: bytes,
             chunks: list[bytes], version: int,
             signer: Signer) -> tuple[bytes, int, list[Any]]: ...
    def apply(self, execution: dict[str, Any], state: list[Any]) -> None: ...

def try_commit(layout: SavepointLayout, env: Any, db: Any, known: dict[str, set[int]],
               execution: dict[str, Any], meta: dict[str, Any], record: bytes,
               codes: Iterable[CodeType], chunks: Mapping[bytes, bytes] | None,
               retention: str, signer: Signer) -> int | None: ...
