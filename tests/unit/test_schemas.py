"""schemas/ stays what the models say, and the examples and real records match it.

The schemas are generated from the pydantic models by scripts/gen_schemas.py; a model change
without a regeneration fails here, naming the stale file.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from promo_bridge.domain.dead_letters import dead_letter
from promo_bridge.domain.events import EventDecodeError, decode_event
from promo_bridge.domain.outcomes import ErrorClass, OutcomeRecord, OutcomeStatus, encode_outcome

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples" / "events.jsonl"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "scripts/gen_schemas.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


@pytest.fixture(scope="module")
def validator_for() -> Any:
    """A function: schema file name -> a Draft 2020-12 validator."""
    jsonschema = pytest.importorskip("jsonschema")

    @functools.cache
    def make(name: str) -> Any:
        schema = _schema(name)
        cls = jsonschema.Draft202012Validator
        cls.check_schema(schema)
        return cls(schema, format_checker=cls.FORMAT_CHECKER)

    return make


def _errors(validator: Any, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def _schema_file_of(event_type: str) -> str:
    return str(gen.EVENT_FILES.get(event_type, gen.GENERIC_EVENT_FILE))


def _example_events() -> list[tuple[int, dict[str, Any]]]:
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines()
    return [(number, json.loads(line)) for number, line in enumerate(lines, 1) if line.strip()]


def test_checked_in_schemas_match_the_models() -> None:
    expected = gen.render_all()
    stale = [
        name
        for name, text in expected.items()
        if not (SCHEMAS / name).exists() or (SCHEMAS / name).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"schemas/ drifted from the models: {stale}; run scripts/gen_schemas.py"
    unexpected = sorted(p.name for p in SCHEMAS.iterdir() if p.is_file() and p.name not in expected)
    assert not unexpected, f"files in schemas/ that gen_schemas.py does not make: {unexpected}"


def test_every_example_event_decodes_and_matches_its_schema(validator_for: Any) -> None:
    events = _example_events()
    assert events, "examples/events.jsonl is empty"
    problems = []
    for number, event in events:
        try:
            decode_event(json.dumps(event))
        except EventDecodeError as exc:
            problems.append(f"line {number}: the service refuses it: {exc.reason}")
        schema_file = _schema_file_of(event.get("type", ""))
        errors = _errors(validator_for(schema_file), event)
        problems += [f"line {number} ({schema_file}): {error}" for error in errors]
    assert not problems, "\n".join(problems)


def test_examples_cover_every_canonical_event_type() -> None:
    types = {event.get("type") for _, event in _example_events()}
    assert set(gen.EVENT_FILES) <= types


def _first_example(event_type: str) -> dict[str, Any]:
    for _, event in _example_events():
        if event.get("type") == event_type:
            return copy.deepcopy(event)
    raise AssertionError(f"no {event_type} in {EXAMPLES}")


def _without_identifiers(event: dict[str, Any]) -> None:
    customer = event["data"]["customer"]
    for key in ("id", "mobile", "email"):
        customer.pop(key, None)


def _blank_identifiers(event: dict[str, Any]) -> None:
    customer = event["data"]["customer"]
    for key in ("id", "mobile", "email"):
        customer.pop(key, None)
    customer["id"] = "  "


def _rating_six(event: dict[str, Any]) -> None:
    event["data"]["rating"] = 6


def _old_specversion(event: dict[str, Any]) -> None:
    event["specversion"] = "0.3"


def _no_data(event: dict[str, Any]) -> None:
    del event["data"]


def _bad_currency(event: dict[str, Any]) -> None:
    event["data"]["total"]["currency"] = "rupees"


@pytest.mark.parametrize(
    ("event_type", "break_it"),
    [
        ("order.placed", _without_identifiers),
        ("order.placed", _blank_identifiers),
        ("review.submitted", _rating_six),
        ("return.created", _old_specversion),
        ("order.placed", _no_data),
        ("order.placed", _bad_currency),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_schema_and_service_refuse_the_same_broken_events(
    validator_for: Any, event_type: str, break_it: Any
) -> None:
    event = _first_example(event_type)
    break_it(event)
    with pytest.raises(EventDecodeError):
        decode_event(json.dumps(event))
    assert _errors(validator_for(_schema_file_of(event_type)), event)


def test_published_records_match_their_schemas(validator_for: Any) -> None:
    now = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    outcome = OutcomeRecord(
        command_id="evt-0001:enrol-big-spenders:0",
        event_id="evt-0001",
        topic="orders",
        partition=3,
        offset=42,
        rule="enrol-big-spenders",
        action="enrol",
        subject="big-spender",
        promotion_id=202779,
        program_id=2714,
        identifier_name="id",
        identifier_value="423927867",
        status=OutcomeStatus.REJECTED,
        error_class=ErrorClass.CONFIG,
        error_code=8892,
        error_message="Promotion is inactive",
        revoked_earn_ids=[1, 2],
        attempts=2,
        batch_id="b-1",
        request_id="req-1",
        received_at=now,
        completed_at=now,
    )
    letter = dead_letter(
        reason="data.customer: at least one of id, mobile, email is required",
        topic="orders",
        partition=0,
        offset=7,
        timestamp_ms=1_700_000_000_000,
        key=b"423927867",
        value=b'{"specversion": "1.0"}',
        headers=[("trace", b"\x00\x01"), ("empty", None)],
        failed_at=now,
    )
    published = (
        (gen.OUTCOME_FILE, encode_outcome(outcome)),
        (gen.DEAD_LETTER_FILE, letter.model_dump_json().encode()),
    )
    for schema_file, value in published:
        assert _errors(validator_for(schema_file), json.loads(value)) == [], schema_file


def test_asyncapi_documents_every_topic_and_resolves_its_references() -> None:
    document = yaml.safe_load((SCHEMAS / gen.ASYNCAPI_FILE).read_text(encoding="utf-8"))
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {topic for topic, _ in gen.INPUT_TOPICS.values()} | {
        gen.OUTCOMES_TOPIC,
        gen.DLQ_TOPIC,
    }
    for name, message in document["components"]["messages"].items():
        target = message["payload"]["$ref"]
        assert (SCHEMAS / target).is_file(), f"message {name} refers to missing {target}"
    for channel in document["channels"].values():
        for ref in channel["messages"].values():
            key = ref["$ref"].removeprefix("#/components/messages/")
            assert key in document["components"]["messages"]
    for operation in document["operations"].values():
        key = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert key in document["channels"]
