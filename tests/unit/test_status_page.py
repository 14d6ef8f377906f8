"""The /status page and /status.json: escaping, empty state, and what feeds them."""

from __future__ import annotations

import asyncio
import re

import httpx
from capillary_fakes import FakeClock
from starlette.applications import Starlette
from test_pipeline import FakeSender, FakeSink, make_pipeline, record, until

from harness import order_placed
from promo_bridge.capillary._limiter import CallBudget
from promo_bridge.domain.commands import Batch
from promo_bridge.domain.outcomes import CommandResult, Delivery, ErrorClass, OutcomeStatus
from promo_bridge.observability.http import Readiness, create_ops_app
from promo_bridge.observability.metrics import Metrics
from promo_bridge.observability.status import (
    RECENT_LIMIT,
    BudgetUse,
    DeadLetterNote,
    OutcomeNote,
    PartitionStatus,
    StatusSnapshot,
    render_html,
    status_json,
)

HOSTILE = '<script>alert("x")</script>&'


def _empty() -> StatusSnapshot:
    return StatusSnapshot(
        ready=False,
        checks={"partitions_assigned": False},
        pause_reason=None,
        pending=0,
        pending_dead_letter_bytes=0,
    )


def _busy() -> StatusSnapshot:
    return StatusSnapshot(
        ready=True,
        checks={"partitions_assigned": True},
        pause_reason="auth",
        pending=7,
        pending_dead_letter_bytes=42,
        partitions=[
            PartitionStatus("orders", 0, highwater=10, committed=4, paused=True),
            PartitionStatus("orders", 1, highwater=None, committed=None, paused=False),
        ],
        budgets=[BudgetUse("enrolAndEarn", 3, 600)],
        recent_outcomes=[OutcomeNote("cmd-1", HOSTILE, "earn", "rejected", "rejected", HOSTILE)],
        recent_dead_letters=[DeadLetterNote(HOSTILE, 2, 99, HOSTILE)],
    )


def test_every_value_on_the_page_is_escaped() -> None:
    """Rule names, messages, topics and reasons come from outside: none reaches the page raw."""
    page = render_html(_busy())
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert page.count("&lt;script&gt;") == 4


def test_the_page_is_self_contained_and_refreshes_itself() -> None:
    """No script, no external asset; a meta refresh every 5 s."""
    page = render_html(_busy())
    assert '<meta http-equiv="refresh" content="5">' in page
    assert not re.search(r"\b(src|href)=", page)
    assert "<style>" in page


def test_an_empty_service_renders_placeholders() -> None:
    """Before any assignment: every section says it is empty rather than vanishing."""
    page = render_html(_empty())
    assert "no partitions assigned" in page
    assert "no budget figures" in page
    assert page.count('<p class="empty">none</p>') == 2
    assert '<span id="pending">0</span>' in page


def test_the_json_carries_the_page_data_with_lag() -> None:
    """Lag is highwater minus committed, None while either is unknown."""
    data = status_json(_busy())
    assert [p["lag"] for p in data["partitions"]] == [6, None]
    assert data["pending"] == 7
    assert data["pause_reason"] == "auth"
    assert data["budgets"] == [{"endpoint": "enrolAndEarn", "used": 3, "limit": 600}]
    assert data["recent_dead_letters"][0]["offset"] == 99


async def test_the_ops_app_serves_status_only_when_given_a_source() -> None:
    """/status is HTML, /status.json JSON, neither cached; without a source both are 404."""
    ready = Readiness(ready=True, reasons={})

    def client(app: Starlette) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ops")

    async with client(create_ops_app(Metrics(), lambda: ready, _busy)) as ops:
        page = await ops.get("/status")
        data = await ops.get("/status.json")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert 'id="partition-orders-0"' in page.text
    assert data.json()["pending"] == 7
    async with client(create_ops_app(Metrics(), lambda: ready)) as ops:
        assert (await ops.get("/status")).status_code == 404
        assert (await ops.get("/status.json")).status_code == 404


async def test_the_pipeline_keeps_the_last_refusals_and_non_applied_outcomes() -> None:
    """Rejections and DLQ records are remembered, bounded, without the customer identifier."""
    sender, sink = FakeSender(), FakeSink()

    def reject(batch: Batch) -> Delivery:
        return Delivery(
            completed=tuple(
                CommandResult(
                    c.command_id,
                    OutcomeStatus.REJECTED,
                    error_class=ErrorClass.REJECTED,
                    error_message="customer blocked",
                    batch_id=batch.batch_id,
                )
                for c in batch.commands
            )
        )

    sender.failures.append(reject)
    engine = make_pipeline(sender, sink)
    dispatcher = asyncio.create_task(engine.run_dispatcher())
    try:
        bad = [record(offset, b"{not json") for offset in range(RECENT_LIMIT + 5)]
        engine.accept([*bad, record(RECENT_LIMIT + 5, order_placed("123456789", 6000.0))])
        await until(lambda: len(sink.outcomes) == 1 and len(sink.letters) == RECENT_LIMIT + 5)
    finally:
        dispatcher.cancel()
        await engine.aclose()
    letters = list(engine.recent_dead_letters)
    assert len(letters) == RECENT_LIMIT
    assert letters[-1].offset == RECENT_LIMIT + 4
    (note,) = engine.recent_outcomes
    assert note.command_id == sink.outcomes[0].command_id
    assert (note.status, note.reason, note.error_message) == (
        "rejected",
        "rejected",
        "customer blocked",
    )
    assert "123456789" not in repr(note)
    assert engine.pending_dead_letter_bytes == 0


async def test_budget_use_counts_calls_in_flight_and_in_the_window() -> None:
    """A call counts from its start until a window after its answer, as the budget enforces."""
    clock = FakeClock(start=0.0)
    budget = CallBudget(5, 10.0, burst=5, clock=clock, sleep=clock.sleep)
    first, second = await budget.acquire(), await budget.acquire()
    assert (budget.used(), budget.calls) == (2, 5)
    first.release()
    second.cancel()
    assert budget.used() == 1
    clock.now = 10.5
    assert budget.used() == 0
