"""The pipeline engine with fakes at its edges: records in, outcomes out, watermark forward."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import RULES_ENROL_BIG_SPENDERS, order_placed
from kafka_tools import customer_key
from promo_bridge._cli_replay import simulate
from promo_bridge.domain.commands import Batch
from promo_bridge.domain.dead_letters import DeadLetterRecord
from promo_bridge.domain.flow import Flow, FlowConfig, PauseReason
from promo_bridge.domain.ledger import StateRecord
from promo_bridge.domain.outcomes import CommandResult, Delivery, OutcomeRecord, OutcomeStatus
from promo_bridge.domain.rules import RuleSet
from promo_bridge.observability.metrics import Metrics
from promo_bridge.pipeline import (
    BeforeRequest,
    CommandSender,
    InputRecord,
    Pipeline,
    PipelineConfig,
)
from runtime_support import wait_until

TOPIC = "orders"
ROOT = Path(__file__).resolve().parents[2]


class FakeSender:
    """Answers every command `applied`, unless a scripted failure is queued."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.failures: list[Callable[[Batch], Delivery]] = []

    async def send(self, batch: Batch, *, before_request: BeforeRequest | None = None) -> Delivery:
        self.batches.append(batch)
        if before_request is not None:
            await before_request(batch.commands)
        if self.failures:
            return self.failures.pop(0)(batch)
        return Delivery(
            completed=tuple(
                CommandResult(c.command_id, OutcomeStatus.APPLIED, batch_id=batch.batch_id)
                for c in batch.commands
            )
        )


class FakeSink:
    """Collects what would be published."""

    def __init__(self) -> None:
        self.outcomes: list[OutcomeRecord] = []
        self.letters: list[DeadLetterRecord] = []
        self.state: list[StateRecord] = []
        # As a broker does with a record larger than the topic takes.
        self.refuse_letters = False

    async def publish_outcomes(self, records: Sequence[OutcomeRecord]) -> list[int]:
        self.outcomes.extend(records)
        return []

    async def publish_state(self, records: Sequence[StateRecord]) -> None:
        self.state.extend(records)

    async def publish_dead_letter(
        self, record: DeadLetterRecord, *, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> bool:
        if self.refuse_letters:
            return False
        self.letters.append(record)
        return True


def record(offset: int, event: dict[str, Any] | bytes) -> InputRecord:
    """A record keyed by customer, as producers are asked to key them."""
    if isinstance(event, bytes):
        return InputRecord(TOPIC, 0, offset, b"k", event, (("h", b"v"),), 1)
    value = json.dumps(event).encode()
    return InputRecord(TOPIC, 0, offset, customer_key(event), value, (("h", b"v"),), 1)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    await wait_until(condition, timeout_s=timeout_s, what="pipeline condition", interval_s=0.005)


def make_pipeline(
    sender: CommandSender,
    sink: FakeSink,
    *,
    window_ms: int = 0,
    rules: str = RULES_ENROL_BIG_SPENDERS,
) -> Pipeline:
    return Pipeline(
        flow=Flow(
            RuleSet.from_yaml(rules), FlowConfig(window_ms=window_ms, unavailable_retry_s=0.01)
        ),
        sender=sender,
        sink=sink,
        metrics=Metrics(),
        config=PipelineConfig(publish_retry_s=0.01),
    )


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
async def pipeline(sender: FakeSender, sink: FakeSink) -> AsyncIterator[Pipeline]:
    engine = make_pipeline(sender, sink)
    task = asyncio.create_task(engine.run_dispatcher())
    yield engine
    task.cancel()
    await engine.aclose()


async def test_outcomes_move_the_watermark(pipeline: Pipeline, sink: FakeSink) -> None:
    """Each command's outcome is published and the offset after the last event is committable."""
    pipeline.accept([record(0, order_placed("1", 6000.0)), record(1, order_placed("2", 9000.0))])
    await until(lambda: len(sink.outcomes) == 2)
    assert {o.identifier_value for o in sink.outcomes} == {"1", "2"}
    assert pipeline.committable() == {(TOPIC, 0): 2}
    assert pipeline.pending == 0


async def test_event_without_commands_completes_at_once(pipeline: Pipeline, sink: FakeSink) -> None:
    """An event no rule matches moves the watermark without any call."""
    pipeline.accept([record(0, order_placed("1", 10.0))])
    assert pipeline.committable() == {(TOPIC, 0): 1}
    assert sink.outcomes == []


async def test_poison_goes_to_dlq_and_offset_advances(pipeline: Pipeline, sink: FakeSink) -> None:
    """An undecodable record becomes one DLQ record with its reason and position."""
    pipeline.accept([record(0, b"{not json"), record(1, order_placed("1", 6000.0))])
    await until(lambda: len(sink.letters) == 1 and len(sink.outcomes) == 1)
    letter = sink.letters[0]
    assert letter.source_offset == 0
    assert letter.value_text == "{not json"
    assert "JSON" in letter.reason
    assert pipeline.committable() == {(TOPIC, 0): 2}


async def test_a_dead_letter_the_broker_refuses_is_counted_and_the_offset_moves_on(
    sink: FakeSink,
) -> None:
    """A DLQ record refused for good is not retried for ever: counted, logged, offset passes."""
    sink.refuse_letters = True
    metrics = Metrics()
    engine = Pipeline(
        flow=Flow(RuleSet.from_yaml(RULES_ENROL_BIG_SPENDERS), FlowConfig(window_ms=0)),
        sender=FakeSender(),
        sink=sink,
        metrics=metrics,
    )
    engine.accept([record(0, b"{not json")])
    await until(lambda: engine.committable() == {(TOPIC, 0): 1})
    assert sink.letters == []
    assert metrics.dlq_refused.labels(TOPIC)._value.get() == 1
    assert metrics.dlq_records.labels(TOPIC)._value.get() == 0
    assert engine.pending == 0
    await engine.aclose()


class GatedSink(FakeSink):
    """A sink whose DLQ sends wait for a gate, counting how many are out at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.out = 0
        self.most_out = 0

    async def publish_dead_letter(
        self, record: DeadLetterRecord, *, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> bool:
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        await self.gate.wait()
        self.out -= 1
        return await super().publish_dead_letter(record, key=key, headers=headers)


async def test_a_burst_of_bad_records_is_dead_lettered_a_chunk_at_a_time() -> None:
    """250 refused records: at most one chunk of DLQ sends is out; all land, in order."""
    sink = GatedSink()
    engine = Pipeline(
        flow=Flow(RuleSet.from_yaml(RULES_ENROL_BIG_SPENDERS), FlowConfig(window_ms=0)),
        sender=FakeSender(),
        sink=sink,
        metrics=Metrics(),
        config=PipelineConfig(dead_letter_chunk=100),
    )
    engine.accept([record(offset, b"{not json") for offset in range(250)])
    await until(lambda: sink.out == 100)
    sink.gate.set()
    await until(lambda: engine.committable() == {(TOPIC, 0): 250})
    assert sink.most_out == 100
    assert [letter.source_offset for letter in sink.letters] == list(range(250))
    await engine.aclose()


def test_large_bad_records_held_for_the_dlq_pause_the_partitions_by_bytes() -> None:
    """Refused records count in bytes: at the byte bound the core asks for a pause."""
    flow = Flow(
        RuleSet.from_yaml(RULES_ENROL_BIG_SPENDERS),
        FlowConfig(window_ms=0, max_pending_bytes=3 * 1024 * 1024),
    )
    big = b"{" + b"x" * (1024 * 1024)
    intake = flow.accept([record(offset, big) for offset in range(3)], 0.0, datetime.now(UTC))
    assert flow.pause_reason() is PauseReason.BACKPRESSURE
    assert flow.pending == 3
    for refusal in intake.refused[:2]:
        flow.dead_letter_published(refusal)
    assert flow.pause_reason() is None
    assert flow.pending_bytes < 2 * 1024 * 1024


async def test_unavailable_keeps_pending_and_publishes_completed(
    pipeline: Pipeline, sender: FakeSender, sink: FakeSink
) -> None:
    """Settled results are published, the rest is resent later; nothing is marked failed."""

    def partial(batch: Batch) -> Delivery:
        first, *rest = batch.commands
        done = CommandResult(first.command_id, OutcomeStatus.APPLIED)
        return Delivery(completed=(done,), pending=tuple(rest), detail="down")

    sender.failures.append(partial)
    pipeline.accept([record(i, order_placed(str(i), 6000.0)) for i in range(3)])
    await until(lambda: len(sink.outcomes) == 3)
    assert len(sender.batches) == 2
    assert len(sender.batches[1].commands) == 2
    assert {o.status for o in sink.outcomes} == {OutcomeStatus.APPLIED}
    assert len({o.command_id for o in sink.outcomes}) == 3


async def test_auth_failure_pauses_then_recovers(
    pipeline: Pipeline, sender: FakeSender, sink: FakeSink
) -> None:
    """Refused credentials flag the pipeline and keep the batch; the next success clears it."""
    flagged_at_resend: list[bool] = []
    answer = sender.send

    async def observing_send(batch: Batch, *, before_request: BeforeRequest | None) -> Delivery:
        if sender.batches:
            flagged_at_resend.append(pipeline.auth_failed)
        return await answer(batch, before_request=before_request)

    sender.send = observing_send  # type: ignore[method-assign]
    sender.failures.append(lambda batch: Delivery(pending=batch.commands, auth_refused=True))
    pipeline.accept([record(0, order_placed("1", 6000.0))])
    await until(lambda: len(sink.outcomes) == 1)
    assert flagged_at_resend == [True]
    assert not pipeline.auth_failed
    assert sink.outcomes[0].status is OutcomeStatus.APPLIED


async def test_redelivered_event_is_sent_once(
    pipeline: Pipeline, sender: FakeSender, sink: FakeSink
) -> None:
    """The same event twice while pending makes one call and one outcome."""
    event = order_placed("1", 6000.0)
    pipeline.accept([record(0, event), record(1, event)])
    await until(lambda: len(sink.outcomes) == 1)
    await until(lambda: pipeline.committable() == {(TOPIC, 0): 2})
    assert sum(len(b.commands) for b in sender.batches) == 1


async def test_drain_finishes_everything(sender: FakeSender, sink: FakeSink) -> None:
    """drain() flushes buckets whose window has not expired and waits for their outcomes."""
    engine = make_pipeline(sender, sink, window_ms=3_600_000)
    engine.accept([record(i, order_placed(str(i), 6000.0)) for i in range(5)])
    assert await engine.drain(None, timeout_s=5)
    assert len(sink.outcomes) == 5
    assert [b.reason for b in sender.batches] == ["flush"]
    assert engine.committable() == {(TOPIC, 0): 5}


async def test_redelivered_copy_waits_for_the_original(sender: FakeSender, sink: FakeSink) -> None:
    """A copy read while the original is still pending completes only with the original."""
    engine = make_pipeline(sender, sink, window_ms=3_600_000)
    event = order_placed("1", 6000.0)
    engine.accept([record(0, event)])
    engine.accept([InputRecord("orders", 1, 7, b"k", json.dumps(event).encode())])
    assert engine.committable() == {}
    assert await engine.drain(None, timeout_s=5)
    assert len(sink.outcomes) == 1
    assert engine.committable() == {(TOPIC, 0): 1, (TOPIC, 1): 8}


TWO_PROMOTIONS = """\
program_id: 2714
promotions:
  big-spender: {promotion_id: 202779, type: ENROL_AND_ISSUE}
  direct: {promotion_id: 202780, type: DIRECT_ISSUE}
rules:
  - name: enrol
    on: order.placed
    then: [{enrol: big-spender}]
  - name: coupon
    on: order.placed
    then: [{earn: direct}]
"""


async def test_in_flight_results_after_reassignment_hold_the_offset_until_all_done(
    sink: FakeSink,
) -> None:
    """In-flight calls of a partition let go and re-read complete its offset once all are done."""
    released: dict[str, asyncio.Event] = {"enrol": asyncio.Event(), "earn": asyncio.Event()}

    class GatedSender(FakeSender):
        async def send(
            self, batch: Batch, *, before_request: BeforeRequest | None = None
        ) -> Delivery:
            await released[batch.key.action.value].wait()
            return await super().send(batch, before_request=before_request)

    engine = make_pipeline(GatedSender(), sink, rules=TWO_PROMOTIONS)
    task = asyncio.create_task(engine.run_dispatcher())
    try:
        event = order_placed("1", 6000.0)
        engine.accept([record(0, event)])
        assert not await engine.drain({(TOPIC, 0)}, timeout_s=0.05)
        engine.forget([(TOPIC, 0)])
        engine.accept([record(0, event)])
        released["enrol"].set()
        await until(lambda: len(sink.outcomes) == 1)
        assert engine.committable() == {}
        released["earn"].set()
        await until(lambda: engine.committable() == {(TOPIC, 0): 1})
        assert len(sink.outcomes) == 2
        assert engine.pending == 0
    finally:
        task.cancel()
        await engine.aclose()


async def test_replay_and_the_service_send_the_same_batches(sink: FakeSink) -> None:
    """`replay --dry-run` runs the service's flow core: the same input makes the same batches."""
    lines = []
    for line in (ROOT / "examples" / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        # One arrival instant for both: the replay clock would otherwise follow `time`.
        event.pop("time", None)
        lines.append(json.dumps(event))
    rules = RuleSet.from_yaml((ROOT / "examples" / "rules.yaml").read_text())
    config = FlowConfig(window_ms=50)
    replayed = simulate(rules, "\n".join(lines), TOPIC, config, interval_ms=0)

    sender = FakeSender()
    engine = Pipeline(flow=Flow(rules, config), sender=sender, sink=sink, metrics=Metrics())
    task = asyncio.create_task(engine.run_dispatcher())
    try:
        engine.accept(
            dataclasses.replace(record(number, line.encode()), key=customer_key(json.loads(line)))
            for number, line in enumerate(lines, 1)
        )
        await until(lambda: engine.pending == 0)
    finally:
        task.cancel()
        await engine.aclose()

    def shape(batches: Iterable[Batch]) -> list[tuple[str, str, str, tuple[str, ...]]]:
        return sorted(
            (
                b.key.endpoint.value,
                b.key.action.value,
                b.reason,
                tuple(c.command_id for c in b.commands),
            )
            for b in batches
        )

    assert len(replayed.batches) == len(sender.batches) > 10
    assert shape(batch for _, batch in replayed.batches) == shape(sender.batches)


async def test_intents_are_written_when_a_request_leaves_and_only_then(
    pipeline: Pipeline, sender: FakeSender, sink: FakeSink
) -> None:
    """A batch the sender kept back wrote no intent; the request that left wrote one first."""
    seen_before_answer: list[int] = []

    async def unsent_then_sent(batch: Batch, *, before_request: BeforeRequest | None) -> Delivery:
        if not sender.batches:
            sender.batches.append(batch)
            # Waited for the budget and gave up: nothing left, nothing to verify later.
            return Delivery(pending=batch.commands, detail="budget")
        assert before_request is not None
        await before_request(batch.commands)
        seen_before_answer.append(len(sink.state))
        return Delivery(
            completed=tuple(
                CommandResult(c.command_id, OutcomeStatus.APPLIED) for c in batch.commands
            )
        )

    sender.send = unsent_then_sent  # type: ignore[method-assign]
    pipeline.accept([record(0, order_placed("1", 6000.0))])
    await until(lambda: len(sink.outcomes) == 1)
    # One intent, before the answer; then the holding's tombstone with the outcome.
    assert seen_before_answer == [1]
    assert [r.value is None for r in sink.state] == [False, True]
