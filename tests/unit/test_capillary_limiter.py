"""The calls-per-window budget: calls are spread in time and no window ever holds more than N."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from capillary_fakes import (
    FakeClock,
    VirtualClock,
    applied_for,
    batch,
    command,
    config,
    make_client,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from promo_bridge.capillary import ClientHooks
from promo_bridge.capillary._limiter import CallBudget
from promo_bridge.domain.commands import Action, Endpoint


def _budget(clock: FakeClock, calls: int, window: float, burst: int = 1) -> CallBudget:
    return CallBudget(calls, window, burst=burst, clock=clock, sleep=clock.sleep)


def _max_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_calls_over_budget_are_evenly_spaced() -> None:
    """3 calls per 3 s: seven calls leave one per second, not three at once."""
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=3, window=3.0)
    times = []
    for _ in range(7):
        slot = await budget.acquire()
        times.append(clock.now)
        slot.release()
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


async def test_burst_leaves_back_to_back_then_spacing_applies() -> None:
    """With burst 3 of 6 per 6 s the first three go at once; the window still caps at six."""
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=6, window=6.0, burst=3)
    times = []
    for _ in range(8):
        slot = await budget.acquire()
        times.append(clock.now)
        slot.release()
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3:6] == [1.0, 2.0, 3.0]
    assert _max_in_window(times, 6.0) <= 6
    assert times[6] == 6.0


async def test_calls_in_flight_hold_their_place_until_they_end() -> None:
    """Two calls of a 2-per-10 s budget in flight: a third waits for a response plus a window."""
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=2, window=10.0, burst=2)
    first = await budget.acquire()
    second = await budget.acquire()
    third = asyncio.ensure_future(budget.acquire())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()
    clock.now = 3.0
    first.release()
    slot = await third
    # The response came at 3 s; the server may have counted it then, so not before 13 s.
    assert clock.now == 13.0
    assert slot.start == 13.0
    second.release()


async def test_cancelled_slot_gives_its_place_back() -> None:
    """A slot taken for a request that was never sent does not count in the window."""
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=1, window=10.0)
    (await budget.acquire()).cancel()
    clock.now = 10.0  # the spacing interval has passed; the window has not
    await budget.acquire()
    assert clock.now == 10.0


async def test_defer_holds_every_caller_until_the_given_time() -> None:
    """After defer(until), the next call waits until then (a 429's Retry-After)."""
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=100, window=60.0)
    (await budget.acquire()).release()
    budget.defer(25.0)
    await budget.acquire()
    assert clock.now == 25.0


async def test_waits_are_reported() -> None:
    """on_wait receives the time a caller waited for the budget."""
    clock = FakeClock(start=0.0)
    waits: list[float] = []
    budget = CallBudget(2, 4.0, clock=clock, sleep=clock.sleep, on_wait=waits.append)
    for _ in range(3):
        (await budget.acquire()).release()
    assert waits == [2.0, 2.0]


@settings(max_examples=60, deadline=None)
@given(
    calls=st.integers(min_value=1, max_value=6),
    burst=st.integers(min_value=1, max_value=6),
    latencies=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=25),
)
async def test_no_window_ever_holds_more_than_the_budget(
    calls: int, burst: int, latencies: list[float]
) -> None:
    """Whatever the burst and response times, the server sees at most N calls per window."""
    window = 10.0
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=calls, window=window, burst=burst)
    starts, ends = [], []
    for latency in latencies:
        slot = await budget.acquire()
        starts.append(clock.now)
        clock.advance(latency)
        slot.release()
        ends.append(clock.now)
    # The server saw each request somewhere between its start and its response.
    assert _max_in_window(starts, window) <= calls
    assert _max_in_window(ends, window) <= calls


def test_rejects_a_nonsense_budget() -> None:
    """Zero calls or a zero window is a configuration error, not a silent block."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="positive"):
        CallBudget(0, 60.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(ValueError, match="positive"):
        CallBudget(1, 0.0, clock=clock, sleep=clock.sleep)


async def test_client_spreads_calls_over_the_budget_in_time() -> None:
    """20 concurrent batches at 5 calls/min leave 12 s apart, never 6 in one minute."""
    clock = VirtualClock(start=0.0)
    waits: list[tuple[Endpoint, float]] = []
    hooks = ClientHooks(on_throttle_wait=lambda e, s: waits.append((e, s)))
    client, api, _ = make_client(
        lambda r: httpx.Response(200, json=applied_for(r)),
        cfg=config(calls_per_minute={Endpoint.ENROL_AND_EARN: 5}),
        clock=clock,
        hooks=hooks,
    )
    async with client:
        sends = [client.send(batch([command(n)], batch_id=f"b{n}")) for n in range(20)]
        await clock.run(asyncio.gather(*sends))
    assert api.times == [12.0 * n for n in range(20)]
    assert _max_in_window(api.times, 60.0) == 5
    assert len(waits) == 19
    assert {endpoint for endpoint, _ in waits} == {Endpoint.ENROL_AND_EARN}


async def test_budgets_are_per_endpoint() -> None:
    """An exhausted enrolAndEarn budget does not delay revokeEnrolAndEarn calls."""
    clock = VirtualClock(start=0.0)
    client, api, _ = make_client(
        lambda r: httpx.Response(200, json=applied_for(r)),
        cfg=config(calls_per_minute=1),
        clock=clock,
    )
    async with client:
        sends = [
            client.send(batch([command(0)], batch_id="e0")),
            client.send(batch([command(1)], batch_id="e1")),
            client.send(batch([command(2, action=Action.REVOKE_EARN)], batch_id="r0")),
        ]
        await clock.run(asyncio.gather(*sends))
    by_path = sorted(
        (t, r.url.path.rsplit("/", 1)[-1]) for t, r in zip(api.times, api.requests, strict=True)
    )
    assert by_path == [
        (0.0, "enrolAndEarn"),
        (0.0, "revokeEnrolAndEarn"),
        (60.0, "enrolAndEarn"),
    ]


async def test_resize_to_zero_holds_a_waiter_until_the_budget_grows() -> None:
    """At 0 calls an acquirer waits however long; a resize to N lets it through at once."""
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=6, window=60.0)
    budget.resize(0)
    waiter = asyncio.ensure_future(budget.acquire())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(3_600.0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    budget.resize(6)
    slot = await asyncio.wait_for(waiter, 1.0)
    assert slot.start == 3_600.0
    assert budget.calls == 6


async def test_growth_shortens_the_spacing_of_a_waiting_acquirer() -> None:
    """1 call per 60 s grown to 6: the waiter sleeping for the old spacing leaves 10 s after."""
    clock = VirtualClock(start=0.0)
    budget = _budget(clock, calls=1, window=60.0)

    async def scenario() -> list[float]:
        (await budget.acquire()).release()
        waiter = asyncio.ensure_future(budget.acquire())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiter.done()
        # The log holds the first call for the whole window under N=1; N=6 has room, and the
        # spacing still owed (one old interval) converts to one new one.
        budget.resize(6)
        (await waiter).release()
        times = [clock.now]
        for _ in range(3):
            (await budget.acquire()).release()
            times.append(clock.now)
        return times

    assert await clock.run(scenario()) == [10.0, 20.0, 30.0, 40.0]


async def test_shrink_stops_the_old_rate_at_once() -> None:
    """6 per 60 s shrunk to 2 after three calls: none until the log holds < 2, then 30 s apart."""
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=6, window=60.0)
    times = []
    for _ in range(3):
        (await budget.acquire()).release()
        times.append(clock.now)
    assert times == [0.0, 10.0, 20.0]
    budget.resize(2)
    for _ in range(3):
        (await budget.acquire()).release()
        times.append(clock.now)
    # The calls at 0 and 10 s must leave the window before a third; then 30 s spacing.
    assert times[3:] == [70.0, 100.0, 130.0]
    assert _max_in_window(times[1:], 60.0) <= 3
    assert _max_in_window(times[3:], 60.0) <= 2


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6),
    latencies=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=25),
)
async def test_no_window_holds_more_than_the_largest_budget_across_resizes(
    sizes: list[int], latencies: list[float]
) -> None:
    """Resized between calls, the budget never lets a window hold more than its largest N."""
    window = 10.0
    clock = FakeClock(start=0.0)
    budget = _budget(clock, calls=max(sizes[0], 1), window=window)
    starts = []
    for index, latency in enumerate(latencies):
        size = sizes[index % len(sizes)] or 1
        budget.resize(size)
        slot = await budget.acquire()
        starts.append(clock.now)
        clock.advance(latency)
        slot.release()
    assert _max_in_window(starts, window) <= max(*sizes, 1)


def test_resize_refuses_a_negative_budget() -> None:
    """A negative number of calls is a caller bug, not a pause."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="negative"):
        _budget(clock, calls=1, window=60.0).resize(-1)


class _LateClock(FakeClock):
    """A clock whose sleeps overshoot, as an event loop under load wakes sleepers late."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + 0.1)


async def test_late_wake_ups_do_not_slow_the_rate_down() -> None:
    """Sleepers waking 0.1 s late: calls stay on the 10 s grid instead of drifting by 0.1 s each."""
    clock = _LateClock(start=0.0)
    budget = CallBudget(6, 60.0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(7):
        (await budget.acquire()).release()
        times.append(round(clock.now, 6))
    assert times == [0.0, 10.1, 20.1, 30.1, 40.1, 50.1, 60.1]
