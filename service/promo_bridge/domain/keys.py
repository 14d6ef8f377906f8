"""The record key of an input event: its customer, so that one customer's events share a partition.

One rule for every producer of ours (`promo-bridge produce`, `replay --dry-run`, the test and
demo helpers): `data.customer.id`, else its `mobile`, else its `email`. The service's ledger and
ordering lanes are per partition, so a customer keyed two ways would be split across them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def customer_key(event: Mapping[str, Any]) -> bytes | None:
    """The customer's id, mobile or email (the first present) as bytes; None without one."""
    data = event.get("data")
    customer = data.get("customer") if isinstance(data, Mapping) else None
    if not isinstance(customer, Mapping):
        return None
    for name in ("id", "mobile", "email"):
        value = customer.get(name)
        if value:
            return str(value).encode()
    return None


def record_key(event: Mapping[str, Any]) -> bytes:
    """`customer_key`, else the event's subject or id: an event without a customer still spreads."""
    return customer_key(event) or str(event.get("subject") or event.get("id")).encode()
