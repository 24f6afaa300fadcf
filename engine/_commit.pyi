"""Type stubs for the store's per-call commit path (ext/_commit.pyx)."""
from types import CodeType
from typing import Any, Iterable, Mapping

from engine._codec import Signer

def version_after(execution: dict[str, Any]) -> int: ...
def try_commit(env: Any, db: Any, known: dict[str, set[int]], execution: dict[str, Any],
               meta: dict[str, Any], record: bytes, codes: Iterable[CodeType],
               chunks: Mapping[bytes, bytes] | None, retention: str,
               signer: Signer) -> int | None: ...
