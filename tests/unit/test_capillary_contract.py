"""Contract tests: the client builds the endpoint pages' request examples and reads their answers.

Every request example of the four seed pages (doc_examples.py holds them verbatim, comments
included) is compared with the body the client sends for the equivalent commands, and the pages'
response examples are fed back to the client. Two deliberate normalisations, both documented in
the client:

- The revokeEnrolAndEarn examples write promotionId as a string ("202779"); the parameter table
  says Integer and the other pages send a number: we send the integer.
- Sources go out exactly as the event gives them ("instore" on the revoke page, "INSTORE"
  elsewhere); the equivalent commands here carry the page's spelling.

The revokeDirectEarn "With earned Id" example is not valid JSON (`"earnIds": 66,67,`); it is
repaired to the array its parameter table describes (`page_json`), and reproduced with
`revoke_direct_earn_bulk_action=False` because that example carries no bulkAction.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from capillary_fakes import PASSWORD, applied_for, batch, command, config, make_client

from doc_examples import (
    ACTION_NOT_SUPPORTED,
    DIRECT_EARN_RESPONSE,
    DIRECT_REVOKE,
    DIRECT_REVOKE_EARN_IDS,
    EARN_ID,
    EARN_MOBILE,
    ENROL_ID,
    ENROL_MOBILE,
    ENROL_RESPONSE,
    PARTIAL_RESPONSE,
    REVOKE_EARN_IDENTIFIER,
    REVOKE_EARN_IDS,
    REVOKE_EARN_RESPONSE,
    REVOKE_ENROL_ONE,
    REVOKE_ENROL_RESPONSE_WITH_ISSUAL_ID,
    REVOKE_ENROL_TWO,
    UNENROLL,
    UNENROLL_RESPONSE,
    page_json,
    strip_comments,
)
from promo_bridge.capillary import basic_authorization
from promo_bridge.domain.commands import (
    Action,
    Command,
    IdentifierName,
    PromotionRef,
    TargetRef,
)
from promo_bridge.domain.outcomes import ErrorClass, OutcomeStatus


def _page_json(text: str) -> Any:
    document = page_json(text)
    # Documented normalisation: promotionId goes out as the integer the tables specify.
    if isinstance(document, dict):
        details = document["promotionDetails"]
        if isinstance(details.get("promotionId"), str):
            details["promotionId"] = int(details["promotionId"])
    return document


def _cmd(
    action: Action,
    value: str,
    promotion: PromotionRef | None,
    *,
    name: IdentifierName = IdentifierName.ID,
    source: str = "INSTORE",
    earn_ids: tuple[int, ...] = (),
    target: TargetRef | None = None,
) -> Command:
    return command(
        0,
        action=action,
        value=value,
        promotion=promotion,
        identifier_name=name,
        source=source,
        earn_ids=earn_ids,
        target=target,
        command_id=f"{action}-{value}",
    )


P469_57099 = PromotionRef(program_id=469, promotion_id=57099)
P469_69218 = PromotionRef(program_id=469, promotion_id=69218)
P2714_202779 = PromotionRef(program_id=2714, promotion_id=202779)
P2714_95C = PromotionRef(program_id=2714, promo_identifier="95c77d88-470c-4dd3-bde4-606ae1b64277")
P2714_1D9 = PromotionRef(program_id=2714, promo_identifier="1d9e540d-ae2c-443f-9d0d-7ac146bf93f2")
MOBILE = IdentifierName.MOBILE

CASES: list[tuple[str, str, list[Command], str, dict[str, Any]]] = [
    (
        "enrol-by-id",
        ENROL_ID,
        [_cmd(Action.ENROL, "555567088", P469_57099)],
        "/v2/promotion/bulk/enrolAndEarn",
        {},
    ),
    (
        "enrol-by-mobile",
        ENROL_MOBILE,
        [
            _cmd(Action.ENROL, "11223569865", P469_69218, name=MOBILE),
            _cmd(Action.ENROL, "919986000586", P469_69218, name=MOBILE),
        ],
        "/v2/promotion/bulk/enrolAndEarn",
        {},
    ),
    (
        "earn-by-id",
        EARN_ID,
        [_cmd(Action.EARN, "555567088", P469_57099)],
        "/v2/promotion/bulk/enrolAndEarn",
        {},
    ),
    (
        "earn-by-mobile",
        EARN_MOBILE,
        [
            _cmd(Action.EARN, "11223569865", P469_69218, name=MOBILE),
            _cmd(Action.EARN, "919986000586", P469_69218, name=MOBILE),
        ],
        "/v2/promotion/bulk/enrolAndEarn",
        {},
    ),
    (
        "revoke-enrol-one",
        REVOKE_ENROL_ONE,
        [_cmd(Action.REVOKE_ENROL, "423927867", P2714_202779, source="instore")],
        "/v2/promotion/bulk/revokeEnrolAndEarn",
        {},
    ),
    (
        "revoke-enrol-two",
        REVOKE_ENROL_TWO,
        [
            _cmd(Action.REVOKE_ENROL, "423927867", P2714_202779, source="instore"),
            _cmd(Action.REVOKE_ENROL, "423927868", P2714_202779, source="instore"),
        ],
        "/v2/promotion/bulk/revokeEnrolAndEarn",
        {},
    ),
    (
        "revoke-earn-by-promo-identifier",
        REVOKE_EARN_IDENTIFIER,
        [_cmd(Action.REVOKE_EARN, "423927867", P2714_95C, source="instore")],
        "/v2/promotion/bulk/revokeEnrolAndEarn",
        {},
    ),
    (
        "revoke-earn-with-earn-ids",
        REVOKE_EARN_IDS,
        [
            _cmd(Action.REVOKE_EARN, "423927848", P2714_1D9, source="instore", earn_ids=(959,)),
            _cmd(Action.REVOKE_EARN, "423927855", P2714_1D9, source="instore", earn_ids=(960, 963)),
            _cmd(Action.REVOKE_EARN, "423927856", P2714_1D9, source="instore"),
        ],
        "/v2/promotion/bulk/revokeEnrolAndEarn",
        {},
    ),
    (
        "revoke-direct-earn",
        DIRECT_REVOKE,
        [
            _cmd(Action.REVOKE_DIRECT_EARN, "98662653", PromotionRef(469, 5709)),
            _cmd(Action.REVOKE_DIRECT_EARN, "9866296543", PromotionRef(469, 5709)),
        ],
        "/v2/promotion/bulk/revokeDirectEarn",
        {},
    ),
    (
        "revoke-direct-earn-with-earn-ids",
        DIRECT_REVOKE_EARN_IDS,
        [
            _cmd(
                Action.REVOKE_DIRECT_EARN,
                "919986000585",
                P469_57099,
                name=MOBILE,
                earn_ids=(66, 67),
            )
        ],
        "/v2/promotion/bulk/revokeDirectEarn",
        {"revoke_direct_earn_bulk_action": False},
    ),
    (
        "unenroll",
        UNENROLL,
        [_cmd(Action.UNENROLL, "423789336", None, target=TargetRef(12, 34))],
        "/v3.1/targetGroups/12/targets/34/unEnroll",
        {},
    ),
]


def _answer(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/unEnroll"):
        return httpx.Response(200, json={"data": 423789336, "errors": None, "warnings": None})
    return httpx.Response(200, json=applied_for(request))


@pytest.mark.parametrize(
    ("page_example", "commands", "path", "overrides"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_request_body_equals_page_example(
    page_example: str, commands: list[Command], path: str, overrides: dict[str, Any]
) -> None:
    """The client POSTs exactly the page's example body, to the page's path, for that command."""
    client, api, _ = make_client(_answer, cfg=config(**overrides))
    async with client:
        await client.send(batch(commands))
    assert len(api.requests) == 1
    request = api.requests[0]
    assert request.method == "POST"
    assert request.url.path == path
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == _page_json(page_example)


def test_every_page_request_example_is_covered() -> None:
    """The case list holds all eleven request examples of the four seed pages."""
    assert len(CASES) == 11
    assert len({case[1] for case in CASES}) == 11


def test_basic_header_matches_the_worked_example() -> None:
    """till store.server + password server123 gives FACTS.md's header value exactly."""
    assert basic_authorization("store.server", PASSWORD) == (
        "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
    )


async def test_basic_header_is_sent_on_every_call() -> None:
    """A Basic-auth client sends the worked example's Authorization header."""
    client, api, _ = make_client(_answer)
    async with client:
        await client.send(batch([command(0), command(1)]))
    assert api.requests[0].headers["authorization"] == (
        "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
    )


async def test_unenroll_path_prefix_is_configurable() -> None:
    """The unEnroll prefix follows config (the gateway form FACTS.md mentions)."""
    cfg = config(unenroll_path_prefix="/api_gateway/intouch-api-v3/v3.1/")
    client, api, _ = make_client(_answer, cfg=cfg)
    async with client:
        await client.send(batch([command(0, action=Action.UNENROLL, value="423789336")]))
    assert api.requests[0].url.path == (
        "/api_gateway/intouch-api-v3/v3.1/targetGroups/12/targets/34/unEnroll"
    )


# --------------------------------------------------------------------------- page responses


def _replying(text: str) -> Any:
    def handler(_request: httpx.Request) -> httpx.Response:
        content = strip_comments(text).encode()
        return httpx.Response(200, content=content, headers={"X-Cap-Requestid": "rq"})

    return handler


async def test_enrol_response_example_gives_issual_ids() -> None:
    """The enrol success example maps issualIds to the four customers by position."""
    values = ["423926199", "423926198", "423926200", "423926201"]
    client, _, _ = make_client(_replying(ENROL_RESPONSE))
    async with client:
        results = await client.send(batch([command(n, value=v) for n, v in enumerate(values)]))
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * 4
    assert [r.issual_id for r in results] == ["847", "848", "849", "850"]
    assert {r.request_id for r in results} == {"rq"}


async def test_direct_earn_response_example_with_comments_gives_earned_ids() -> None:
    """The direct-issue EARN example (dummy issualIds) yields each customer's earnedId."""
    values = ["423926199", "423926198", "423926200", "423926201"]
    cmds = [command(n, action=Action.EARN, value=v) for n, v in enumerate(values)]
    client, _, _ = make_client(_replying(DIRECT_EARN_RESPONSE))
    async with client:
        results = await client.send(batch(cmds))
    assert [r.earned_id for r in results] == ["794", "795", "796", "797"]
    assert [r.issual_id for r in results] == ["837", "838", "839", "840"]


async def test_partial_failure_example_maps_by_position() -> None:
    """One success and three 8015s: the first customer applied, the others rejected."""
    values = ["170940055", "1", "2", "3"]
    cmds = [command(n, action=Action.EARN, value=v) for n, v in enumerate(values)]
    client, _, _ = make_client(_replying(PARTIAL_RESPONSE))
    async with client:
        results = await client.send(batch(cmds))
    assert results[0].status is OutcomeStatus.APPLIED
    assert results[0].earned_id == "102"
    assert [r.status for r in results[1:]] == [OutcomeStatus.REJECTED] * 3
    assert {(r.error_class, r.error_code) for r in results[1:]} == {(ErrorClass.REJECTED, 8015)}
    assert results[1].error_message == "Customer not found for the given identifiers"


async def test_request_level_example_applies_to_every_customer() -> None:
    """The single 8902 entry answers a four-customer batch: all rejected with class config."""
    client, _, _ = make_client(_replying(ACTION_NOT_SUPPORTED))
    async with client:
        results = await client.send(batch([command(n) for n in range(4)]))
    assert [(r.status, r.error_class, r.error_code) for r in results] == [
        (OutcomeStatus.REJECTED, ErrorClass.CONFIG, 8902)
    ] * 4


async def test_revoke_enrol_example_issual_id_is_the_revoked_one() -> None:
    """The REVOKE_ENROL example calls the revoked issual `issualId`: it is revoked_issual_id."""
    cmd = command(0, action=Action.REVOKE_ENROL, value="423926199")
    client, _, _ = make_client(_replying(REVOKE_ENROL_RESPONSE_WITH_ISSUAL_ID))
    async with client:
        [result] = await client.send(batch([cmd]))
    assert result.status is OutcomeStatus.APPLIED
    assert result.revoked_issual_id == "847"
    assert result.issual_id is None


async def test_revoke_earn_example_gives_revoked_earn_ids() -> None:
    """The REVOKE_EARN example's revokedEarnIds land on the matching customers."""
    cmds = [
        command(0, action=Action.REVOKE_EARN, value="423927867", promotion=P2714_95C),
        command(1, action=Action.REVOKE_EARN, value="423927868", promotion=P2714_95C),
    ]
    client, _, _ = make_client(_replying(REVOKE_EARN_RESPONSE))
    async with client:
        results = await client.send(batch(cmds))
    assert [r.revoked_earn_ids for r in results] == [(974,), (975, 977)]


async def test_unenroll_example_response_is_applied() -> None:
    """unEnroll answering data == customerId applies the un-enrol."""
    cmd = command(0, action=Action.UNENROLL, value="423789336")
    client, _, _ = make_client(_replying(UNENROLL_RESPONSE))
    async with client:
        [result] = await client.send(batch([cmd]))
    assert result.status is OutcomeStatus.APPLIED
    assert result.error_code is None
