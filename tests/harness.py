"""Helpers for tests that run the whole service in-process against real parts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka_tools import create_topics
from promo_bridge.runtime import Service, build_service, run_service
from promo_bridge.settings import Settings
from promo_bridge.simulator import Simulator, serve

RULES_ENROL_BIG_SPENDERS = """\
program_id: 2714
promotions:
  big-spender: {promotion_id: 202779, type: ENROL_AND_ISSUE}
rules:
  - name: enrol-big-spenders
    on: order.placed
    when: "event.data.total.amount >= 5000.0"
    then: [{enrol: big-spender}]
"""


def order_placed(customer_id: str, amount: float, *, event_id: str | None = None) -> dict[str, Any]:
    """An order.placed CloudEvent for one customer."""
    return {
        "specversion": "1.0",
        "id": event_id or f"evt-order-{customer_id}",
        "source": "/shop/checkout",
        "type": "order.placed",
        "time": "2026-11-21T10:00:00Z",
        "subject": customer_id,
        "data": {
            "order_id": f"o-{customer_id}",
            "placed_at": "2026-11-21T10:00:00Z",
            "store": "s-42",
            "customer": {"id": customer_id, "source": "INSTORE"},
            "total": {"amount": amount, "currency": "INR"},
            "items": [
                {
                    "sku": "SKU-1",
                    "category": "shoes",
                    "quantity": 1,
                    "amount": {"amount": amount, "currency": "INR"},
                }
            ],
        },
    }


def write_rules(directory: Path, text: str = RULES_ENROL_BIG_SPENDERS) -> Path:
    """Write a rules file and return its path."""
    path = directory / "rules.yaml"
    path.write_text(text)
    return path


def service_settings(
    *,
    bootstrap: str,
    api_url: str,
    rules_file: Path,
    unique: str,
    topics: list[str],
    **overrides: Any,
) -> Settings:
    """Settings for an in-process service on test-specific topics and group."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "group_id": f"pb-{unique}",
        "input_topics": topics,
        "outcomes_topic": f"outcomes-{unique}",
        "dlq_topic": f"dlq-{unique}",
        "rules_file": rules_file,
        "capillary_base_url": api_url,
        # The simulator serves plain HTTP unless a test serves it over TLS.
        "capillary_allow_http": api_url.startswith("http://"),
        "capillary_till_code": "store.server",
        "capillary_password": "server123",
        "http_port": 0,
        "commit_interval_ms": 200,
        # Verifying lost answers after a kill looks customers up one by one.
        "capillary_lookup_calls_per_minute": 6000,
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Rig:
    """One test's topics on the session broker and its simulator over HTTP (the `rig` fixture).

    Everything `prepare` starts stops when the test ends.
    """

    bootstrap: str
    unique: str
    directory: Path
    exits: contextlib.AsyncExitStack = field(repr=False)

    @property
    def topic(self) -> str:
        """The test's input topic."""
        return f"events-{self.unique}"

    async def prepare(
        self,
        sim: Simulator,
        *,
        partitions: int,
        rules: str = RULES_ENROL_BIG_SPENDERS,
        **overrides: Any,
    ) -> Settings:
        """Write `rules`, create the topics, serve `sim`; Settings for a service on all of them.

        The input and outcomes topics get `partitions` partitions, the DLQ one; `overrides` are
        Settings fields on top of `service_settings`.
        """
        api = await self.exits.enter_async_context(serve(sim))
        settings = service_settings(
            bootstrap=self.bootstrap,
            api_url=api.base_url,
            rules_file=write_rules(self.directory, rules),
            unique=self.unique,
            topics=[self.topic],
            **overrides,
        )
        await create_topics(
            self.bootstrap,
            {self.topic: partitions, settings.outcomes_topic: partitions, settings.dlq_topic: 1},
        )
        return settings


@contextlib.asynccontextmanager
async def running_service(settings: Settings, timeout_s: float = 60) -> AsyncIterator[Service]:
    """Start the service in this event loop; stop it gracefully on exit."""
    service = build_service(settings)
    task = asyncio.create_task(run_service(service, install_signals=False))
    started = asyncio.create_task(service.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=timeout_s, return_when="FIRST_COMPLETED")
    if task in done:
        started.cancel()
        task.result()
        raise RuntimeError("service stopped during start-up")
    if started not in done:
        started.cancel()
        task.cancel()
        raise TimeoutError("service did not start")
    try:
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, timeout_s)
