"""Single-node Apache Kafka (KRaft) broker for tests, built from Maven Central jars.

CLI:
    python scripts/kafka_broker.py fetch
    python scripts/kafka_broker.py start --data-dir DIR [--port N] [--controller-port N]
                                         [--timeout S]
    python scripts/kafka_broker.py stop --data-dir DIR [--timeout S]

Python (pytest fixtures): start_broker(), stop_broker(), free_port(), Broker.
Stdlib only; Linux (uses /proc to recognise the broker process).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RECIPE_DIR = Path(__file__).resolve().parent / "kafka"
POM = RECIPE_DIR / "pom.xml"
SERVER_PROPERTIES = RECIPE_DIR / "server.properties"
LOG4J2 = RECIPE_DIR / "log4j2.properties"
TOOLS_LOG4J2 = RECIPE_DIR / "tools-log4j2.properties"

HOST = "127.0.0.1"
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
BROKER_MAIN = "kafka.Kafka"

# Tuned for tests on 2 shared cores: a small heap is plenty for test traffic, and SerialGC
# with C1 only (no C2 compile threads competing at boot) cut the measured warm start from
# ~4.5 s (G1, tiered) to ~3.2 s; the AppCDS archives from fetch() take it to ~2.1 s. Peak
# throughput is lower, which tests do not need.
BROKER_JVM_OPTS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]
TOOL_JVM_OPTS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


class BrokerError(RuntimeError):
    """Fetching, formatting, starting or stopping the broker failed."""


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int
    data_dir: Path
    port: int
    controller_port: int


# Popen objects of brokers this process started: polling them reaps the child (a zombie
# would otherwise look alive) and keeps Popen from warning about a still-running child.
_children: dict[int, subprocess.Popen[bytes]] = {}


def kafka_version() -> str:
    node = (
        ET.parse(POM)
        .getroot()
        .find(
            "{http://maven.apache.org/POM/4.0.0}properties/"
            "{http://maven.apache.org/POM/4.0.0}kafka.version"
        )
    )
    if node is None or not node.text:
        raise BrokerError(f"no <kafka.version> property in {POM}")
    return node.text.strip()


def cache_dir() -> Path:
    """Where the pom is built; the jars land in its lib/ subdirectory."""
    env = os.environ.get("KAFKA_HOME_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "promo-bridge" / f"kafka-{kafka_version()}"


def fetch() -> Path:
    """Download the broker jars once (idempotent, safe to run concurrently); return lib dir."""
    home = cache_dir()
    lib = home / "lib"
    marker = home / ".fetched"
    # The marker holds the pom's hash so editing the pom (e.g. a version bump with
    # KAFKA_HOME_CACHE pinned) triggers a fresh download instead of reusing stale jars.
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if marker.is_file() and marker.read_text().strip() == want:
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn not found on PATH (apt-get install maven)")
        # A cold download takes ~40 s: say why nothing else is happening.
        print(f"fetching Kafka {kafka_version()} jars into {lib} ...", file=sys.stderr)
        marker.unlink(missing_ok=True)
        shutil.rmtree(lib, ignore_errors=True)
        shutil.copyfile(POM, home / "pom.xml")
        proc = subprocess.run(
            [mvn, "-q", "-B", "package"], cwd=home, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not any(lib.glob("kafka_2.13-*.jar")):
            raise BrokerError(
                f"mvn package failed (rc={proc.returncode}):\n"
                + _tail(proc.stdout + proc.stderr, 40)
            )
        _train_cds(lib)
        marker.write_text(want + "\n")
    return lib


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the JVM's server sockets: only a live listener blocks the port, not the
        # TIME_WAIT leftovers of a broker just stopped on it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise BrokerError(f"port {HOST}:{port} is not free ({e})") from e


def api_versions(port: int, host: str = HOST, timeout_s: float = 2.0) -> int:
    """Send a Kafka ApiVersions v0 request; return how many APIs the broker lists.

    Raises OSError if nothing answers and ValueError if the answer is not a healthy Kafka one.
    """
    client_id = b"kafka-broker-probe"
    correlation_id = 0x5EED
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(s, 4))
        resp = _recv_exact(s, size)
    got_id, error_code, n_apis = struct.unpack_from(">ihi", resp)
    if got_id != correlation_id or error_code != 0 or n_apis <= 0:
        raise ValueError(f"bad ApiVersions response: id={got_id} error={error_code} apis={n_apis}")
    return int(n_apis)


def start_broker(
    data_dir: Path,
    port: int | None = None,
    timeout_s: float = 90,
    controller_port: int | None = None,
) -> Broker:
    """Run a broker on data_dir (formatted on first use, data kept after) until it answers."""
    data_dir = Path(data_dir).resolve()
    old = _read_pid(data_dir)
    if old is not None and _is_our_broker(old, data_dir):
        raise BrokerError(f"a broker (pid {old}) is already running for {data_dir}")
    lib = fetch()
    port = port or free_port()
    # Two free ports asked for one after the other can be the same one.
    while controller_port is None or controller_port == port:
        controller_port = free_port()
    return _start(lib, data_dir, port, controller_port, timeout_s)


def _start(
    lib: Path,
    data_dir: Path,
    port: int,
    controller_port: int,
    timeout_s: float,
    *,
    cds_dump_dir: Path | None = None,
) -> Broker:
    data_dir.mkdir(parents=True, exist_ok=True)
    # Otherwise a broker already on `port` would answer the readiness probe for ours.
    for p in (port, controller_port):
        _check_port_free(p)
    # StorageTool has no --override, and `format --standalone` records the controller
    # endpoint in the metadata log, so both JVMs read one per-run properties file.
    props = data_dir / "server.properties"
    props.write_text(
        SERVER_PROPERTIES.read_text()
        + "\n# per-run (kafka_broker.py)\n"
        + "\n".join(
            [
                f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
                f"controller.quorum.bootstrap.servers={HOST}:{controller_port}",
                f"log.dirs={data_dir / 'kraft'}",
            ]
        )
        + "\n"
    )
    # Formatting again with a new cluster id fails even with --ignore-formatted, so a
    # restart on the same data_dir skips it (which also saves a JVM launch).
    if not (data_dir / "kraft" / "meta.properties").is_file():
        fmt = subprocess.run(
            _jvm(
                lib,
                "tool",
                cds_dump_dir,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                _random_cluster_id(),
                "-c",
                str(props),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise BrokerError(
                f"kafka-storage format failed (rc={fmt.returncode}):\n"
                + _tail(fmt.stdout + fmt.stderr, 40)
            )

    log_path = data_dir / LOG_FILE
    with open(log_path, "ab") as log:
        # New session: Ctrl-C on a test run or the CLI exiting must not take the broker down
        # with it; stop_broker() is the one way it ends.
        proc = subprocess.Popen(
            _jvm(lib, "broker", cds_dump_dir, BROKER_MAIN, str(props)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    (data_dir / PID_FILE).write_text(f"{proc.pid}\n")
    broker = Broker(f"{HOST}:{port}", proc.pid, data_dir, port, controller_port)

    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last_error = BrokerError(f"broker exited with code {proc.returncode}")
            break
        try:
            api_versions(port)
        except (OSError, ValueError, struct.error) as e:
            last_error = e
        else:
            return broker
        time.sleep(0.1)  # poll interval; the deadline above bounds the wait
    _stop_pid(broker.pid, data_dir, timeout_s=5)
    raise BrokerError(
        f"broker on {broker.bootstrap} did not come up ({last_error}; timeout {timeout_s:g} s);"
        f" tail of {log_path}:\n{_tail(_read_text(log_path), 60)}"
    )


def _jvm(
    lib: Path, kind: Literal["tool", "broker"], cds_dump_dir: Path | None, *args: str
) -> list[str]:
    opts, log4j = (BROKER_JVM_OPTS, LOG4J2) if kind == "broker" else (TOOL_JVM_OPTS, TOOLS_LOG4J2)
    archive = lib.parent / "cds" / f"{kind}.jsa"
    if cds_dump_dir is not None:
        cds = [f"-XX:ArchiveClassesAtExit={cds_dump_dir / archive.name}"]
    else:
        # A stale or foreign archive (other JDK, changed jars) is ignored by -Xshare:auto.
        cds = [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else []
    return [_java(), *opts, *cds, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*", *args]


def _train_cds(lib: Path) -> None:
    """Record AppCDS archives from one format + broker run; later starts load classes from them.

    Best effort: without the archives everything works, starts just take ~1.4 s longer.
    """
    cds = lib.parent / "cds"
    shutil.rmtree(cds, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        # The JVM writes the archive while exiting; publish it only after a clean exit so a
        # killed run cannot leave a truncated archive behind.
        dump = Path(tmp) / "cds"
        dump.mkdir()
        try:
            broker = _start(
                lib, Path(tmp) / "data", free_port(), free_port(), 90, cds_dump_dir=dump
            )
            clean = _stop_pid(broker.pid, broker.data_dir, timeout_s=30)
        except BrokerError as e:
            print(f"warning: no class-data-sharing archive ({e})", file=sys.stderr)
            return
        if clean:
            dump.rename(cds)


def stop_broker(broker: Broker, timeout_s: float = 20) -> None:
    """SIGTERM the broker (clean shutdown), SIGKILL it if still alive after timeout_s."""
    _stop_pid(broker.pid, broker.data_dir, timeout_s)


def stop_data_dir(data_dir: Path, timeout_s: float = 20) -> bool:
    """Stop the broker recorded in data_dir/broker.pid; False if none was running."""
    data_dir = Path(data_dir).resolve()
    pid = _read_pid(data_dir)
    if pid is None:
        return False
    running = _is_our_broker(pid, data_dir)
    _stop_pid(pid, data_dir, timeout_s)
    return running


def _stop_pid(pid: int, data_dir: Path, timeout_s: float) -> bool:
    """Stop pid; True if it exited on SIGTERM (or was already gone), False if it needed SIGKILL."""
    clean = True
    # A stale pid file may name a recycled pid: only signal a process that is our broker.
    if _is_our_broker(pid, data_dir):
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # poll interval; the deadline bounds the wait
            if not _alive(pid):
                break
            clean = False
        else:
            raise BrokerError(f"broker pid {pid} survived SIGKILL")
    _children.pop(pid, None)
    if _read_pid(data_dir) == pid:
        (data_dir / PID_FILE).unlink(missing_ok=True)
    return clean


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # An exited child of a process that never reaps still answers signal 0 as a zombie.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return BROKER_MAIN.encode() in argv and str(data_dir / "server.properties").encode() in argv


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _random_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid(): 22-char unpadded base64url of 16 random
    # bytes, never starting with '-' (the CLI would read it as an option). Saves a JVM run.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found (need Java 17+; apt-get install openjdk-17-jre-headless)")
    return java


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars into the cache")
    p_start = sub.add_parser("start", help="format storage and start a broker in the background")
    p_start.add_argument("--data-dir", type=Path, required=True)
    p_start.add_argument("--port", type=int, help="client port (default: a free one)")
    p_start.add_argument("--controller-port", type=int, help="KRaft port (default: a free one)")
    p_start.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for it")
    p_stop = sub.add_parser("stop", help="stop the broker recorded in DATA_DIR/broker.pid")
    p_stop.add_argument("--data-dir", type=Path, required=True)
    p_stop.add_argument("--timeout", type=float, default=20.0, help="seconds before SIGKILL")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "fetch":
            print(f"lib={fetch()}")
        elif args.cmd == "start":
            b = start_broker(args.data_dir, args.port, args.timeout, args.controller_port)
            print(f"bootstrap={b.bootstrap} pid={b.pid}")
        elif not stop_data_dir(args.data_dir, args.timeout):
            print(f"no running broker recorded in {args.data_dir}")
    except BrokerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
