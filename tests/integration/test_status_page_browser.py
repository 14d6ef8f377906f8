"""The /status page of a running service, rendered by headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import end_offsets, produce
from promo_bridge.simulator import Credentials, Simulator
from runtime_support import encode, probe, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / ".run" / "artifacts" / "status.png"
# Machines without apt (a laptop, another distribution) may opt out; CI must not.
NO_BROWSER_ENV = "PROMO_BRIDGE_TEST_NO_BROWSER"
EVENTS = 40


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is not None:
        return found
    if os.environ.get(NO_BROWSER_ENV) == "1":
        pytest.skip(f"chromium not installed and {NO_BROWSER_ENV}=1")
    pytest.fail(
        "chromium is not installed: `apt-get install -y chromium` (Debian), or set"
        f" {NO_BROWSER_ENV}=1 to skip the browser test on a machine without apt"
    )


async def _chromium_run(binary: str, profile: Path, *args: str) -> str:
    # The service serves the page from this event loop: the browser must run beside it, not
    # block it.
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def test_status_page_in_chromium_shows_live_partitions_and_pending_counts(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path
) -> None:
    """Refused credentials hold commands: the rendered page lists both partitions, the pending
    count, the auth pause and the poison record's DLQ entry, with no customer identifier."""
    browser = _chromium()
    sim = Simulator(credentials=Credentials(password="rotated-elsewhere"))
    settings = await rig.prepare(sim, partitions=2, batch_window_ms=50, unavailable_retry_s=0.5)
    topic = rig.topic
    records = encode([order_placed(str(840_000 + i), 6000.0) for i in range(EVENTS)], topic)
    records.append((topic, b"840999", b'<b>not json</b> "840999"'))
    await produce(kafka_bootstrap, records)
    ends = {
        tp.partition: offset for tp, offset in (await end_offsets(kafka_bootstrap, [topic])).items()
    }
    last: list[dict[str, Any]] = []

    async with running_service(settings) as service:
        port = service.ops_port
        assert port is not None
        url = f"http://127.0.0.1:{port}/status"

        async def held_and_paused() -> bool:
            _, data = await probe(port, "/status.json")
            last[:] = [data]
            return (
                data["pause_reason"] == "auth"
                and data["pending"] > 0
                and len(data["partitions"]) == 2
                and all(p["paused"] for p in data["partitions"])
                and len(data["recent_dead_letters"]) == 1
            )

        await wait_until(held_and_paused, timeout_s=30, what="auth pause with pending commands")
        dom = await _chromium_run(browser, tmp_path / "profile", "--dump-dom", url)
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        await _chromium_run(browser, tmp_path / "profile", f"--screenshot={ARTIFACT}", url)
        _, after = await probe(port, "/status.json")

    print(f"status page screenshot: {ARTIFACT}")
    data = last[0]
    # Paused and refused: nothing moves, so the page and the JSON around it agree.
    assert after["pending"] == data["pending"]
    assert f'<span id="pending">{data["pending"]}</span>' in dom
    assert "yes: auth" in dom
    for partition in (0, 1):
        assert f'id="partition-{topic}-{partition}"' in dom
    # Nothing committed yet: the lag is the whole partition, as the consumer sees it.
    assert {p["partition"]: p["lag"] for p in data["partitions"]} == ends
    (letter,) = data["recent_dead_letters"]
    assert f"<td>{topic}</td>" in dom
    assert f'<td class="num">{letter["offset"]}</td>' in dom
    assert "<b>" not in dom.split("<body>", 1)[1]
    assert not any(str(840_000 + i) in dom for i in range(EVENTS))
    assert ARTIFACT.stat().st_size > 0
