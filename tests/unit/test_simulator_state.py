"""The simulator's per-(customer, promotion) state machine and its side-effect ledger."""

from __future__ import annotations

from typing import Any

import pytest

from promo_bridge.simulator import ApiOptions, Simulator, default_catalogue

ENROL_AND_EARN = "/v2/promotion/bulk/enrolAndEarn"
REVOKE = "/v2/promotion/bulk/revokeEnrolAndEarn"
REVOKE_DIRECT = "/v2/promotion/bulk/revokeDirectEarn"
LOOKUP = "/v2/customers/lookup/promotionData"
BIG_SPENDER = 202779  # enrol-and-issue, program 2714
DIRECT = 202780  # direct issue, promoIdentifier 95c77d88-...
CUSTOMER = "423926199"  # known, no holdings


def _body(
    action: str | None, promotion: int, *customers: dict[str, Any] | str, name: str = "id"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "CUSTOMER",
        "promotionDetails": {"programId": 2714, "promotionId": promotion},
        "identifierName": name,
        "customers": [
            {"identifierValue": c, "source": "INSTORE"} if isinstance(c, str) else c
            for c in customers
        ],
    }
    if action is not None:
        body["bulkAction"] = action
    return body


async def _post(sim: Simulator, path: str, body: object) -> Any:
    async with sim.client() as client:
        response = await client.post(path, json=body)
    return response.json()


def _entry(answer: Any, index: int = 0) -> Any:
    entry = answer["response"][index]
    return entry["result"] if "result" in entry else entry["errors"][0]["code"]


async def _status(sim: Simulator, promotion: int) -> str:
    async with sim.client() as client:
        response = await client.get(
            LOOKUP,
            params={
                "identifierName": "id",
                "identifierValue": CUSTOMER,
                "source": "INSTORE",
                "promotionId": str(promotion),
            },
        )
    (promo,) = response.json()["data"]["promotions"]
    return str(promo["promotionStatusForCustomer"])


@pytest.fixture
def sim() -> Simulator:
    return Simulator()


async def test_enrol_gives_an_issual_id_and_records_one_effect(sim: Simulator) -> None:
    """ENROL answers a string issualId and the ledger counts one ENROL for the customer."""
    result = _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER)))
    assert isinstance(result["issualId"], str)
    assert sim.ledger.count(customer_id=int(CUSTOMER), promotion=BIG_SPENDER, action="ENROL") == 1
    assert sim.ledger.duplicates() == {}


async def test_second_enrol_returns_the_same_issual_id_and_counts_a_duplicate(
    sim: Simulator,
) -> None:
    """Enrolling twice answers the same issualId again; the ledger shows two ENROLs, a repeat."""
    first = _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER)))
    second = _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER)))
    assert second["issualId"] == first["issualId"]
    assert sim.ledger.count(customer_id=int(CUSTOMER), promotion="big-spender", action="ENROL") == 2
    assert [e.repeat for e in sim.ledger.entries(action="ENROL")] == [False, True]
    assert sim.ledger.duplicates("ENROL") == {(int(CUSTOMER), "promotion:2714/202779", "ENROL"): 2}


async def test_earn_before_enrol_is_refused_with_the_invented_code(sim: Simulator) -> None:
    """EARN on enrol-and-issue without an enrolment answers 8950 and has no effect."""
    answer = await _post(sim, ENROL_AND_EARN, _body("EARN", BIG_SPENDER, CUSTOMER))
    assert answer["response"][0]["errors"][0] == {
        "status": False,
        "code": 8950,
        "message": "customer is not enrolled in the promotion",
    }
    assert sim.ledger.total() == 0


async def test_earns_get_distinct_ids_and_keep_the_enrolment_issual_id(sim: Simulator) -> None:
    """Two EARNs after one ENROL answer two earnedIds and the enrolment's issualId."""
    enrolled = _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER)))
    first = _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", BIG_SPENDER, CUSTOMER)))
    second = _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", BIG_SPENDER, CUSTOMER)))
    assert first["issualId"] == second["issualId"] == enrolled["issualId"]
    assert int(second["earnedId"]) == int(first["earnedId"]) + 1
    assert sim.ledger.count(customer_id=int(CUSTOMER), action="EARN") == 2


async def test_lookup_status_follows_the_state_machine(sim: Simulator) -> None:
    """Lookup answers AVAILABLE_TO_ENROL, then AVAILABLE_TO_EARN, then AVAILABLE_TO_REDEEM."""
    statuses = [await _status(sim, BIG_SPENDER)]
    await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER))
    statuses.append(await _status(sim, BIG_SPENDER))
    await _post(sim, ENROL_AND_EARN, _body("EARN", BIG_SPENDER, CUSTOMER))
    statuses.append(await _status(sim, BIG_SPENDER))
    await _post(sim, REVOKE, _body("REVOKE_EARN", BIG_SPENDER, CUSTOMER))
    statuses.append(await _status(sim, BIG_SPENDER))
    assert statuses == [
        "AVAILABLE_TO_ENROL",
        "AVAILABLE_TO_EARN",
        "AVAILABLE_TO_REDEEM",
        "AVAILABLE_TO_EARN",
    ]


async def test_revoke_enrol_needs_earns_revoked_first(sim: Simulator) -> None:
    """REVOKE_ENROL with active earns answers 8951; after REVOKE_EARN it revokes the issualId."""
    issual = _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER)))[
        "issualId"
    ]
    earned = _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", BIG_SPENDER, CUSTOMER)))[
        "earnedId"
    ]
    assert _entry(await _post(sim, REVOKE, _body("REVOKE_ENROL", BIG_SPENDER, CUSTOMER))) == 8951
    revoked = _entry(await _post(sim, REVOKE, _body("REVOKE_EARN", BIG_SPENDER, CUSTOMER)))
    assert revoked["revokedEarnIds"] == [int(earned)]
    unenrolled = _entry(await _post(sim, REVOKE, _body("REVOKE_ENROL", BIG_SPENDER, CUSTOMER)))
    assert unenrolled["revokedIssualId"] == int(issual)
    assert sim.ledger.totals() == {"ENROL": 1, "EARN": 1, "REVOKE_EARN": 1, "REVOKE_ENROL": 1}


async def test_revokes_with_nothing_left_answer_8903(sim: Simulator) -> None:
    """A second REVOKE_EARN and a second REVOKE_ENROL answer 8903 (safe on replay)."""
    await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER))
    await _post(sim, ENROL_AND_EARN, _body("EARN", BIG_SPENDER, CUSTOMER))
    await _post(sim, REVOKE, _body("REVOKE_EARN", BIG_SPENDER, CUSTOMER))
    assert _entry(await _post(sim, REVOKE, _body("REVOKE_EARN", BIG_SPENDER, CUSTOMER))) == 8903
    await _post(sim, REVOKE, _body("REVOKE_ENROL", BIG_SPENDER, CUSTOMER))
    assert _entry(await _post(sim, REVOKE, _body("REVOKE_ENROL", BIG_SPENDER, CUSTOMER))) == 8903
    assert sim.ledger.count(action="REVOKE_EARN") == 1
    assert sim.ledger.count(action="REVOKE_ENROL") == 1


async def test_re_enrol_after_revoke_gives_a_new_issual_id(sim: Simulator) -> None:
    """After REVOKE_ENROL, a new ENROL answers a different issualId and is not a repeat."""
    first = _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER)))
    await _post(sim, REVOKE, _body("REVOKE_ENROL", BIG_SPENDER, CUSTOMER))
    second = _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER)))
    assert second["issualId"] != first["issualId"]
    assert [e.repeat for e in sim.ledger.entries(action="ENROL")] == [False, False]


async def test_revoke_given_earn_ids_is_all_or_nothing(sim: Simulator) -> None:
    """earnIds with one unknown id answer 8903 and revoke none; valid ids revoke only those."""
    await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER))
    earned = [
        int(
            _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", BIG_SPENDER, CUSTOMER)))[
                "earnedId"
            ]
        )
        for _ in range(3)
    ]
    bad = {"identifierValue": CUSTOMER, "source": "INSTORE", "earnIds": [earned[0], 1]}
    assert _entry(await _post(sim, REVOKE, _body("REVOKE_EARN", BIG_SPENDER, bad))) == 8903
    good = {"identifierValue": CUSTOMER, "source": "INSTORE", "earnIds": [str(earned[1])]}
    result = _entry(await _post(sim, REVOKE, _body("REVOKE_EARN", BIG_SPENDER, good)))
    assert result["revokedEarnIds"] == [earned[1]]
    rest = _entry(await _post(sim, REVOKE, _body("REVOKE_EARN", BIG_SPENDER, CUSTOMER)))
    assert rest["revokedEarnIds"] == [earned[0], earned[2]]


async def test_direct_earn_gives_a_fresh_dummy_issual_id_each_time(sim: Simulator) -> None:
    """EARN on direct issue needs no enrolment and answers a new dummy issualId each time."""
    first = _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", DIRECT, CUSTOMER)))
    second = _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", DIRECT, CUSTOMER)))
    assert first["issualId"] != second["issualId"]
    assert first["earnedId"] != second["earnedId"]
    assert sim.ledger.count(promotion="95c77d88-470c-4dd3-bde4-606ae1b64277", action="EARN") == 2
    assert await _status(sim, DIRECT) == "AVAILABLE_TO_REDEEM"


async def test_revoke_direct_earn_revokes_and_then_answers_2305(sim: Simulator) -> None:
    """revokeDirectEarn (no bulkAction, earnIDs spelling) revokes; once empty it answers 2305."""
    earned = int(
        _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", DIRECT, CUSTOMER)))["earnedId"]
    )
    customer = {"identifierValue": CUSTOMER, "source": "INSTORE", "earnIDs": [earned]}
    result = _entry(await _post(sim, REVOKE_DIRECT, _body(None, DIRECT, customer)))
    assert result["revokedEarnIds"] == [earned]
    assert _entry(await _post(sim, REVOKE_DIRECT, _body(None, DIRECT, CUSTOMER))) == 2305
    assert sim.ledger.count(customer_id=int(CUSTOMER), action="REVOKE_DIRECT_EARN") == 1


async def test_revoke_direct_earn_over_the_batch_limit_answers_1060() -> None:
    """Eleven customers on revokeDirectEarn (limit 10) answer one 1060 entry; 10 are fine."""
    sim = Simulator()
    ids = [str(423_000_000 + i) for i in range(11)]
    answer = await _post(sim, REVOKE_DIRECT, _body("REVOKE_EARN", DIRECT, *ids))
    assert answer["totalCount"] == 1
    assert _entry(answer) == 1060
    answer = await _post(sim, REVOKE_DIRECT, _body("REVOKE_EARN", DIRECT, *ids[:10]))
    assert answer["totalCount"] == 10


async def test_revoke_direct_earn_limit_is_configurable() -> None:
    """ApiOptions(revoke_direct_earn_limit=None) models redirection disabled: no limit."""
    sim = Simulator(options=ApiOptions(revoke_direct_earn_limit=None))
    ids = [str(423_000_000 + i) for i in range(25)]
    answer = await _post(sim, REVOKE_DIRECT, _body("REVOKE_EARN", DIRECT, *ids))
    assert answer["totalCount"] == 25


async def test_bulk_limit_of_100_answers_1060_beyond() -> None:
    """101 customers on enrolAndEarn answer one 1060 entry and change nothing."""
    sim = Simulator()
    ids = [str(700_000_000 + i) for i in range(101)]
    answer = await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, *ids))
    assert (answer["totalCount"], answer["failureCount"], _entry(answer)) == (1, 1, 1060)
    assert sim.ledger.total() == 0


async def test_entries_follow_customer_order_in_a_mixed_batch() -> None:
    """A batch answers entries in request order: success, 11013, 8015, success."""
    sim = Simulator(default_catalogue().with_changes(auto_register_customers=False))
    customers = [
        "423926199",
        {"identifierValue": "423926198", "source": "NOWHERE"},
        "999",
        "423926200",
    ]
    answer = await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, *customers))
    entities = [_entry(answer, i) for i in range(4)]
    assert [e if isinstance(e, int) else e["entityId"] for e in entities] == [
        423926199,
        11013,
        8015,
        423926200,
    ]
    assert (answer["totalCount"], answer["failureCount"]) == (4, 2)


async def test_partial_failure_status_is_configurable() -> None:
    """ApiOptions(partial_failure_status=201) answers 201 when some entries fail, 200 when none."""
    sim = Simulator(
        default_catalogue().with_changes(auto_register_customers=False),
        options=ApiOptions(partial_failure_status=201, failure_status=500),
    )
    async with sim.client() as client:
        partial = await client.post(
            ENROL_AND_EARN, json=_body("ENROL", BIG_SPENDER, CUSTOMER, "999")
        )
        failed = await client.post(ENROL_AND_EARN, json=_body("ENROL", BIG_SPENDER, "999"))
        ok = await client.post(ENROL_AND_EARN, json=_body("ENROL", BIG_SPENDER, "423926198"))
    assert [partial.status_code, failed.status_code, ok.status_code] == [201, 500, 200]


async def test_same_customer_twice_in_one_batch_is_processed_in_order(sim: Simulator) -> None:
    """A customer sent twice in one ENROL batch gets the same issualId twice, counted twice."""
    answer = await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, CUSTOMER, CUSTOMER))
    assert _entry(answer, 0)["issualId"] == _entry(answer, 1)["issualId"]
    assert sim.ledger.count(customer_id=int(CUSTOMER), action="ENROL") == 2


async def test_auto_registration_by_mobile_creates_a_customer_once(sim: Simulator) -> None:
    """An unknown mobile gets a fresh customer id on first sight and the same one afterwards."""
    first = _entry(
        await _post(sim, ENROL_AND_EARN, _body("EARN", DIRECT, "910000000001", name="mobile"))
    )
    second = _entry(
        await _post(sim, ENROL_AND_EARN, _body("EARN", DIRECT, "910000000001", name="mobile"))
    )
    assert first["entityId"] == second["entityId"] >= 900_000_000
    assert sim.state.customer(first["entityId"]) is not None


async def test_email_identifiers_match_case_insensitively(sim: Simulator) -> None:
    """identifierName email finds the catalogue customer whatever the case of the address."""
    result = _entry(await _post(sim, ENROL_AND_EARN, _body("EARN", DIRECT, "A@B.IN", name="email")))
    assert result["entityId"] == 423927867


async def test_without_auto_registration_unknown_ids_answer_8015() -> None:
    """auto_register_customers false: an unknown id answers 8015 and registers nobody."""
    sim = Simulator(default_catalogue().with_changes(auto_register_customers=False))
    assert _entry(await _post(sim, ENROL_AND_EARN, _body("ENROL", BIG_SPENDER, "123"))) == 8015
    assert sim.state.customer(123) is None


async def test_unenroll_twice_answers_not_enrolled_and_counts_once(sim: Simulator) -> None:
    """A second unEnroll answers the catalogue's not-enrolled code; the ledger has one effect."""
    async with sim.client() as client:
        first = await client.post(
            "/v3.1/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927867}]
        )
        second = await client.post(
            "/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927867}]
        )
    assert first.json() == {"data": 423927867, "errors": None, "warnings": None}
    assert second.status_code == 400
    assert second.json()["errors"] == [
        {"code": 310120, "message": "user not enrolled for the target"}
    ]
    assert sim.ledger.count(customer_id=423927867, target=(12, 34), action="UNENROLL") == 1
    assert sim.ledger.count(target="monthly-milestone") == 1


async def test_enrol_in_target_allows_another_unenroll(sim: Simulator) -> None:
    """After enrol_in_target, unEnroll succeeds again and the ledger counts a duplicate."""
    async with sim.client() as client:
        await client.post(
            "/v3.1/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927867}]
        )
        sim.enrol_in_target(423927867, 12, 34)
        again = await client.post(
            "/v3.1/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927867}]
        )
    assert again.status_code == 200
    assert sim.ledger.duplicates("UNENROLL") == {(423927867, "target:12/34", "UNENROLL"): 2}


async def test_not_enrolled_code_is_configurable_in_the_catalogue() -> None:
    """codes.target_not_enrolled in the catalogue changes the not-enrolled answer."""
    catalogue = default_catalogue().with_changes(
        codes={"target_not_enrolled": {"code": 310999, "message": "not in target"}}
    )
    sim = Simulator(catalogue)
    async with sim.client() as client:
        for _ in range(2):
            response = await client.post(
                "/v3.1/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927867}]
            )
    assert response.json()["errors"] == [{"code": 310999, "message": "not in target"}]


async def test_reset_restores_the_catalogue_state_and_empties_the_ledger(sim: Simulator) -> None:
    """reset() forgets effects, calls and state: a revoked holding can be revoked again."""
    body = _body("REVOKE_EARN", DIRECT, "423927867")
    assert _entry(await _post(sim, REVOKE, body))["revokedEarnIds"] == [974]
    sim.reset()
    assert sim.ledger.total() == 0
    assert sim.calls == []
    assert _entry(await _post(sim, REVOKE, body))["revokedEarnIds"] == [974]


async def test_ledger_entries_filter_and_serialise(sim: Simulator) -> None:
    """Ledger entries filter by customer and action and carry the request id of their call."""
    async with sim.client() as client:
        response = await client.post(
            ENROL_AND_EARN, json=_body("ENROL", BIG_SPENDER, CUSTOMER, "423926198")
        )
    entries = sim.ledger.entries(customer_id=423926198)
    assert len(entries) == 1
    assert entries[0].request_id == response.headers["X-Cap-Requestid"]
    data = entries[0].to_dict()
    assert (data["promotion_id"], data["program_id"], data["action"]) == (
        BIG_SPENDER,
        2714,
        "ENROL",
    )
    assert sim.ledger.total("ENROL") == 2
    assert sim.ledger.count(promotion=(2714, BIG_SPENDER)) == 2
    assert sim.ledger.count(promotion=DIRECT) == 0
