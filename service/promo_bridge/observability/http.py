"""One port for operators: /metrics, /healthz (alive), /readyz (fit to take work), /status."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from promo_bridge.observability.metrics import Metrics
from promo_bridge.observability.status import StatusSnapshot, render_html, status_json


@dataclass(frozen=True, slots=True)
class Readiness:
    """Why the service is or is not ready; every reason is shown on /readyz."""

    ready: bool
    reasons: dict[str, bool]


def create_ops_app(
    metrics: Metrics,
    readiness: Callable[[], Readiness],
    status: Callable[[], StatusSnapshot] | None = None,
) -> Starlette:
    """The operations app; `readiness` is asked on every /readyz, `status` on every /status."""

    async def metrics_endpoint(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        state = readiness()
        return JSONResponse(
            {"ready": state.ready, "checks": state.reasons},
            status_code=200 if state.ready else 503,
        )

    routes = [
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    if status is not None:
        snapshot = status

        async def status_page(_: Request) -> Response:
            # Operators may keep it open for hours: never cached, re-rendered on each refresh.
            return HTMLResponse(render_html(snapshot()), headers={"Cache-Control": "no-store"})

        async def status_data(_: Request) -> Response:
            return JSONResponse(status_json(snapshot()), headers={"Cache-Control": "no-store"})

        routes += [Route("/status", status_page), Route("/status.json", status_data)]
    return Starlette(routes=routes)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM and SIGINT to the service's own shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpsPortError(Exception):
    """The ops port cannot be listened on (in use, or not allowed); says which and why."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host, self.port, self.reason = host, port, reason


def _listen(host: str, port: int) -> socket.socket:
    # Bound here rather than by uvicorn, which logs its own line and calls sys.exit on a busy
    # port: a SystemExit out of a task ends the process in a traceback naming no setting.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise OpsPortError(host, port, os.strerror(exc.errno) if exc.errno else str(exc)) from None


@contextlib.asynccontextmanager
async def serve_ops(app: Starlette, host: str, port: int) -> AsyncIterator[int]:
    """Serve `app` in this event loop; yields the bound port (port 0 picks a free one).

    OpsPortError when the port cannot be bound.
    """
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = _QuietServer(config)
    sock = _listen(host, port)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raise why it stopped
                raise RuntimeError("ops server stopped before it started")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield int(bound)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        sock.close()
