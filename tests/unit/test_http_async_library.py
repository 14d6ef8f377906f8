"""httpx's per-request check of the async library is a look-up, not an import search (issue 13).

httpcore asks `current_async_library()` (which imports sniffio) four times a request. Without
sniffio installed, every call searched sys.path for it afresh: about a quarter of httpx's CPU
per bulk call. The function is httpcore's private one; if it goes, this test says so.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

from httpcore._synchronization import current_async_library


class _FinderLog(importlib.abc.MetaPathFinder):
    """Records every module the import system searches for, and finds none of them."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        self.searched.append(fullname)
        return None


async def test_async_library_check_searches_for_no_module() -> None:
    """httpcore's async-library check, as each request makes it, imports nothing anew."""
    assert current_async_library() == "asyncio"
    finders = _FinderLog()
    sys.meta_path.insert(0, finders)
    try:
        for _ in range(4):
            assert current_async_library() == "asyncio"
    finally:
        sys.meta_path.remove(finders)
    assert finders.searched == []
