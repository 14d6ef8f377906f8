"""A stateful Capillary loyalty-promotion API simulator with fault injection.

Written from the endpoint pages in ``shared/capillary-api/`` independently of the client: it
imports nothing from ``promo_bridge.capillary`` or ``promo_bridge.domain``, so that each checks
the other. Used by tests (in-process through ``httpx.ASGITransport`` or over real HTTP), by
``make run`` demos and by benchmarks.

Public surface
--------------
``Simulator(catalogue=None, *, credentials=None, faults=None, options=None, clock=time.time,
monotonic=time.monotonic)``
    ``.app`` (ASGI), ``.ledger``, ``.calls``, ``.calls_since(seq, endpoint)``, ``.stats``,
    ``.state``, ``.credentials`` / ``.set_credentials(credentials=None, **changes)``,
    ``.faults`` / ``.set_faults(faults=None, **changes)``, ``.expire_tokens()``,
    ``.enrol_in_target(customer_id, group, target)``, ``.reset(state=, faults=, credentials=,
    calls=)``, ``.client(auth=True)`` (an in-process ``httpx.AsyncClient``).
``Catalogue``, ``load_catalogue(path)``, ``default_catalogue()``, ``CatalogueError``
    Programs, promotions, targets, customers, initial holdings, invented codes (format in
    ``_catalogue.py``; the shipped ``catalogue.yaml`` holds the doc examples' ids).
``Faults``
    Latency + jitter, error rates per HTTP status, 429 with Retry-After, timeouts, dropped
    connections, forced token expiries, per-entry 8896, own calls-per-minute limit per
    endpoint, a one-shot script, a seed.
``Credentials``, ``basic_header(till, password)``
    Basic (till + md5 of password; dev default: the docs' worked example ``store.server`` /
    ``server123``) and OAuth key/secret, token TTL.
``Ledger`` (+ ``LedgerEntry``)
    ``count(customer_id=, promotion=, target=, action=)``, ``total(action)``, ``totals()``,
    ``entries(...)``, ``duplicates(action)``; actions ENROL, EARN, REVOKE_EARN, REVOKE_ENROL,
    REVOKE_DIRECT_EARN, UNENROLL.
``ApiOptions``
    Behaviour the docs leave open: batch limits (100; revokeDirectEarn 10), unEnroll prefix
    (``/v3.1``, unprefixed also served), HTTP statuses of partial/total failure (200),
    malformed body (400) and unEnroll errors (400).
``serve(sim, host="127.0.0.1", port=0)`` → async context manager yielding ``RunningServer``
    (``.base_url``); ``run_simulator(port, catalogue_path, ...)`` blocks;
    ``add_simulate_api_parser(subparsers)`` registers ``simulate-api`` (``func`` set to
    ``main_simulate_api(args) -> int``). ``python -m promo_bridge.simulator`` runs it too.

HTTP surface
------------
POST /v2/promotion/bulk/enrolAndEarn            ENROL, EARN
POST /v2/promotion/bulk/revokeEnrolAndEarn      REVOKE_EARN (optional earnIds), REVOKE_ENROL
POST /v2/promotion/bulk/revokeDirectEarn        earnIds/earnIDs per customer, 10 per call
POST {prefix}/targetGroups/{g}/targets/{t}/unEnroll   and the unprefixed path
POST /v3/oauth/token/generate                   {"key", "secret"}
GET  /v2/customers/lookup/promotionData         shape INFERRED (see ``_lookup.py``)
/__admin/...                                    health, ledger, calls, stats, faults,
                                                credentials, reset, customers/{id}
Every response carries a unique ``X-Cap-Requestid``.

Codes the simulator invented (the docs give none for these situations; all configurable in
the catalogue's ``codes`` section)
-----------------------------------------------------------------------------------------
- 310120 "user not enrolled for the target": unEnroll of a customer not in the target. A
  client should treat it as already applied.
- 8950 "customer is not enrolled in the promotion": EARN on an enrol-and-issue promotion
  before ENROL. A rejection for that customer.
- 8951 "earned promotions must be revoked before revoking the enrolment": REVOKE_ENROL while
  earns are active. A rejection for that customer.
- 8903 (documented code, inferred use) for REVOKE_ENROL with no active enrolment.
- 1060 "batch limit exceeded" (listed by older v2 docs) for a call over the batch limit,
  answered as a request-level entry.
HTTP statuses the docs do not give are the simulator's choice and documented where they are
produced: ``_auth.py`` (401 bodies), ``_faults.py`` (injected errors), ``_targets.py``.
"""

from promo_bridge.simulator._auth import Credentials, basic_header
from promo_bridge.simulator._calls import CallRecord
from promo_bridge.simulator._catalogue import (
    Catalogue,
    CatalogueError,
    default_catalogue,
    load_catalogue,
)
from promo_bridge.simulator._cli import add_simulate_api_parser, main_simulate_api
from promo_bridge.simulator._faults import Faults
from promo_bridge.simulator._ledger import Ledger, LedgerEntry
from promo_bridge.simulator._options import ApiOptions
from promo_bridge.simulator._server import RunningServer, run_simulator, serve
from promo_bridge.simulator._simulator import Simulator

__all__ = [
    "ApiOptions",
    "CallRecord",
    "Catalogue",
    "CatalogueError",
    "Credentials",
    "Faults",
    "Ledger",
    "LedgerEntry",
    "RunningServer",
    "Simulator",
    "add_simulate_api_parser",
    "basic_header",
    "default_catalogue",
    "load_catalogue",
    "main_simulate_api",
    "run_simulator",
    "serve",
]
