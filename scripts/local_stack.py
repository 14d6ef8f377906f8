"""Child processes of local runs (`make run`, `make chaos`): the API simulator and the service.

Every child runs in a session (process group) of its own: a Ctrl-C on the terminal reaches only
the script, which then stops its children itself, and `stop` signals the child's whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent / "promo-bridge"
ENV_PREFIX = "PROMO_BRIDGE_"

# What the service needs to talk to the simulator's dev org.
SIMULATOR_SETTINGS: dict[str, str] = {
    # The simulator serves plain HTTP; the service refuses http:// without this.
    "CAPILLARY_ALLOW_HTTP": "true",
    "CAPILLARY_TILL_CODE": "store.server",
    "CAPILLARY_PASSWORD": "server123",
    # The simulator's (invented) "not enrolled in the target" answer to unEnroll.
    "CAPILLARY_UNENROLL_NOT_ENROLLED_CODES": "310120",
}


def spawn(
    args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll `url` until it answers 200; RuntimeError if `proc` exits, TimeoutError at the end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)  # poll interval; the deadline bounds the wait
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def start_simulator(
    port: int, log_path: Path, *flags: str, timeout_s: float = 30
) -> subprocess.Popen[bytes]:
    """`promo-bridge simulate-api` on 127.0.0.1:`port` with extra `flags`, once it answers."""
    proc = spawn([str(BIN), "simulate-api", "--port", str(port), *flags], log_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/__admin/health", timeout_s, proc)
    except BaseException:
        stop(proc, timeout_s=5)
        raise
    return proc


def service_env(settings: Mapping[str, str], *, inherit_settings: bool = True) -> dict[str, str]:
    """This process's environment plus `settings` as PROMO_BRIDGE_<NAME> variables.

    With `inherit_settings` false, PROMO_BRIDGE_* variables of this process are left out, so
    the child runs with exactly `settings` and the service's defaults.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if inherit_settings or not name.startswith(ENV_PREFIX)
    }
    env.update({f"{ENV_PREFIX}{name.upper()}": value for name, value in settings.items()})
    return env


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to the child's process group, while the child is not yet reaped."""
    # Once reaped, its pid (and group id) may belong to someone else: signal nothing then.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int | None:
    """SIGTERM the child's group, SIGKILL it after `timeout_s`; the child's exit code."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode
