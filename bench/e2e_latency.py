"""bench_e2e's latency mode: event-to-outcome latency of the service at a steady event rate.

The service starts on empty topics and is ready (partitions assigned) before the first event.
Events then arrive at a fixed rate, paced by this process; a warm-up at the same rate comes
first and is left out of the figures (connections, the first calls, anything built lazily).
Latency is the outcome record's timestamp minus its event record's timestamp: both are
CreateTime stamped by producers on this machine, so one clock measures both. It is split at the
outcome's `received_at` (the service decoded the event) and `completed_at` (the result was
known): the wait to be read, the batch and the call, and the outcome's publishing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

import local_stack
from chaos_rig import Rig, say
from e2e_runs import backlog, cpu_seconds, fresh_run, wait_done
from kafka_tools import customer_key, read_to_end
from promo_bridge.kafka.producer import producer_options

WARM_UP_S = 3.0
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LatencyFigures:
    """Percentiles of event-to-outcome latency over the measured (not warm-up) events."""

    rate_per_s: float
    duration_s: float
    window_ms: int
    api_latency_ms: float
    outcomes: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cpu_share: float
    # The other processes on the machine over the same span, as shares of a core: what the
    # service competed with (on 2 cores, this script's producer and the broker weigh).
    alongside: dict[str, float]
    # Stage -> (p50, p99) in ms: to intake, intake to result, result to outcome record.
    stages: dict[str, tuple[float, float]]

    @property
    def bound_ms(self) -> float:
        """Issue 13's target for p99: the batch window + API latency + 50 ms."""
        return self.window_ms + self.api_latency_ms + 50

    def line(self) -> str:
        verdict = "within" if self.p99_ms <= self.bound_ms else "OVER"
        return (
            f"latency at {self.rate_per_s:,.0f} events/s for {self.duration_s:g} s"
            f" (window {self.window_ms} ms, API {self.api_latency_ms:g} ms):"
            f" p50 {self.p50_ms:,.0f} ms, p95 {self.p95_ms:,.0f} ms, p99 {self.p99_ms:,.0f} ms,"
            f" max {self.max_ms:,.0f} ms over {self.outcomes:,} outcomes;"
            f" p99 {verdict} the {self.bound_ms:g} ms target;"
            f" service CPU {self.cpu_share:.0%} of a core; p50/p99 by stage: "
            + ", ".join(
                f"{name} {p50:,.0f}/{p99:,.0f} ms" for name, (p50, p99) in self.stages.items()
            )
            + "; alongside: "
            + ", ".join(f"{name} {share:.0%}" for name, share in self.alongside.items())
        )


async def produce_paced(
    bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], rate: float
) -> None:
    """Send (key, value) records at `rate` per second, each stamped when it is sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options(idempotence=True))
    await producer.start()
    try:
        started = time.monotonic()
        sends = []
        for number, (key, value) in enumerate(values):
            # Due times from the start, not sleeps between sends: late sends catch up.
            delay_s = started + number / rate - time.monotonic()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            sends.append(await producer.send(topic, value, key))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def percentile(ordered: list[float], fraction: float) -> float:
    """The value at `fraction` of a sorted list (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def measure_latency(
    rig: Rig,
    rules_file: Path,
    *,
    rate_per_s: float,
    duration_s: float,
    window_ms: int,
    api_latency_ms: float,
) -> LatencyFigures:
    """Run the service at `rate_per_s` for `duration_s` after a warm-up; the latency figures."""
    bootstrap = rig.broker.bootstrap
    topics = await fresh_run(rig, f"e2e-latency-{rate_per_s:.0f}")
    await rig.admin("faults", {"latency_ms": api_latency_ms, "jitter_ms": 0})
    warm_up = round(rate_per_s * WARM_UP_S)
    events = backlog(topics.name, warm_up + round(rate_per_s * duration_s), matching=True)
    values = [(customer_key(e), json.dumps(e).encode()) for e in events]
    measured_ids = {str(e["id"]) for e in events[warm_up:]}

    settings = {**topics.service_settings(rules_file), "BATCH_WINDOW_MS": str(window_ms)}
    child = await rig.start_service(**settings)
    ready_url = f"http://127.0.0.1:{child.ops_port}/readyz"
    await asyncio.to_thread(local_stack.wait_http, ready_url, READY_TIMEOUT_S, child.proc)
    say(topics.name, f"service ready; {len(events)} events at {rate_per_s:g}/s")
    # The service first; the others are what it competed with for the cores.
    processes = {
        "service": child.proc.pid,
        "broker": rig.broker.pid,
        "simulator": rig.simulator_pid,
        "this script (producing)": os.getpid(),
    }
    processes = {name: pid for name, pid in processes.items() if pid}
    before_s = {name: cpu_seconds(pid) for name, pid in processes.items()}
    started = time.monotonic()
    await produce_paced(bootstrap, topics.input, values, rate_per_s)
    await wait_done(bootstrap, topics, len(events), child.proc)
    elapsed_s = time.monotonic() - started
    alongside = {
        name: (cpu_seconds(pid) - before_s[name]) / elapsed_s for name, pid in processes.items()
    }
    cpu_share = alongside.pop("service")
    local_stack.stop(child.proc, timeout_s=30)

    sent_ms = {
        (r.partition, r.offset): r.timestamp_ms or 0
        for r in await read_to_end(bootstrap, topics.input)
    }
    measured = [
        (doc, float(r.timestamp_ms or 0), float(sent_ms[(doc["partition"], doc["offset"])]))
        for r in await read_to_end(bootstrap, topics.output)
        if (doc := r.json())["event_id"] in measured_ids
    ]
    if not measured:
        raise RuntimeError("no outcome of a measured event: see the service log under .run/")
    latencies_ms = sorted(outcome_ms - sent for _, outcome_ms, sent in measured)
    splits = [
        (_epoch_ms(doc["received_at"]), _epoch_ms(doc["completed_at"]), outcome_ms, sent)
        for doc, outcome_ms, sent in measured
    ]
    # Every measured outcome, for a look at when the slow ones happened.
    with (rig.directory / f"{topics.name}.latency.csv").open("w") as out:
        out.write("sent_ms,latency_ms,read_ms,batch_call_ms,publish_ms\n")
        for received, completed, outcome_ms, sent in sorted(splits, key=lambda s: s[3]):
            out.write(
                f"{sent:.0f},{outcome_ms - sent:.0f},{received - sent:.0f},"
                f"{completed - received:.0f},{outcome_ms - completed:.0f}\n"
            )
    stages = {
        "read": sorted(received - sent for received, _, _, sent in splits),
        "batch+call": sorted(completed - received for received, completed, _, _ in splits),
        "publish": sorted(outcome_ms - completed for _, completed, outcome_ms, _ in splits),
    }
    return LatencyFigures(
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        window_ms=window_ms,
        api_latency_ms=api_latency_ms,
        outcomes=len(latencies_ms),
        p50_ms=percentile(latencies_ms, 0.50),
        p95_ms=percentile(latencies_ms, 0.95),
        p99_ms=percentile(latencies_ms, 0.99),
        max_ms=latencies_ms[-1],
        cpu_share=cpu_share,
        alongside=alongside,
        stages={
            name: (percentile(values, 0.50), percentile(values, 0.99))
            for name, values in stages.items()
        },
    )


def _epoch_ms(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() * 1000
