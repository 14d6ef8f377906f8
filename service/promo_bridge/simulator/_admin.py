"""Admin endpoints under /__admin: inspect the ledger and calls, change faults and credentials.

No authentication: the simulator is a dev and test tool bound to 127.0.0.1 by default. Bad
admin input answers HTTP 400 ``{"error": "..."}``.

- GET  /__admin/health                      → {"status": "ok"}
- GET  /__admin/ledger?customer_id=&promotion=&target=&action=&limit=
                                            → {"count", "totals", "duplicates", "entries"}
- GET  /__admin/calls?since=&endpoint=      → {"calls": [...]}
- GET  /__admin/stats                       → call counters, token requests, effects
- GET  /__admin/faults                      → current faults
- POST /__admin/faults   {fields...}        → merge into current faults; "replace": true starts
                                              from no faults; "expire_issued_tokens": true
                                              expires every token issued so far
- POST /__admin/credentials {fields...}     → change accepted credentials (Credentials fields)
- POST /__admin/reset    {"state","faults","credentials","calls": bool, all default true}
- GET  /__admin/customers/{customer_id}     → the customer's promotion and target state
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promo_bridge.simulator._faults import Faults
from promo_bridge.simulator._ledger import Ref
from promo_bridge.simulator._lookup import status_for

if TYPE_CHECKING:
    from promo_bridge.simulator._simulator import Simulator

PREFIX = "/__admin"


def _json(status: int, body: object) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), default=str).encode(),
        status_code=status,
        media_type="application/json",
    )


def _bad(message: str) -> Response:
    return _json(400, {"error": message})


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    return data


def _ref(text: str | None) -> Ref | None:
    if text is None:
        return None
    return int(text) if text.isascii() and text.isdigit() else text


def routes(sim: Simulator) -> list[Route]:
    """The admin routes bound to one simulator."""

    async def health(request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def ledger(request: Request) -> Response:
        q = request.query_params
        try:
            customer_id = int(q["customer_id"]) if "customer_id" in q else None
            limit = int(q.get("limit", "1000"))
        except ValueError:
            return _bad("customer_id and limit must be integers")
        filters: dict[str, Any] = {
            "customer_id": customer_id,
            "promotion": _ref(q.get("promotion")),
            "target": _ref(q.get("target")),
            "action": q.get("action"),
        }
        entries = sim.ledger.entries(**filters)
        duplicates = [
            {"customer_id": c, "subject": s, "action": a, "count": n}
            for (c, s, a), n in sim.ledger.duplicates(filters["action"]).items()
        ]
        return _json(
            200,
            {
                "count": sim.ledger.count(**filters),
                "totals": sim.ledger.totals(),
                "duplicates": duplicates,
                "entries": [e.to_dict() for e in entries[-limit:]] if limit > 0 else [],
            },
        )

    async def calls(request: Request) -> Response:
        q = request.query_params
        try:
            since = int(q.get("since", "0"))
        except ValueError:
            return _bad("since must be an integer")
        records = sim.calls_since(since, q.get("endpoint"))
        return _json(200, {"calls": [r.to_dict() for r in records]})

    async def stats(request: Request) -> Response:
        return _json(200, sim.stats)

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return _json(200, sim.faults.to_dict())
        try:
            data = await _body(request)
            expire = bool(data.pop("expire_issued_tokens", False))
            base = Faults() if data.pop("replace", False) else None
            updated = sim.set_faults(base, **data)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        if expire:
            sim.expire_tokens()
        return _json(200, updated.to_dict())

    async def credentials(request: Request) -> Response:
        if request.method == "GET":
            return _json(200, sim.credentials.to_dict())
        try:
            updated = sim.set_credentials(**await _body(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return _json(200, updated.to_dict())

    async def reset(request: Request) -> Response:
        try:
            data = await _body(request)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        parts = {k: bool(data.pop(k, True)) for k in ("state", "faults", "credentials", "calls")}
        if data:
            return _bad(f"unknown reset fields: {sorted(data)}")
        sim.reset(**parts)
        return _json(200, {"reset": [k for k, v in parts.items() if v]})

    async def customer(request: Request) -> Response:
        try:
            customer_id = int(request.path_params["customer_id"])
        except ValueError:
            return _bad("customer id must be an integer")
        state = sim.state
        record = state.customer(customer_id)
        if record is None:
            return _json(404, {"error": f"unknown customer {customer_id}"})
        promotions = [
            {
                "programId": program_id,
                "promotionId": promotion.promotion_id,
                "name": promotion.name,
                "status": status_for(promotion, pstate),
                "issualId": pstate.issual_id,
                "earns": {str(k): v for k, v in pstate.earns.items()},
                "revokedIssualIds": pstate.revoked_issual_ids,
            }
            for program_id, promotion, pstate in state.holdings_of(customer_id)
            if pstate is not None
        ]
        targets = [
            {
                "targetGroupId": t.target_group_id,
                "targetId": t.target_id,
                "enrolled": state.in_target(customer_id, t),
            }
            for t in sim.catalogue.targets
        ]
        return _json(
            200,
            {
                "id": record.id,
                "mobile": record.mobile,
                "email": record.email,
                "registeredBySimulator": record.registered_by_simulator,
                "promotions": promotions,
                "targets": targets,
            },
        )

    return [
        Route(f"{PREFIX}/health", health, methods=["GET"]),
        Route(f"{PREFIX}/ledger", ledger, methods=["GET"]),
        Route(f"{PREFIX}/calls", calls, methods=["GET"]),
        Route(f"{PREFIX}/stats", stats, methods=["GET"]),
        Route(f"{PREFIX}/faults", faults, methods=["GET", "POST"]),
        Route(f"{PREFIX}/credentials", credentials, methods=["GET", "POST"]),
        Route(f"{PREFIX}/reset", reset, methods=["POST"]),
        Route(f"{PREFIX}/customers/{{customer_id}}", customer, methods=["GET"]),
    ]
