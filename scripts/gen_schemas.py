"""Generate schemas/: JSON Schema of every record the service reads or writes, and AsyncAPI.

The pydantic models are the source of truth; this renders them for people and for other
languages' producers and consumers. tests/unit/test_schemas.py regenerates them in memory and
fails when the checked-in files differ, so run this after changing a model:

    .venv/bin/python scripts/gen_schemas.py          # rewrite schemas/
    .venv/bin/python scripts/gen_schemas.py --check  # exit 1 if schemas/ is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, TypeAdapter, create_model

from promo_bridge.domain.dead_letters import DeadLetterRecord
from promo_bridge.domain.events import (
    CANONICAL_PAYLOADS,
    ORDER_PLACED,
    RETURN_CREATED,
    REVIEW_SUBMITTED,
    CloudEvent,
    GenericPayload,
)
from promo_bridge.domain.outcomes import OutcomeRecord

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS_DIR = ROOT / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# File of each input event type's schema; the generic envelope covers every other type.
EVENT_FILES: dict[str, str] = {
    ORDER_PLACED: "event.order.placed.json",
    RETURN_CREATED: "event.return.created.json",
    REVIEW_SUBMITTED: "event.review.submitted.json",
}
GENERIC_EVENT_FILE = "event.generic.json"
OUTCOME_FILE = "outcome.json"
DEAD_LETTER_FILE = "dead-letter.json"
ASYNCAPI_FILE = "asyncapi.yaml"

# The service's default topic names (settings.py); deployments may rename them.
INPUT_TOPICS: dict[str, tuple[str, str]] = {
    # channel -> (topic, event type it carries)
    "orders": ("orders", ORDER_PLACED),
    "returns": ("returns", RETURN_CREATED),
    "reviews": ("reviews", REVIEW_SUBMITTED),
}
OUTCOMES_TOPIC = "promo-bridge.outcomes"
DLQ_TOPIC = "promo-bridge.dlq"

# A customer needs at least one identifier; the model checks it in a validator, which JSON
# Schema cannot see, so the generated schema states it explicitly.
_CUSTOMER_IDENTIFIER_RULE = {
    "anyOf": [
        {"required": ["id"], "properties": {"id": {"type": "string", "pattern": r"\S"}}},
        {"required": ["mobile"], "properties": {"mobile": {"type": "string", "pattern": r"\S"}}},
        {"required": ["email"], "properties": {"email": {"type": "string", "pattern": r"\S"}}},
    ]
}


def _envelope(event_type: str, payload: type[BaseModel]) -> type[BaseModel]:
    # The service decodes with one envelope per type whose `type` is a literal; the schema does
    # the same, so a validator picks the payload rules from the type like the service does.
    tag: Any = Literal[event_type]
    name = "".join(part.capitalize() for part in event_type.replace("-", ".").split("."))
    model: type[BaseModel] = create_model(
        f"{name}Event",
        __base__=CloudEvent[payload],  # type: ignore[valid-type]
        type=(tag, ...),
    )
    return model


def _schema(
    model: type[Any],
    *,
    mode: Literal["validation", "serialization"],
    title: str,
    description: str,
    patch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    # A TypeAdapter reads pydantic models and annotated dataclasses (the outcome record) alike.
    body = TypeAdapter(model).json_schema(mode=mode, ref_template="#/$defs/{model}")
    if patch is not None:
        patch(body)
    return {"$schema": DIALECT, "title": title, "description": description} | {
        key: value for key, value in body.items() if key not in {"title", "description"}
    }


def _patch_customer(schema: dict[str, Any]) -> None:
    customer = schema.get("$defs", {}).get("Customer")
    if customer is not None:
        customer.update(_CUSTOMER_IDENTIFIER_RULE)


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema of each canonical input event, plus the generic envelope."""
    files: dict[str, dict[str, Any]] = {}
    for event_type, file_name in EVENT_FILES.items():
        payload = CANONICAL_PAYLOADS[event_type]
        files[file_name] = _schema(
            _envelope(event_type, payload),
            mode="validation",
            title=f"{event_type} event",
            description=(
                f"A CloudEvents 1.0 event in structured JSON mode whose type is {event_type}."
                " Key the Kafka record by customer. Extension attributes and unknown payload"
                " fields are allowed and visible to rules; amounts are decimals (a JSON number"
                " or a decimal string)."
            ),
            patch=_patch_customer,
        )
    files[GENERIC_EVENT_FILE] = _schema(
        CloudEvent[GenericPayload],
        mode="validation",
        title="CloudEvents event of any other type",
        description=(
            "The envelope every input event shares. A type without a payload model of its own"
            " is accepted with any JSON object as data; rules may still match it."
        ),
    )
    return files


def record_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema of each record the service publishes."""
    return {
        OUTCOME_FILE: _schema(
            OutcomeRecord,
            mode="serialization",
            title="promo-bridge outcome record",
            description=(
                "One record per command on the outcomes topic, keyed by the customer identifier."
                " Delivery is at least once: dedupe on command_id."
            ),
        ),
        DEAD_LETTER_FILE: _schema(
            DeadLetterRecord,
            mode="serialization",
            title="promo-bridge dead-letter record",
            description=(
                "An input record that did not decode, published on the DLQ topic with the"
                " original key, value and headers (base64) and the reason."
            ),
        ),
    }


def _message(name: str, title: str, summary: str, schema_file: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"./{schema_file}"},
    }


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the service's topics."""
    customer_key = {
        "type": "string",
        "description": (
            "The customer identifier. One customer's events must share a partition: that is"
            " what keeps their enrol before their earn and a revoke-earn before a revoke-enrol."
        ),
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel, (topic, event_type) in INPUT_TOPICS.items():
        message_id = event_type.replace(".", "-")
        messages[message_id] = _message(
            event_type,
            f"{event_type} (CloudEvents)",
            f"A {event_type} event, keyed by customer.",
            EVENT_FILES[event_type],
        ) | {"bindings": {"kafka": {"key": customer_key, "bindingVersion": "0.5.0"}}}
        channels[channel] = {
            "address": topic,
            "title": f"{channel} input topic",
            "description": (
                f"Carries {event_type} events (other types are accepted too: see"
                f" {GENERIC_EVENT_FILE}). Produce keyed by customer. The topic name is"
                " configurable (PROMO_BRIDGE_INPUT_TOPICS)."
            ),
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
        }
        operations[f"consume-{channel}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"promo-bridge consumes {event_type} and calls the Capillary API.",
            "bindings": {
                "kafka": {
                    "groupId": {"type": "string", "default": "promo-bridge"},
                    "bindingVersion": "0.5.0",
                }
            },
        }
    messages["outcome"] = _message(
        "outcome",
        "Outcome record",
        "The result of one command; dedupe on command_id.",
        OUTCOME_FILE,
    ) | {"bindings": {"kafka": {"key": customer_key, "bindingVersion": "0.5.0"}}}
    messages["dead-letter"] = _message(
        "dead-letter",
        "Dead-letter record",
        "An input record that did not decode, with the reason and the original bytes.",
        DEAD_LETTER_FILE,
    ) | {
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original record's key, unchanged."},
                "bindingVersion": "0.5.0",
            }
        }
    }
    channels["outcomes"] = {
        "address": OUTCOMES_TOPIC,
        "title": "Outcomes topic",
        "description": "One record per command (PROMO_BRIDGE_OUTCOMES_TOPIC).",
        "messages": {"outcome": {"$ref": "#/components/messages/outcome"}},
    }
    channels["dlq"] = {
        "address": DLQ_TOPIC,
        "title": "Dead-letter topic",
        "description": "Input records that did not decode (PROMO_BRIDGE_DLQ_TOPIC).",
        "messages": {"dead-letter": {"$ref": "#/components/messages/dead-letter"}},
    }
    operations["publish-outcomes"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/outcomes"},
        "summary": "promo-bridge publishes one outcome per command, before committing input.",
    }
    operations["publish-dead-letters"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/dlq"},
        "summary": "promo-bridge publishes each input record it cannot decode.",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "promo-bridge",
            "version": "0.1.0",
            "description": (
                "Kafka commerce events (CloudEvents JSON, keyed by customer) in; one outcome"
                " record per Capillary command out; undecodable records to a dead-letter topic."
                " Generated by scripts/gen_schemas.py from the service's models."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render_all() -> dict[str, str]:
    """File name -> exact text of every file in schemas/."""
    texts = {
        name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        for name, schema in (event_schemas() | record_schemas()).items()
    }
    header = "# Generated by scripts/gen_schemas.py from the service's models; do not edit.\n"
    texts[ASYNCAPI_FILE] = header + yaml.safe_dump(
        asyncapi(), sort_keys=False, allow_unicode=True, width=100
    )
    return texts


def main() -> int:
    """Write schemas/, or with --check report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    stale = []
    for name, text in render_all().items():
        path = SCHEMAS_DIR / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"schemas/ is stale: {', '.join(stale)}; run scripts/gen_schemas.py", file=sys.stderr)
        return 1
    print(("updated: " + ", ".join(stale)) if stale else "schemas/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
