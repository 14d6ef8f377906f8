"""Serving the simulator over real HTTP with uvicorn, in the caller's event loop or blocking.

The socket is bound here, not by uvicorn: a busy port raises ``OSError`` to the caller
(uvicorn would log and ``sys.exit``), and ``port=0`` gives a free port known before the first
request. uvicorn's own signal handling is disabled so that embedding the simulator in a test
or in the service does not steal Ctrl-C; ``run_simulator`` installs its own handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvicorn

from promo_bridge.simulator._auth import Credentials
from promo_bridge.simulator._catalogue import load_catalogue
from promo_bridge.simulator._faults import Faults
from promo_bridge.simulator._options import ApiOptions
from promo_bridge.simulator._simulator import Simulator

log = logging.getLogger("promo_bridge.simulator")

# Bounded wait for in-flight requests on exit; held (timeout-fault) requests are cut short
# anyway, so this only guards against a stuck handler.
_GRACEFUL_SHUTDOWN_SECONDS: Final = 5


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without process-wide signal handlers, reporting when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signals to the embedding program."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, then wake ``serve()``'s caller."""
        await super().startup(sockets)
        self.listening.set()


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A simulator being served: where to reach it."""

    simulator: Simulator
    host: str
    port: int
    # "https" when served with a certificate (`tls`).
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` with the real bound port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM certificate chain and private key to serve HTTPS with."""

    certfile: Path
    keyfile: Path


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections
    # only then, and without it Nagle plus delayed ACKs add ~40 ms to every answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    tls: ServerTls | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve ``sim`` over HTTP (HTTPS with ``tls``) in the running event loop for the block.

    ``async with serve(sim) as server: ... server.base_url``. On exit the server stops
    accepting, held requests are released and in-flight ones finish (bounded).
    """
    sock = _bind(host, port)
    bound_port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        sim.app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=str(tls.certfile) if tls else None,
        ssl_keyfile=str(tls.keyfile) if tls else None,
    )
    server = _EmbeddedServer(config)
    sim.end_shutdown()
    task = asyncio.create_task(
        server.serve(sockets=[sock]), name=f"capillary-simulator:{bound_port}"
    )
    listening = asyncio.create_task(server.listening.wait())
    try:
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            # Startup failed; surface uvicorn's exception (or its SystemExit) here.
            task.result()
            raise RuntimeError("the simulator's server stopped during startup")
        yield RunningServer(sim, host, bound_port, "https" if tls else "http")
    finally:
        listening.cancel()
        sim.begin_shutdown()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


async def serve_forever(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 8090,
    *,
    log_level: str = "warning",
    on_ready: Callable[[RunningServer], None] | None = None,
    tls: ServerTls | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; ``on_ready`` is called once the port is bound."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serve(sim, host, port, log_level=log_level, tls=tls) as server:
            if on_ready is not None:
                on_ready(server)
            else:
                log.info("Capillary API simulator listening on %s", server.base_url)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_simulator(
    port: int = 8090,
    catalogue_path: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    credentials: Credentials | None = None,
    faults: Faults | None = None,
    options: ApiOptions | None = None,
    log_level: str = "warning",
    on_ready: Callable[[RunningServer], None] | None = None,
) -> None:
    """Blocking entry point: build a simulator from a catalogue file and serve it until
    interrupted (SIGINT/SIGTERM). Raises ``CatalogueError`` or ``OSError`` before serving."""
    catalogue = load_catalogue(catalogue_path) if catalogue_path is not None else None
    sim = Simulator(catalogue, credentials=credentials, faults=faults, options=options)
    asyncio.run(serve_forever(sim, host, port, log_level=log_level, on_ready=on_ready))
