"""`promo-bridge run` serves on the event loop PROMO_BRIDGE_EVENT_LOOP names."""

from __future__ import annotations

import uvloop

from promo_bridge._cli_run import _loop_factory
from promo_bridge.settings import EventLoop, Settings


def test_run_serves_on_uvloop_by_default() -> None:
    """The default setting builds uvloop's loop."""
    assert Settings.model_fields["event_loop"].default is EventLoop.UVLOOP
    assert _loop_factory(EventLoop.UVLOOP) is uvloop.new_event_loop


def test_asyncio_leaves_the_standard_loop() -> None:
    """EVENT_LOOP=asyncio gives asyncio.Runner no factory: the standard library's loop."""
    assert _loop_factory(EventLoop.ASYNCIO) is None
