"""A busy ops port stops start-up with one line naming the setting, not a uvicorn traceback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from cli_support import RULES, run
from starlette.applications import Starlette

from promo_bridge.observability.http import OpsPortError, serve_ops


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


async def test_serve_ops_on_a_busy_port_raises_ops_port_error(busy_port: int) -> None:
    """serve_ops refuses a port in use with OpsPortError naming the address and the reason."""
    with pytest.raises(OpsPortError, match=rf"127\.0\.0\.1:{busy_port}: Address already in use"):
        async with serve_ops(Starlette(), "127.0.0.1", busy_port):
            pytest.fail("served on a busy port")


async def test_serve_ops_on_port_zero_yields_the_bound_port() -> None:
    """Port 0 still picks a free port and yields it (the tests' and make run's usage)."""
    async with serve_ops(Starlette(), "127.0.0.1", 0) as port:
        assert port > 0


def test_run_on_a_busy_port_exits_2_with_one_line(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`promo-bridge run` on a busy port: exit 2, one stderr line naming HTTP_PORT."""
    for name in os.environ:
        if name.startswith("PROMO_BRIDGE_") and not name.startswith("PROMO_BRIDGE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROMO_BRIDGE_RULES_FILE", str(RULES))
    monkeypatch.setenv("PROMO_BRIDGE_HTTP_PORT", str(busy_port))
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_TILL_CODE", "store.server")
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_PASSWORD", "server123")
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_ALLOW_HTTP", "true")
    # Nothing listens there: the run must stop at the port, before it looks for a broker.
    monkeypatch.setenv("PROMO_BRIDGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")

    assert run("run") == 2

    err = capfd.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "promo-bridge:" in line]
    assert errors == [
        (
            f"promo-bridge: PROMO_BRIDGE_HTTP_PORT: cannot listen on 127.0.0.1:{busy_port}:"
            " Address already in use; set it (or PROMO_BRIDGE_HTTP_HOST) to an address that is free"
        )
    ]
