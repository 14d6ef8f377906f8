"""Contract tests: the endpoint pages' request examples get the pages' documented answers.

Request and response bodies are the four endpoint pages' examples in doc_examples.py (shared
with the client's contract test), read as JSON without the pages' JavaScript-style comments;
where a page's own examples are invalid or disagree with each other, the test says so and pins
what the simulator does instead.
"""

from __future__ import annotations

from typing import Any

import pytest

import doc_examples as doc
from doc_examples import page_json
from promo_bridge.simulator import Catalogue, Faults, Simulator, default_catalogue
from promo_bridge.simulator._codes import message

ENROL_AND_EARN = "/v2/promotion/bulk/enrolAndEarn"
REVOKE_ENROL_AND_EARN = "/v2/promotion/bulk/revokeEnrolAndEarn"
REVOKE_DIRECT_EARN = "/v2/promotion/bulk/revokeDirectEarn"

# -- the pages' examples (doc_examples.py) the tests below reuse, as JSON -------------------------

ENROL_ONE_BY_ID = page_json(doc.ENROL_ID)
ENROL_TWO_BY_MOBILE = page_json(doc.ENROL_MOBILE)
EARN_ONE_BY_ID = page_json(doc.EARN_ID)
EARN_TWO_BY_MOBILE = page_json(doc.EARN_MOBILE)
REVOKE_ENROL_ONE = page_json(doc.REVOKE_ENROL_ONE)
REVOKE_ENROL_TWO = page_json(doc.REVOKE_ENROL_TWO)
REVOKE_EARN_BY_PROMO_IDENTIFIER = page_json(doc.REVOKE_EARN_IDENTIFIER)
REVOKE_EARN_WITH_EARN_IDS = page_json(doc.REVOKE_EARN_IDS)
REVOKE_DIRECT_EARN_AS_WRITTEN = page_json(doc.DIRECT_REVOKE)
UNENROLL_REQUEST = page_json(doc.UNENROLL)
UNENROLL_RESPONSE = page_json(doc.UNENROLL_RESPONSE)


def _result(entity_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "result": {"entityType": "CUSTOMER", "entityId": entity_id, **fields},
        "errors": [],
        "warnings": [],
    }


def _failed(code: int, message: str) -> dict[str, Any]:
    return {"errors": [{"status": False, "code": code, "message": message}], "warnings": []}


def _single(code: int, message: str) -> dict[str, Any]:
    return {"response": [_failed(code, message)], "totalCount": 1, "failureCount": 1}


def _sim(catalogue: Catalogue | None = None, **changes: Any) -> Simulator:
    base = catalogue if catalogue is not None else default_catalogue()
    return Simulator(base.with_changes(**changes) if changes else base)


async def _post(sim: Simulator, path: str, body: object) -> tuple[int, Any]:
    async with sim.client() as client:
        response = await client.post(path, json=body)
    return response.status_code, response.json()


def _bulk(
    action: str, program: int, promotion: int, ids: list[str], **extra: Any
) -> dict[str, Any]:
    return {
        "type": "CUSTOMER",
        "bulkAction": action,
        "promotionDetails": {"programId": program, "promotionId": promotion},
        "identifierName": "id",
        "customers": [{"identifierValue": i, "source": "INSTORE"} for i in ids],
        **extra,
    }


EXAMPLE_CUSTOMERS = ["423926199", "423926198", "423926200", "423926201"]


# -- success examples, reproduced exactly ---------------------------------------------------------


async def test_enrol_response_example_is_reproduced_exactly() -> None:
    """ENROL of four customers answers the page's response example (issualIds 847..850)."""
    sim = _sim(holdings=[])
    status, body = await _post(sim, ENROL_AND_EARN, _bulk("ENROL", 2714, 202188, EXAMPLE_CUSTOMERS))
    expected = page_json(doc.ENROL_RESPONSE)
    assert (status, body) == (200, expected)


async def test_earn_response_example_is_reproduced_exactly() -> None:
    """EARN after ENROL answers the page's example: issualIds 847.. and earnedIds 840..843."""
    sim = _sim(holdings=[])
    await _post(sim, ENROL_AND_EARN, _bulk("ENROL", 2714, 202188, EXAMPLE_CUSTOMERS))
    status, body = await _post(sim, ENROL_AND_EARN, _bulk("EARN", 2714, 202188, EXAMPLE_CUSTOMERS))
    expected = [
        _result(
            int(c), promotionId=202188, programId=2714, issualId=str(847 + i), earnedId=str(840 + i)
        )
        for i, c in enumerate(EXAMPLE_CUSTOMERS)
    ]
    assert (status, body) == (200, {"response": expected, "totalCount": 4, "failureCount": 0})


async def test_direct_earn_response_example_is_reproduced_exactly() -> None:
    """EARN on a direct promotion answers dummy issualIds 837.. and earnedIds 794.. as shown."""
    sequences = {"issual_id_start": 837, "earned_id_start": 794}
    sim = _sim(holdings=[], sequences=sequences)
    status, body = await _post(sim, ENROL_AND_EARN, _bulk("EARN", 2714, 202090, EXAMPLE_CUSTOMERS))
    expected = page_json(doc.DIRECT_EARN_RESPONSE)["response"]
    assert (status, body) == (200, {"response": expected, "totalCount": 4, "failureCount": 0})


async def test_earn_8015_partial_example_is_reproduced_exactly() -> None:
    """One known and three unknown customers answer the page's 8015 partial-failure example."""
    sim = _sim(
        auto_register_customers=False,
        holdings=[],
        sequences={"issual_id_start": 72, "earned_id_start": 102},
    )
    ids = ["170940055", "555000001", "555000002", "555000003"]
    status, body = await _post(sim, ENROL_AND_EARN, _bulk("EARN", 699, 74116, ids))
    expected = page_json(doc.PARTIAL_RESPONSE)
    assert (status, body) == (200, expected)


async def test_revoke_earn_by_promo_identifier_example_is_reproduced_exactly() -> None:
    """REVOKE_EARN by promoIdentifier answers revokedEarnIds [974] and [975, 977] as shown."""
    body = {
        **REVOKE_EARN_BY_PROMO_IDENTIFIER,
        "customers": [
            {"identifierValue": "423927867", "source": "instore"},
            {"identifierValue": "423927868", "source": "instore"},
        ],
    }
    status, answer = await _post(_sim(), REVOKE_ENROL_AND_EARN, body)
    expected = page_json(doc.REVOKE_EARN_RESPONSE)
    assert (status, answer) == (200, expected)


async def test_revoke_8015_partial_example_is_reproduced_exactly() -> None:
    """REVOKE_EARN for one holder and two unknown customers answers the page's 8015 example."""
    sim = _sim(auto_register_customers=False)
    body = _bulk("REVOKE_EARN", 753, 74230, ["555567088", "555000001", "555000002"])
    status, answer = await _post(sim, REVOKE_ENROL_AND_EARN, body)
    not_found = _failed(8015, "Customer not found for the given identifiers")
    expected = {
        "response": [
            _result(555567088, promotionId=74230, programId=753, revokedEarnIds=[111]),
            not_found,
            not_found,
        ],
        "totalCount": 3,
        "failureCount": 2,
    }
    assert (status, answer) == (200, expected)


async def test_revoke_direct_earn_response_example_is_reproduced_exactly() -> None:
    """revokeDirectEarn for 98662653 on 469/57099 answers revokedEarnIds [32, 34, ..., 41]."""
    body = {
        **REVOKE_DIRECT_EARN_AS_WRITTEN,
        "promotionDetails": {"programId": 469, "promotionId": 57099},
    }
    body["customers"] = body["customers"][:1]
    status, answer = await _post(_sim(), REVOKE_DIRECT_EARN, body)
    expected = {
        "response": [
            _result(
                98662653,
                promotionId=57099,
                programId=469,
                revokedEarnIds=[32, 34, 35, 36, 38, 39, 40, 41],
            )
        ],
        "totalCount": 1,
        "failureCount": 0,
    }
    assert (status, answer) == (200, expected)


async def test_unenroll_example_is_reproduced_exactly() -> None:
    """The unEnroll request example answers the page's response example exactly."""
    status, body = await _post(
        _sim(), "/v3.1/targetGroups/12/targets/34/unEnroll", UNENROLL_REQUEST
    )
    assert (status, body) == (200, UNENROLL_RESPONSE)


# -- every request example gets an answer of the documented shape ---------------------------------

RESULT_KEYS = {"entityType", "entityId", "programId"}


def _assert_bulk_shape(body: Any, customers: int) -> None:
    assert set(body) == {"response", "totalCount", "failureCount"}
    entries = body["response"]
    assert body["totalCount"] == len(entries) == customers
    assert body["failureCount"] == sum(1 for e in entries if "result" not in e)
    for entry in entries:
        if "result" in entry:
            assert set(entry) == {"result", "errors", "warnings"}
            assert entry["errors"] == []
            assert entry["warnings"] == []
            assert set(entry["result"]) >= RESULT_KEYS
            assert entry["result"]["entityType"] == "CUSTOMER"
            assert isinstance(entry["result"]["entityId"], int)
        else:
            assert set(entry) == {"errors", "warnings"}
            (error,) = entry["errors"]
            assert set(error) == {"status", "code", "message"}
            assert error["status"] is False


@pytest.mark.parametrize(
    ("path", "example", "id_field", "keys"),
    [
        (ENROL_AND_EARN, ENROL_ONE_BY_ID, "promotionId", {"issualId"}),
        (ENROL_AND_EARN, ENROL_TWO_BY_MOBILE, "promotionId", {"issualId"}),
        (REVOKE_ENROL_AND_EARN, REVOKE_ENROL_ONE, "promotionId", {"revokedIssualId"}),
        (REVOKE_ENROL_AND_EARN, REVOKE_ENROL_TWO, "promotionId", {"revokedIssualId"}),
        (
            REVOKE_ENROL_AND_EARN,
            REVOKE_EARN_BY_PROMO_IDENTIFIER,
            "promoIdentifier",
            {"revokedEarnIds"},
        ),
        (REVOKE_ENROL_AND_EARN, REVOKE_EARN_WITH_EARN_IDS, "promoIdentifier", {"revokedEarnIds"}),
    ],
)
async def test_request_example_succeeds_with_documented_result_fields(
    path: str, example: dict[str, Any], id_field: str, keys: set[str]
) -> None:
    """Each request example succeeds for every customer with the documented result fields."""
    status, body = await _post(_sim(), path, example)
    assert status == 200
    _assert_bulk_shape(body, len(example["customers"]))
    assert body["failureCount"] == 0
    for entry in body["response"]:
        assert set(entry["result"]) == RESULT_KEYS | {id_field} | keys


@pytest.mark.parametrize(
    ("enrol", "earn"),
    [(ENROL_ONE_BY_ID, EARN_ONE_BY_ID), (ENROL_TWO_BY_MOBILE, EARN_TWO_BY_MOBILE)],
)
async def test_earn_examples_after_enrol_examples_carry_issual_and_earned_ids(
    enrol: dict[str, Any], earn: dict[str, Any]
) -> None:
    """The EARN examples, after the matching ENROL examples, answer issualId and earnedId."""
    sim = _sim()
    _, enrolled = await _post(sim, ENROL_AND_EARN, enrol)
    status, body = await _post(sim, ENROL_AND_EARN, earn)
    assert status == 200
    _assert_bulk_shape(body, len(earn["customers"]))
    for before, after in zip(enrolled["response"], body["response"], strict=True):
        assert set(after["result"]) == RESULT_KEYS | {"promotionId", "issualId", "earnedId"}
        assert after["result"]["issualId"] == before["result"]["issualId"]


async def test_revoke_earn_with_earn_ids_revokes_exactly_the_ids_sent() -> None:
    """The earnIds example revokes 959, then 960 and 963, then every earn of the third customer.

    The page's response shows [957] for a request of [959]; the simulator follows the request.
    """
    _, body = await _post(_sim(), REVOKE_ENROL_AND_EARN, REVOKE_EARN_WITH_EARN_IDS)
    assert [e["result"]["revokedEarnIds"] for e in body["response"]] == [[959], [960, 963], [961]]


async def test_revoke_direct_earn_example_with_typo_promotion_answers_8874() -> None:
    """revokeDirectEarn's first example (promotionId 5709, a typo of 57099) answers 8874."""
    status, body = await _post(_sim(), REVOKE_DIRECT_EARN, REVOKE_DIRECT_EARN_AS_WRITTEN)
    assert (status, body) == (200, _single(8874, "promotion id passed is invalid"))


async def test_revoke_direct_earn_example_with_earn_ids_is_not_json_and_answers_8881() -> None:
    """The page's "With earned Id" body is invalid JSON: HTTP 400 with an 8881 entry."""
    sim = _sim()
    async with sim.client() as client:
        response = await client.post(
            REVOKE_DIRECT_EARN,
            content=doc.DIRECT_REVOKE_EARN_IDS,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["response"][0]["errors"][0]["code"] == 8881


async def test_revoke_direct_earn_example_with_earn_ids_fixed_revokes_them() -> None:
    """The "With earned Id" example with earnIds as a list revokes 66 and 67."""
    body = page_json(doc.DIRECT_REVOKE_EARN_IDS)
    status, answer = await _post(_sim(), REVOKE_DIRECT_EARN, body)
    assert status == 200
    _assert_bulk_shape(answer, 1)
    assert answer["response"][0]["result"]["revokedEarnIds"] == [66, 67]
    assert answer["response"][0]["result"]["entityId"] == 423927902


# -- documented error examples, reproduced --------------------------------------------------------

UNSUPPORTED = "bulk action passed not supported for loyalty/generic promotion type"
REVOKE_UNSUPPORTED = "revoke bulk action passed not supported for loyalty/generic promotion type"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        pytest.param(
            ENROL_AND_EARN,
            _bulk("ENROL", 2714, 202090, ["423926199", "423926198"]),
            _single(8902, UNSUPPORTED),
            id="8902-enrol-on-direct",
        ),
        pytest.param(
            REVOKE_ENROL_AND_EARN,
            _bulk("REVOKE_ENROL", 2714, 202780, ["423927867"]),
            _single(8902, REVOKE_UNSUPPORTED),
            id="8902-revoke-enrol-on-direct",
        ),
        pytest.param(
            REVOKE_DIRECT_EARN,
            _bulk("REVOKE_EARN", 2714, 202783, ["423927867"]),
            _single(8902, REVOKE_UNSUPPORTED),
            id="8902-revoke-direct-earn-on-generic",
        ),
        pytest.param(
            ENROL_AND_EARN,
            _bulk("ENROL", 999999, 202779, ["423927867", "423927868", "423926199"]),
            _single(1101, "invalid programId passed"),
            id="1101-one-entry-for-three-customers",
        ),
        pytest.param(
            REVOKE_ENROL_AND_EARN,
            _bulk("REVOKE_EARN", 2714, 202782, ["423927867"]),
            _single(8892, "promotion is inactive"),
            id="8892",
        ),
        pytest.param(
            REVOKE_DIRECT_EARN,
            _bulk("REVOKE_EARN", 2714, 1, ["423927867"]),
            _single(8874, "promotion id passed is invalid"),
            id="8874",
        ),
        pytest.param(
            ENROL_AND_EARN,
            {**_bulk("ENROL", 2714, 202779, ["423927867"]), "type": "ORDER"},
            _single(8901, "invalid entity type passed"),
            id="8901",
        ),
        pytest.param(
            REVOKE_DIRECT_EARN,
            {**_bulk("REVOKE_EARN", 2714, 202780, ["423927867"]), "type": "USERGROUP2"},
            _single(8899, "Cannot enrol/issue to the user group"),
            id="8899",
        ),
        pytest.param(
            REVOKE_DIRECT_EARN,
            {
                **_bulk("REVOKE_EARN", 2714, 202780, ["423927867"]),
                "promotionDetails": {"programId": 2714},
            },
            _single(
                8881,
                "insufficient parameters passed, "
                "program id and one of promotion id/identifier are required",
            ),
            id="8881",
        ),
    ],
)
async def test_documented_request_level_error_is_reproduced(
    path: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A request-level problem answers the page's single-entry error example exactly."""
    sim = _sim()
    assert await _post(sim, path, body) == (200, expected)
    assert sim.ledger.total() == 0


async def test_injected_8896_answers_the_documented_example() -> None:
    """A scripted 8896 answers the page's "Error occurred while issuing" example exactly."""
    sim = Simulator(faults=Faults(script=("8896",)))
    status, body = await _post(sim, ENROL_AND_EARN, ENROL_ONE_BY_ID)
    assert (status, body) == (
        200,
        _single(8896, "Error occurred while issuing promotion to the customer"),
    )
    assert sim.ledger.total() == 0


async def test_revoke_direct_earn_unknown_customer_answers_documented_8015() -> None:
    """revokeDirectEarn for an unknown customer answers the page's 8015 example."""
    sim = _sim(auto_register_customers=False)
    body = _bulk("REVOKE_EARN", 469, 57099, ["111111"])
    assert await _post(sim, REVOKE_DIRECT_EARN, body) == (
        200,
        _single(8015, "Customer not found for the given identifiers"),
    )


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        pytest.param(
            REVOKE_ENROL_AND_EARN,
            _bulk(
                "REVOKE_EARN",
                2714,
                202780,
                ["423927867"],
                customers=[{"identifierValue": "423927867", "source": "INSTORE", "earnIds": [1]}],
            ),
            8903,
            id="8903-unknown-earn-id",
        ),
        pytest.param(
            REVOKE_ENROL_AND_EARN,
            _bulk("REVOKE_EARN", 2714, 202779, ["423927867"]),
            8903,
            id="8903-nothing-earned",
        ),
        pytest.param(
            REVOKE_DIRECT_EARN, _bulk("REVOKE_EARN", 2714, 202779, ["423927867"]), 2305, id="2305"
        ),
        pytest.param(
            ENROL_AND_EARN,
            _bulk(
                "ENROL",
                2714,
                202779,
                [],
                customers=[{"identifierValue": "423927867", "source": ""}],
            ),
            11013,
            id="11013-empty-source",
        ),
        pytest.param(
            ENROL_AND_EARN,
            _bulk(
                "ENROL", 2714, 202779, [], customers=[{"identifierValue": "", "source": "INSTORE"}]
            ),
            11013,
            id="11013-empty-value",
        ),
        pytest.param(
            ENROL_AND_EARN,
            {**_bulk("ENROL", 2714, 202779, ["423927867"]), "identifierName": ""},
            11013,
            id="11013-empty-identifier-name",
        ),
    ],
)
async def test_documented_customer_level_error_is_reproduced(
    path: str, body: dict[str, Any], code: int
) -> None:
    """A per-customer problem answers one failed entry with the documented code and message."""
    status, answer = await _post(_sim(), path, body)
    assert (status, answer) == (200, _single(code, message(code)))


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        pytest.param(
            "/v3.1/targetGroups/12/targets/34/unEnroll", [{"customerId": 777}], 310011, id="310011"
        ),
        pytest.param(
            "/v3.1/targetGroups/12/targets/35/unEnroll", UNENROLL_REQUEST, 310019, id="310019"
        ),
        pytest.param(
            "/v3.1/targetGroups/99/targets/34/unEnroll",
            UNENROLL_REQUEST,
            310017,
            id="310017-unknown",
        ),
        pytest.param(
            "/v3.1/targetGroups/13/targets/36/unEnroll",
            UNENROLL_REQUEST,
            310017,
            id="310017-deactivated",
        ),
        pytest.param(
            "/v3.1/targetGroups/12/targets/99/unEnroll", UNENROLL_REQUEST, 310018, id="310018"
        ),
        pytest.param(
            "/v3.1/targetGroups/12/targets/34/unEnroll",
            {"customerId": 423789336},
            300004,
            id="300004-not-a-list",
        ),
        pytest.param(
            "/v3.1/targetGroups/12/targets/34/unEnroll",
            [{"customerId": 1}, {"customerId": 2}],
            300004,
            id="300004-two-records",
        ),
        pytest.param(
            "/v3.1/targetGroups/x/targets/34/unEnroll", UNENROLL_REQUEST, 300004, id="300004-path"
        ),
    ],
)
async def test_documented_unenroll_error_is_reproduced(path: str, body: object, code: int) -> None:
    """Each documented unEnroll error answers HTTP 400 with data null and the code."""
    sim = _sim(auto_register_customers=False)
    status, answer = await _post(sim, path, body)
    assert status == 400
    assert answer["data"] is None
    assert answer["warnings"] is None
    assert [e["code"] for e in answer["errors"]] == [code]
    assert sim.ledger.total() == 0
