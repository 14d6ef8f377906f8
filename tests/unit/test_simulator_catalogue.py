"""Catalogue loading, the admin endpoints and the simulate-api command options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from promo_bridge.simulator import (
    Catalogue,
    CatalogueError,
    Simulator,
    add_simulate_api_parser,
    default_catalogue,
    load_catalogue,
)
from promo_bridge.simulator._catalogue import PromotionKind
from promo_bridge.simulator._cli import build_simulator
from promo_bridge.simulator._state import Earned

MINIMAL = """
auto_register_customers: false
programs:
  - program_id: 1
    promotions:
      - {promotion_id: 10, type: LOYALTY_EARNING}
      - {promotion_id: 11, type: ISSUE_AND_EARN}
      - {promotion_id: 12, type: LOYALTY, promo_identifier: abc}
      - {promotion_id: 13, type: direct_earn}
      - {promotion_id: 14, type: DIRECT}
customers:
  - {id: 5, mobile: 919900000000}
"""


def test_shipped_catalogue_holds_the_doc_examples() -> None:
    """The shipped catalogue has 2714/202779 big-spender, the 95c77d88 direct one and 12/34."""
    catalogue = default_catalogue()
    big = catalogue.find_promotion(2714, "big-spender")
    direct = catalogue.find_promotion(2714, "95c77d88-470c-4dd3-bde4-606ae1b64277")
    assert big is not None
    assert (big.promotion_id, big.type, big.active) == (202779, PromotionKind.ENROL_AND_ISSUE, True)
    assert direct is not None
    assert direct.type is PromotionKind.DIRECT_ISSUE
    assert any(not p.active for p in catalogue.promotions())
    assert next((t.target_group_id, t.target_id) for t in catalogue.targets) == (12, 34)
    assert catalogue.auto_register_customers is True
    assert {469, 699, 753} <= {p.program_id for p in catalogue.programs}


def test_yaml_catalogue_accepts_every_type_alias(tmp_path: Path) -> None:
    """Backend, UI and rules-file type names map to enrol-and-issue or direct issue."""
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    catalogue = load_catalogue(path)
    kinds = [p.type for p in catalogue.promotions()]
    assert kinds == [PromotionKind.ENROL_AND_ISSUE] * 2 + [PromotionKind.DIRECT_ISSUE] * 3
    assert catalogue.customers[0].mobile == "919900000000"


def test_json_catalogue_loads(tmp_path: Path) -> None:
    """A .json catalogue loads like YAML."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"programs": [{"program_id": 7, "promotions": []}]}))
    assert load_catalogue(path).find_program(7) is not None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "programs: [{program_id: 1, promotions: [{promotion_id: 1, type: WHATEVER}]}]",
            "unknown promotion type",
        ),
        ("customers: [{id: 1}, {id: 1}]", "duplicate customer id"),
        ("holdings: [{customer_id: 9, program_id: 1, promotion: 1}]", "unknown customer"),
        ("programz: []", "programz"),
        ("programs: [1, 2", "not valid"),
    ],
)
def test_bad_catalogue_errors_name_the_file_and_problem(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """Unknown types, duplicates, dangling holdings, typos and bad YAML raise CatalogueError."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    assert str(path) in str(caught.value)
    assert fragment in str(caught.value)


def test_missing_catalogue_file_raises_catalogue_error(tmp_path: Path) -> None:
    """A path that does not exist raises CatalogueError, not a bare OSError."""
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "absent.yaml")


def test_holdings_seed_state_and_push_sequences_past_their_ids() -> None:
    """Holdings' earn ids exist at start and new earned ids start after the highest one."""
    catalogue = Catalogue.model_validate(
        {
            "sequences": {"earned_id_start": 1},
            "programs": [{"program_id": 1, "promotions": [{"promotion_id": 2, "type": "DIRECT"}]}],
            "customers": [{"id": 3}],
            "holdings": [
                {"customer_id": 3, "program_id": 1, "promotion": 2, "earned_ids": [40, 41]}
            ],
        }
    )
    sim = Simulator(catalogue)
    promotion = catalogue.find_promotion(1, 2)
    assert promotion is not None
    state = sim.state.peek_promotion_state(3, 1, promotion)
    assert state is not None
    assert state.active_earns() == [40, 41]
    assert sim.state.earn(3, 1, promotion) == Earned(issual_id="1000", earned_id="42")


async def _get(sim: Simulator, path: str, **params: str) -> Any:
    async with sim.client(auth=False) as client:
        response = await client.get(path, params=params)
    return response.status_code, response.json()


async def test_admin_ledger_calls_stats_and_health() -> None:
    """GET /__admin/ledger, /calls, /stats and /health report what happened."""
    sim = Simulator()
    body = {
        "type": "CUSTOMER",
        "bulkAction": "ENROL",
        "promotionDetails": {"programId": 2714, "promotionId": 202779},
        "identifierName": "id",
        "customers": [{"identifierValue": "423926199", "source": "INSTORE"}] * 2,
    }
    async with sim.client() as client:
        await client.post("/v2/promotion/bulk/enrolAndEarn", json=body)
    assert await _get(sim, "/__admin/health") == (200, {"status": "ok"})
    status, ledger = await _get(sim, "/__admin/ledger", promotion="big-spender", action="ENROL")
    assert status == 200
    assert ledger["count"] == 2
    assert ledger["duplicates"] == [
        {
            "customer_id": 423926199,
            "subject": "promotion:2714/202779",
            "action": "ENROL",
            "count": 2,
        }
    ]
    assert [e["repeat"] for e in ledger["entries"]] == [False, True]
    _, calls = await _get(sim, "/__admin/calls")
    (call,) = calls["calls"]
    assert (call["endpoint"], call["bulk_action"], call["customers"], call["status"]) == (
        "enrolAndEarn",
        "ENROL",
        2,
        200,
    )
    _, stats = await _get(sim, "/__admin/stats")
    assert (stats["calls"], stats["customers"], stats["effects"]) == (1, 2, {"ENROL": 2})


async def test_admin_customer_view_and_reset() -> None:
    """GET /__admin/customers/{id} shows holdings; POST /__admin/reset restores the catalogue."""
    sim = Simulator()
    _, before = await _get(sim, "/__admin/customers/423927867")
    assert {p["promotionId"] for p in before["promotions"]} == {202779, 202780}
    async with sim.client() as client:
        await client.post("/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927867}])
        _, after = await _get(sim, "/__admin/customers/423927867")
        assert after["targets"][0]["enrolled"] is False
        reset = await client.post("/__admin/reset", json={})
        bad = await client.post("/__admin/reset", json={"everything": True})
    assert reset.json() == {"reset": ["state", "faults", "credentials", "calls"]}
    assert bad.status_code == 400
    _, restored = await _get(sim, "/__admin/customers/423927867")
    assert restored["targets"][0]["enrolled"] is True
    assert (await _get(sim, "/__admin/customers/1"))[0] == 404


async def test_unknown_paths_answer_json_404_with_a_request_id() -> None:
    """An unknown path answers JSON 404 and still carries X-Cap-Requestid."""
    async with Simulator().client() as client:
        response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.json()["code"] == 404
    assert len(response.headers["X-Cap-Requestid"]) == 32


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="promo-bridge")
    add_simulate_api_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate-api", *argv])


def test_simulate_api_parser_defaults_are_the_dev_setup() -> None:
    """simulate-api defaults: 127.0.0.1:8090, shipped catalogue, docs' Basic credentials."""
    args = _parse()
    assert (args.host, args.port, args.catalogue) == ("127.0.0.1", 8090, None)
    assert (args.basic_till, args.basic_password) == ("store.server", "server123")
    assert callable(args.func)
    sim = build_simulator(args)
    assert sim.catalogue == default_catalogue()
    assert sim.options.revoke_direct_earn_limit == 10


def test_simulate_api_options_configure_faults_credentials_and_limits(tmp_path: Path) -> None:
    """Fault, credential, limit and catalogue options reach the simulator."""
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    args = _parse(
        "--port=0",
        f"--catalogue={path}",
        "--auto-register",
        "--basic-password=pw",
        "--rate-limit-per-minute=100",
        "--latency-ms=5",
        "--error-rate=503=0.1",
        "--error-rate=500=0.05",
        "--revoke-direct-earn-limit=0",
        "--seed=3",
    )
    sim = build_simulator(args)
    assert sim.catalogue.auto_register_customers is True
    assert sim.credentials.password == "pw"
    assert sim.faults.rate_limit_per_minute == 100
    assert dict(sim.faults.error_rates) == {503: 0.1, 500: 0.05}
    assert (sim.faults.latency_ms, sim.faults.seed) == (5, 3)
    assert sim.options.revoke_direct_earn_limit is None


def test_simulate_api_rejects_a_malformed_error_rate() -> None:
    """--error-rate must be STATUS=RATE."""
    with pytest.raises(SystemExit):
        _parse("--error-rate=oops")


def test_main_reports_a_bad_catalogue_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A catalogue that does not load ends simulate-api with exit code 2 and a message."""
    args = _parse(f"--catalogue={tmp_path / 'absent.yaml'}")
    assert args.func(args) == 2
    assert "cannot read catalogue" in capsys.readouterr().err
