"""`topics create`, `produce`, `tail` and `dlq replay` on the real broker, around a real service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_process import run_cli, use_environment
from harness import Rig, order_placed, running_service, service_settings, write_rules
from kafka_tools import ReadRecord, read_to_end
from promo_bridge.kafka.records import OutgoingRecord, send
from promo_bridge.simulator import Simulator, serve

pytestmark = pytest.mark.integration

# Refused by the service (no `source`): it is dead-lettered, and stays refused when replayed.
NOT_A_CLOUD_EVENT = {
    "specversion": "1.0",
    "id": "evt-no-source",
    "type": "order.placed",
    "data": {"customer": {"id": "c-poison"}},
}
POISON_HEADERS = (("trace", b"\x00\x01binary"), ("empty", None))


def _table_rows(out: str) -> list[str]:
    return out.splitlines()[1:]


async def test_create_produce_tail_and_replay_a_dead_letter_byte_for_byte(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The operator's round trip: topics, a file of events, outcomes and DLQ, a replay."""
    api = await rig.exits.enter_async_context(serve(Simulator()))
    settings = service_settings(
        bootstrap=rig.bootstrap,
        api_url=api.base_url,
        rules_file=write_rules(tmp_path),
        unique=rig.unique,
        topics=[rig.topic],
    )
    use_environment(monkeypatch, settings)
    state = f"pb-{rig.unique}.state"

    code, out = await run_cli("topics", "create", "--partitions", "2")
    assert code == 0, out
    assert out.splitlines() == [
        f"ok: input topic {rig.topic}: created, 2 partitions, replication factor 1",
        (
            f"ok: outcomes topic {settings.outcomes_topic}: created, 2 partitions,"
            " replication factor 1"
        ),
        f"ok: DLQ topic {settings.dlq_topic}: created, 2 partitions, replication factor 1",
        (
            f"ok: state topic {state}: created, 2 partitions, replication factor 1,"
            " cleanup.policy=compact"
        ),
    ]
    code, out = await run_cli("topics", "create", "--partitions", "3")
    assert code == 1, out
    assert f"error: input topic {rig.topic}: exists with 2 partitions, 3 wanted" in out
    assert f"ok: DLQ topic {settings.dlq_topic}: exists, 2 partitions" in out

    events = tmp_path / "events.jsonl"
    good = [order_placed("820001", 6000.0), order_placed("820002", 7000.0)]
    lines = [json.dumps(e) for e in [good[0], NOT_A_CLOUD_EVENT, good[1]]]
    events.write_text("\n".join(lines) + "\n")
    code, out = await run_cli("produce", str(events), "--topic", rig.topic)
    assert (code, out) == (0, f"sent 3 event(s): {rig.topic} 3\n")
    # A second poison record with headers (one of them null), which `produce` never sets.
    poison = OutgoingRecord(
        rig.topic, b"c-poison", b'{"specversion": "1.0", "id": ', POISON_HEADERS, partition=1
    )
    await send({"bootstrap_servers": rig.bootstrap}, [poison])

    async with running_service(settings):
        # --max makes the tail the wait: it returns once the service has written them.
        code, out = await run_cli(
            "tail", "outcomes", "--from-beginning", "--json", "--max", "2", "--timeout-s", "60"
        )
        assert code == 0, out
        outcomes = [json.loads(line)["value"] for line in out.splitlines()]
        assert sorted(o["event_id"] for o in outcomes) == ["evt-order-820001", "evt-order-820002"]
        assert {o["status"] for o in outcomes} == {"applied"}
        code, out = await run_cli(
            "tail", "dlq", "--from-beginning", "--json", "--max", "2", "--timeout-s", "60"
        )
        assert code == 0, out
        letters = [json.loads(line) for line in out.splitlines()]

    code, table = await run_cli("tail", "outcomes", "--from-beginning", "--timeout-s", "2")
    assert code == 0, table
    assert table.splitlines()[0].split() == [
        "at", "event", "rule", "action", "subject", "customer", "status", "ids", "/", "error"
    ]  # fmt: skip
    rows = _table_rows(table)
    assert len(rows) == 2
    assert all("enrol-big-spenders" in row and " applied " in row for row in rows), table
    code, table = await run_cli("tail", "dlq", "--from-beginning", "--timeout-s", "2")
    assert code == 0, table
    reasons = sorted(row.split(maxsplit=4)[4] for row in _table_rows(table))
    assert reasons[0].startswith("Invalid JSON"), table
    assert reasons[1].startswith("source: Field required"), table

    at = [f"{letter['partition']}:{letter['offset']}" for letter in letters]
    sources = {(x["value"]["source_partition"], x["value"]["source_offset"]) for x in letters}
    before = await read_to_end(rig.bootstrap, rig.topic)
    originals = [r for r in before if (r.partition, r.offset) in sources]
    assert len(originals) == 2

    code, out = await run_cli("dlq", "replay", "--offset", at[0], "--offset", at[1], "--dry-run")
    assert code == 0, out
    assert all(line.startswith("would replay: DLQ ") for line in out.splitlines()), out
    assert len(await read_to_end(rig.bootstrap, rig.topic)) == len(before)

    code, out = await run_cli("dlq", "replay", "--offset", at[0], "--offset", at[1])
    assert code == 0, out
    assert sorted(line.split(" -> ")[1].split(" (")[1] for line in out.splitlines()) == [
        f"key c-poison, {len(lines[1])} bytes, 0 headers)",
        f"key c-poison, {len(poison.value or b'')} bytes, 2 headers)",
    ]
    after = await read_to_end(rig.bootstrap, rig.topic)
    old = {(r.partition, r.offset) for r in before}
    replayed = [r for r in after if (r.partition, r.offset) not in old]
    assert sorted(map(_bytes, replayed)) == sorted(map(_bytes, originals))
    assert {r.headers for r in replayed} == {(), POISON_HEADERS}


def _bytes(record: ReadRecord) -> tuple[int, bytes | None, bytes | None, tuple[object, ...]]:
    """What must survive a replay: the partition, key, value and headers."""
    return (record.partition, record.key, record.value, record.headers)


async def test_replaying_an_unknown_offset_fails_and_sends_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dlq replay --offset` naming no record: an error line, exit 1, the source untouched."""
    settings = await rig.prepare(Simulator(), partitions=1)
    use_environment(monkeypatch, settings)

    code, out = await run_cli("dlq", "replay", "--offset", "0:7")

    assert code == 1
    assert out == f"error: DLQ 0:7: no such record on {settings.dlq_topic}\n"
    assert await read_to_end(rig.bootstrap, rig.topic) == []
