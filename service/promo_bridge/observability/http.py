"""One port for operators: /metrics, /healthz (alive) and /readyz (fit to take work)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promo_bridge.observability.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Readiness:
    """Why the service is or is not ready; every reason is shown on /readyz."""

    ready: bool
    reasons: dict[str, bool]


def create_ops_app(metrics: Metrics, readiness: Callable[[], Readiness]) -> Starlette:
    """The operations app; `readiness` is asked on every /readyz."""

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

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM and SIGINT to the service's own shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_ops(app: Starlette, host: str, port: int) -> AsyncIterator[int]:
    """Serve `app` in this event loop; yields the bound port (port 0 picks a free one)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raise a bind failure with its real cause
                raise RuntimeError("ops server stopped before it started")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield int(bound)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
