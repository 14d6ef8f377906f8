"""The client's matching, splitting, chunking and reporting rules (DESIGN.md, "Responses")."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from capillary_fakes import (
    BASE_URL,
    applied_for,
    batch,
    bulk,
    command,
    config,
    err,
    make_client,
    ok,
)
from pydantic import ValidationError

from promo_bridge.capillary import (
    ApiUnavailable,
    BasicAuth,
    ClientConfig,
    ClientHooks,
    SplitReason,
)
from promo_bridge.domain.commands import (
    Action,
    Command,
    Endpoint,
    IdentifierName,
    PromotionRef,
    PromotionType,
)
from promo_bridge.domain.outcomes import ErrorClass, OutcomeStatus

ENROL = Endpoint.ENROL_AND_EARN


def _customers(request: httpx.Request) -> list[str]:
    return [c["identifierValue"] for c in json.loads(request.content)["customers"]]


# --------------------------------------------------------------------------- matching


async def test_single_request_level_entry_applies_to_all() -> None:
    """One 8892 entry answering five customers rejects all five with class config."""
    client, api, _ = make_client(lambda _r: httpx.Response(200, json=bulk(err(8892))))
    async with client:
        results = await client.send(batch([command(n) for n in range(5)]))
    assert [(r.status, r.error_class, r.error_code) for r in results] == [
        (OutcomeStatus.REJECTED, ErrorClass.CONFIG, 8892)
    ] * 5
    assert len(api.requests) == 1


async def test_request_level_retryable_entry_retries_everyone() -> None:
    """One 8896 entry for three customers resends all three."""
    answers = [bulk(err(8896))]
    client, api, _ = make_client(
        lambda r: httpx.Response(200, json=answers.pop(0) if answers else applied_for(r))
    )
    async with client:
        results = await client.send(batch([command(n) for n in range(3)]))
    assert [r.attempts for r in results] == [2, 2, 2]
    assert [len(c) for c in api.customers()] == [3, 3]


async def test_count_mismatch_splits_in_halves_and_resends() -> None:
    """Three entries for four customers: the call is split into two halves, each resent."""
    splits: list[tuple[Any, ...]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        values = _customers(request)
        if len(values) == 4:
            return httpx.Response(200, json=bulk(*(ok(v) for v in values[:3])))
        return httpx.Response(200, json=bulk(*(ok(v, earnedId=f"e{v}") for v in values)))

    client, api, _ = make_client(handler, hooks=ClientHooks(on_split=lambda *a: splits.append(a)))
    async with client:
        results = await client.send(batch([command(n, action=Action.EARN) for n in range(4)]))
    assert [r.earned_id for r in results] == [f"e{423_927_000 + n}" for n in range(4)]
    assert [len(c) for c in api.customers()] == [4, 2, 2]
    assert [r.attempts for r in results] == [2, 2, 2, 2]
    assert splits == [(ENROL, SplitReason.AMBIGUOUS_RESPONSE)]


async def test_entity_id_mismatch_splits() -> None:
    """Entries in the wrong order (entityId not the customer sent there) are never trusted."""

    def handler(request: httpx.Request) -> httpx.Response:
        values = _customers(request)
        return httpx.Response(200, json=bulk(*(ok(v) for v in reversed(values))))

    client, api, _ = make_client(handler)
    async with client:
        results = await client.send(batch([command(0), command(1)]))
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * 2
    assert api.customers() == [["423927000", "423927001"], ["423927000"], ["423927001"]]


async def test_single_entry_without_request_level_code_splits() -> None:
    """One 8015 entry for three customers cannot say whose it is: split until it can."""

    def handler(request: httpx.Request) -> httpx.Response:
        values = _customers(request)
        if len(values) > 1:
            return httpx.Response(200, json=bulk(err(8015)))
        return httpx.Response(
            200, json=bulk(err(8015) if values[0] == "423927001" else ok(values[0]))
        )

    client, _, _ = make_client(handler)
    async with client:
        results = await client.send(batch([command(n) for n in range(3)]))
    assert [r.status for r in results] == [
        OutcomeStatus.APPLIED,
        OutcomeStatus.REJECTED,
        OutcomeStatus.APPLIED,
    ]


async def test_ambiguous_single_customer_fails_without_guessing() -> None:
    """A one-customer call answered for someone else ends FAILED at once, not resent."""
    client, api, _ = make_client(lambda _r: httpx.Response(200, json=bulk(ok(999))))
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.FAILED
    assert result.error_class is None
    assert result.extra == {"failure": "ambiguous_response"}
    assert result.error_message is not None
    assert "ambiguous response" in result.error_message
    assert len(api.requests) == 1


async def test_persistent_ambiguity_splits_down_to_single_customers() -> None:
    """Ambiguous at every size: 4 → 2+2 → 1+1+1+1, all FAILED after seven requests."""
    client, api, _ = make_client(lambda _r: httpx.Response(200, json=bulk()))
    async with client:
        results = await client.send(batch([command(n) for n in range(4)]))
    assert [r.status for r in results] == [OutcomeStatus.FAILED] * 4
    assert sorted(len(c) for c in api.customers()) == [1, 1, 1, 1, 2, 2, 4]


async def test_entry_without_result_or_errors_is_ambiguous() -> None:
    """An entry with neither result nor errors is not read as success."""
    client, _, _ = make_client(lambda _r: httpx.Response(200, json=bulk({"warnings": []})))
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.FAILED


async def test_mobile_identifiers_match_by_position_only() -> None:
    """With identifierName mobile, entityIds (customer ids) are not compared to mobiles."""
    client, _, _ = make_client(
        lambda _r: httpx.Response(200, json=bulk(ok(1, issualId="a"), ok(2, issualId="b")))
    )
    cmds = [
        command(n, identifier_name=IdentifierName.MOBILE, value=f"9199860005{n}") for n in range(2)
    ]
    async with client:
        results = await client.send(batch(cmds))
    assert [r.issual_id for r in results] == ["a", "b"]


async def test_batch_limit_code_splits_then_rejects_a_single() -> None:
    """1060 (batch limit exceeded) splits the batch; the halves that fit go through."""
    splits: list[tuple[Any, ...]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        values = _customers(request)
        if len(values) > 2:
            return httpx.Response(200, json=bulk(err(1060, "batch limit exceeded")))
        return httpx.Response(200, json=applied_for(request))

    client, api, _ = make_client(handler, hooks=ClientHooks(on_split=lambda *a: splits.append(a)))
    async with client:
        results = await client.send(batch([command(n) for n in range(4)]))
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * 4
    assert [len(c) for c in api.customers()] == [4, 2, 2]
    assert splits == [(ENROL, SplitReason.BATCH_LIMIT)]


async def test_batch_limit_code_for_one_customer_is_a_config_rejection() -> None:
    """1060 for a single customer cannot be split further: rejected with class config."""
    client, _, _ = make_client(lambda _r: httpx.Response(200, json=bulk(err(1060))))
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert (result.status, result.error_class, result.error_code) == (
        OutcomeStatus.REJECTED,
        ErrorClass.CONFIG,
        1060,
    )


async def test_partial_failure_status_201_is_read() -> None:
    """HTTP 201 (older docs: one or more failed) carries a normal bulk body."""
    client, _, _ = make_client(lambda _r: httpx.Response(201, json=bulk(ok(423927000), err(8015))))
    async with client:
        results = await client.send(batch([command(0), command(1)]))
    assert [r.status for r in results] == [OutcomeStatus.APPLIED, OutcomeStatus.REJECTED]


async def test_warnings_are_kept_in_extra() -> None:
    """Entry warnings are visible in the result's extra, not dropped."""
    entry = ok(423927000)
    entry["warnings"] = [{"message": "promotion ends soon"}]
    client, _, _ = make_client(lambda _r: httpx.Response(200, json=bulk(entry)))
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.extra == {"warnings": "promotion ends soon"}


DIRECT = PromotionRef(2714, promotion_id=202780, kind=PromotionType.DIRECT_ISSUE)


async def test_a_direct_issue_earn_keeps_its_dummy_issual_id_out_of_issual_id() -> None:
    """EARN on a direct-issue promotion: issual_id None, the dummy in extra, earnedId kept."""
    earns = [command(n, action=Action.EARN, promotion=DIRECT) for n in range(2)]
    entries = [ok(423927000 + n, issualId=f"99{n}", earnedId=f"88{n}") for n in range(2)]
    client, _, _ = make_client(lambda _r: httpx.Response(200, json=bulk(*entries)))
    async with client:
        results = await client.send(batch(earns))
    assert [(r.issual_id, r.earned_id, r.extra) for r in results] == [
        (None, "880", {"dummy_issual_id": "990"}),
        (None, "881", {"dummy_issual_id": "991"}),
    ]


@pytest.mark.parametrize("kind", [PromotionType.ENROL_AND_ISSUE, None])
async def test_an_earn_on_another_or_unknown_promotion_type_keeps_its_issual_id(
    kind: PromotionType | None,
) -> None:
    """EARN on an enrol-and-issue promotion, or one of unknown type: the issualId is real."""
    promotion = PromotionRef(2714, promotion_id=202779, kind=kind)
    earn = command(0, action=Action.EARN, promotion=promotion)
    answer = bulk(ok(423927000, issualId="845", earnedId="880"))
    client, _, _ = make_client(lambda _r: httpx.Response(200, json=answer))
    async with client:
        [result] = await client.send(batch([earn]))
    assert (result.issual_id, result.earned_id, result.extra) == ("845", "880", {})


# --------------------------------------------------------------------------- chunking


async def test_batch_larger_than_the_limit_is_split_by_the_limit() -> None:
    """250 enrols go out as 100 + 100 + 50, and the results keep batch order."""
    client, api, _ = make_client(lambda r: httpx.Response(200, json=applied_for(r)))
    cmds = [command(n) for n in range(250)]
    async with client:
        results = await client.send(batch(cmds))
    assert sorted(len(c) for c in api.customers()) == [50, 100, 100]
    assert [r.command_id for r in results] == [c.command_id for c in cmds]


async def test_revoke_direct_earn_uses_its_own_limit() -> None:
    """revokeDirectEarn defaults to 10 customers per call."""
    client, api, _ = make_client(lambda r: httpx.Response(200, json=applied_for(r)))
    async with client:
        await client.send(batch([command(n, action=Action.REVOKE_DIRECT_EARN) for n in range(25)]))
    assert sorted(len(c) for c in api.customers()) == [5, 10, 10]


async def test_unenroll_sends_one_record_per_call() -> None:
    """Three un-enrols make three calls of one customerId each."""

    def handler(request: httpx.Request) -> httpx.Response:
        [record] = json.loads(request.content)
        return httpx.Response(200, json={"data": record["customerId"], "errors": None})

    client, api, _ = make_client(handler)
    async with client:
        results = await client.send(batch([command(n, action=Action.UNENROLL) for n in range(3)]))
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * 3
    assert sorted(json.loads(r.content)[0]["customerId"] for r in api.requests) == [
        423_927_000,
        423_927_001,
        423_927_002,
    ]


async def test_same_customer_twice_goes_in_order_in_separate_calls() -> None:
    """A customer appearing twice is never in one call twice, and its second command waits."""
    cmds = [command(0), command(1), command(2, value="423927000")]
    client, api, _ = make_client(lambda r: httpx.Response(200, json=applied_for(r)))
    async with client:
        results = await client.send(batch(cmds))
    assert api.customers() == [["423927000", "423927001"], ["423927000"]]
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * 3


async def test_partial_unavailability_reports_completed_and_pending() -> None:
    """One call of a batch succeeds and another stays unavailable: both are reported."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "423927002" in _customers(request):
            return httpx.Response(503)
        return httpx.Response(200, json=applied_for(request))

    cmds = [command(n) for n in range(4)]
    limits = {Endpoint.ENROL_AND_EARN: 2}
    client, _, _ = make_client(handler, cfg=config(batch_limits=limits, max_attempts=2))
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(cmds))
    assert [r.command_id for r in caught.value.completed] == ["cmd-0", "cmd-1"]
    assert caught.value.pending == (cmds[2], cmds[3])
    assert "2 pending, 2 completed" in str(caught.value)


async def test_later_wave_is_held_when_an_earlier_one_is_pending() -> None:
    """A customer's second command is never sent while its first is still pending."""
    cmds = [command(0), command(1, value="423927000")]
    client, api, _ = make_client(lambda _r: httpx.Response(500), cfg=config(max_attempts=2))
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(cmds))
    assert caught.value.pending == tuple(cmds)
    assert len(api.requests) == 2
    assert caught.value.attempts == {"cmd-0": 2, "cmd-1": 0}


# --------------------------------------------------------------------------- results


async def test_results_carry_request_id_batch_id_and_attempts() -> None:
    """X-Cap-Requestid, the batch id and attempts (including earlier sends) are in results."""
    client, _, _ = make_client(
        lambda r: httpx.Response(200, json=applied_for(r), headers={"X-Cap-Requestid": "req-9"})
    )
    async with client:
        [result] = await client.send(batch([command(0)], batch_id="batch-42", attempts=2))
    assert (result.request_id, result.batch_id, result.attempts) == ("req-9", "batch-42", 3)


async def test_unenroll_without_numeric_id_is_never_sent() -> None:
    """unEnroll needs a numeric customer id: a bad one is rejected without a call."""
    client, api, _ = make_client(lambda r: httpx.Response(200, json={"data": 1}))
    async with client:
        [result] = await client.send(batch([command(0, action=Action.UNENROLL, value="12a")]))
    assert (result.status, result.error_class) == (OutcomeStatus.REJECTED, ErrorClass.REJECTED)
    assert result.attempts == 0
    assert api.requests == []


async def test_unenroll_by_mobile_is_a_config_rejection() -> None:
    """unEnroll keyed by mobile cannot be expressed on the wire: rejected with class config."""
    cmd = command(0, action=Action.UNENROLL, identifier_name=IdentifierName.MOBILE)
    client, api, _ = make_client(lambda r: httpx.Response(200, json={"data": 1}))
    async with client:
        [result] = await client.send(batch([cmd]))
    assert (result.status, result.error_class) == (OutcomeStatus.REJECTED, ErrorClass.CONFIG)
    assert api.requests == []


async def test_empty_batch_returns_no_results() -> None:
    """An empty batch needs no call."""
    client, api, _ = make_client(lambda r: httpx.Response(500))
    cmd = command(0)
    async with client:
        assert await client.send(dataclasses.replace(batch([cmd]), commands=())) == []
    assert api.requests == []


async def test_mixed_batch_keys_are_a_caller_bug() -> None:
    """A command of another batch key in the batch raises ValueError before any call."""
    other = command(1, promotion=PromotionRef(program_id=1, promotion_id=2))
    client, api, _ = make_client(lambda r: httpx.Response(500))
    async with client:
        with pytest.raises(ValueError, match="does not belong"):
            await client.send(
                dataclasses.replace(batch([command(0)]), commands=(command(0), other))
            )
    assert api.requests == []


async def test_repeated_command_is_a_caller_bug() -> None:
    """The same command twice in a batch raises ValueError (it would be applied twice)."""
    client, _, _ = make_client(lambda r: httpx.Response(500))
    async with client:
        with pytest.raises(ValueError, match="twice"):
            await client.send(batch([command(0), command(0)]))


async def test_earn_ids_on_an_enrol_are_a_caller_bug() -> None:
    """earn_ids only belong to revoke earns."""
    client, _, _ = make_client(lambda r: httpx.Response(500))
    async with client:
        with pytest.raises(ValueError, match="earn_ids"):
            await client.send(batch([command(0, earn_ids=(1,))]))


# --------------------------------------------------------------------------- plumbing


async def test_in_flight_requests_are_bounded() -> None:
    """With max_in_flight 3, twenty concurrent sends never have more than 3 requests open."""
    open_now = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        for _ in range(5):
            await asyncio.sleep(0)
        open_now -= 1
        return httpx.Response(200, json=applied_for(request))

    client, api, _ = make_client(handler, cfg=config(max_in_flight=3))
    async with client:
        await asyncio.gather(
            *(client.send(batch([command(n)], batch_id=f"b{n}")) for n in range(20))
        )
    assert peak == 3
    assert len(api.requests) == 20


async def test_on_request_hook_sees_every_call() -> None:
    """on_request gets endpoint, HTTP status, duration and request id for each request."""
    seen: list[tuple[Any, ...]] = []
    client, _, _ = make_client(
        lambda r: httpx.Response(200, json=applied_for(r), headers={"X-Cap-Requestid": "abc"}),
        hooks=ClientHooks(on_request=lambda *args: seen.append(args)),
    )
    async with client:
        await client.send(batch([command(0)]))
    [(endpoint, status, seconds, request_id)] = seen
    assert (endpoint, status, request_id) == (ENROL, 200, "abc")
    assert seconds >= 0


async def test_a_failing_hook_does_not_break_the_call() -> None:
    """A hook that raises is contained: the result still comes back."""

    def broken(*_args: object) -> None:
        raise RuntimeError("metrics down")

    client, _, _ = make_client(
        lambda r: httpx.Response(200, json=applied_for(r)),
        hooks=ClientHooks(on_request=broken),
    )
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.APPLIED


async def test_closed_client_refuses_to_send() -> None:
    """After aclose(), send() raises instead of using a closed connection pool."""
    client, _, _ = make_client(lambda r: httpx.Response(200, json=applied_for(r)))
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.send(batch([command(0)]))


# --------------------------------------------------------------------------- config


def _config(**values: Any) -> ClientConfig:
    return ClientConfig(base_url=BASE_URL, auth=BasicAuth(till_code="t", password="p"), **values)


def test_config_defaults_follow_the_documented_limits() -> None:
    """Defaults: 100 per bulk call, revokeDirectEarn 10, unEnroll 1, 100 calls/min each."""
    cfg = _config()
    assert cfg.batch_limits == {
        Endpoint.ENROL_AND_EARN: 100,
        Endpoint.REVOKE_ENROL_AND_EARN: 100,
        Endpoint.REVOKE_DIRECT_EARN: 10,
        Endpoint.UNENROLL: 1,
    }
    assert set(cfg.calls_per_minute.values()) == {100}
    assert cfg.unenroll_path_prefix == "/v3.1"
    assert cfg.accepted_statuses == frozenset({200, 201})
    timeout = cfg.timeout
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (5.0, 30.0, 10.0, 5.0)


def test_config_partial_overrides_merge_with_defaults() -> None:
    """A partial per-endpoint mapping keeps the other defaults; one int applies to all."""
    cfg = _config(batch_limits={"revokeDirectEarn": 25}, calls_per_minute=30)
    assert cfg.batch_limits[Endpoint.REVOKE_DIRECT_EARN] == 25
    assert cfg.batch_limits[Endpoint.ENROL_AND_EARN] == 100
    assert set(cfg.calls_per_minute.values()) == {30}


@pytest.mark.parametrize(
    "values",
    [
        {"batch_limits": {"unEnroll": 2}},
        {"batch_limits": {"enrolAndEarn": 101}},
        {"batch_limits": {"enrolAndEarn": 0}},
        {"calls_per_minute": 0},
        {"base_url": "https://user:pw@eu.api.capillarytech.com"},
        {"base_url": "eu.api.capillarytech.com"},
        {"accepted_statuses": frozenset({200, 500})},
        {"backoff_base_s": 10, "backoff_cap_s": 1},
    ],
)
def test_config_rejects_unsafe_values(values: dict[str, Any]) -> None:
    """Limits the API cannot take, credentials in the URL and odd statuses fail at load."""
    values.setdefault("base_url", BASE_URL)
    with pytest.raises(ValidationError):
        ClientConfig(auth=BasicAuth(till_code="t", password="p"), **values)


async def test_before_request_runs_as_each_request_leaves_with_its_commands() -> None:
    """The hook sees each request's commands before the request; a failing hook sends nothing."""
    seen: list[tuple[int, list[str]]] = []
    client, api, _ = make_client(lambda r: httpx.Response(200, json=applied_for(r)))

    async def before(commands: Sequence[Command]) -> None:
        seen.append((len(api.requests), [c.command_id for c in commands]))

    async def broken(_commands: Sequence[Command]) -> None:
        raise RuntimeError("intent not written")

    sent = [command(n) for n in range(3)]
    async with client:
        await client.send(batch(sent), before_request=before)
        with pytest.raises(RuntimeError):
            await client.send(batch([command(7)]), before_request=broken)
    assert seen == [(0, [c.command_id for c in sent])]
    assert len(api.requests) == 1
