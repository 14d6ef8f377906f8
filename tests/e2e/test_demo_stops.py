"""`make run` stopped by SIGTERM (a cancelled job, `timeout`) stops all it started, quietly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from runtime_support import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces: fields start after its closing parenthesis.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    """The processes started, directly or not, by `pid`."""
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    # A zombie is gone in all but name (its parent has not reaped it yet).
    return status.exists() and status.read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_sigterm_during_the_demo_leaves_no_process_and_no_traceback() -> None:
    """SIGTERM once broker, simulator and service run: exit 130, all of them gone, no traceback."""
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "demo.py"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert demo.stdout is not None
    head: list[bytes] = []
    try:
        # The service is the last thing the demo starts: once it answers, all three run.
        async with asyncio.timeout(120):
            while b"  service  ops" not in (line := await demo.stdout.readline()):
                assert line, b"".join(head).decode(errors="replace")
                head.append(line)
        started = descendants(demo.pid)
        demo.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(demo.communicate(), 90)
        await wait_until(
            lambda: not any(alive(pid) for pid in started),
            timeout_s=30,
            what="every process the demo started gone",
        )
    finally:
        if demo.returncode is None:
            demo.kill()
    output = b"".join(head) + rest
    text = output.decode(errors="replace")
    assert len(started) >= 3, text
    assert demo.returncode == 130, text[-2000:]
    assert "Traceback" not in text, text[-6000:]
    assert "interrupted" in text
