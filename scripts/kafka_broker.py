"""Single-node Apache Kafka (KRaft) broker for tests, built from Maven Central jars.

CLI:
    python scripts/kafka_broker.py fetch
    python scripts/kafka_broker.py start --data-dir DIR [--port N] [--controller-port N]
                                         [--timeout S] [--secure]
    python scripts/kafka_broker.py stop --data-dir DIR [--timeout S]

Python (pytest fixtures): start_broker(), stop_broker(), free_port(), Broker, Security,
make_test_pki().

With a Security, the broker also listens with SASL_SSL (SCRAM-SHA-512, its users created when
the storage is formatted) and with SSL requiring a client certificate, next to PLAINTEXT (which
the readiness probe and the tests' admin helpers keep using).

Stdlib only, except make_test_pki() (and so `start --secure`), which needs the dev dependency
trustme; Linux (uses /proc to recognise the broker process).
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
# The SCRAM user `start --secure` creates: a local test broker's, printed for the operator.
CLI_SCRAM_USER = "promo-bridge"
CLI_SCRAM_PASSWORD = "promo-bridge-test"


class BrokerError(RuntimeError):
    """Fetching, formatting, starting or stopping the broker failed."""


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int
    data_dir: Path
    port: int
    controller_port: int
    # Set when started with a Security: the SASL_SSL and the mutual-TLS listeners.
    sasl_ssl_bootstrap: str | None = None
    ssl_bootstrap: str | None = None


@dataclass(frozen=True)
class Security:
    """TLS material and SCRAM users for the SASL_SSL and SSL listeners."""

    # The broker's PKCS#8 private key followed by its certificate chain, PEM (Kafka's PEM
    # keystore format), and the CA certificates it accepts client certificates from.
    keystore_pem: Path
    truststore_pem: Path
    # SCRAM-SHA-512 users, name -> password; written into the metadata log at format time, so
    # they exist only on a data dir's first start. Test values: no ',', ']' or '"'.
    scram_users: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TestPki:
    """A throwaway CA and what was issued from it, as PEM files."""

    ca_cert: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path


def make_test_pki(directory: Path) -> TestPki:
    """Make a fresh CA, a broker certificate for 127.0.0.1/localhost and a client certificate."""
    # Imported here so that the plain broker keeps needing nothing beyond the stdlib.
    import trustme  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="promo-bridge test CA")
    broker = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("promo-bridge-client")
    # Kafka's PEM keystore reads only PKCS#8 keys; trustme writes the traditional format.
    key = serialization.load_pem_private_key(broker.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pki = TestPki(
        ca_cert=directory / "ca.pem",
        broker_keystore=directory / "broker.pem",
        client_cert=directory / "client-cert.pem",
        client_key=directory / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(pki.ca_cert))
    pki.broker_keystore.write_bytes(
        pkcs8 + b"".join(blob.bytes() for blob in broker.cert_chain_pems)
    )
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    for path in (pki.broker_keystore, pki.client_key):
        path.chmod(0o600)
    return pki


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
    # The XDG base-directory rule, as scripts/check_deploy.sh follows it for its tools: a
    # relative XDG_CACHE_HOME is to be ignored, since it would move with the working directory.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "promo-bridge" / f"kafka-{kafka_version()}"


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
    security: Security | None = None,
) -> Broker:
    """Run a broker on data_dir (formatted on first use, data kept after) until it answers.

    With `security`, also SASL_SSL and SSL (client certificate required) on free ports.
    """
    data_dir = Path(data_dir).resolve()
    old = _read_pid(data_dir)
    if old is not None and _is_our_broker(old, data_dir):
        raise BrokerError(f"a broker (pid {old}) is already running for {data_dir}")
    lib = fetch()
    port = port or free_port()
    # Two free ports asked for one after the other can be the same one.
    while controller_port is None or controller_port == port:
        controller_port = free_port()
    secure_ports: tuple[int, int] | None = None
    if security is not None:
        taken = {port, controller_port}
        picked: list[int] = []
        while len(picked) < 2:
            candidate = free_port()
            if candidate not in taken:
                taken.add(candidate)
                picked.append(candidate)
        secure_ports = (picked[0], picked[1])
    return _start(
        lib,
        data_dir,
        port,
        controller_port,
        timeout_s,
        security=security,
        secure_ports=secure_ports,
    )


def _start(
    lib: Path,
    data_dir: Path,
    port: int,
    controller_port: int,
    timeout_s: float,
    *,
    cds_dump_dir: Path | None = None,
    security: Security | None = None,
    secure_ports: tuple[int, int] | None = None,
) -> Broker:
    data_dir.mkdir(parents=True, exist_ok=True)
    # Otherwise a broker already on `port` would answer the readiness probe for ours.
    for p in (port, controller_port, *(secure_ports or ())):
        _check_port_free(p)
    listeners = [f"PLAINTEXT://{HOST}:{port}", f"CONTROLLER://{HOST}:{controller_port}"]
    secure_props: list[str] = []
    if security is not None and secure_ports is not None:
        sasl_port, ssl_port = secure_ports
        listeners += [f"SASL_SSL://{HOST}:{sasl_port}", f"SSL://{HOST}:{ssl_port}"]
        secure_props = _secure_properties(security)
    # StorageTool has no --override, and `format --standalone` records the controller
    # endpoint in the metadata log, so both JVMs read one per-run properties file.
    props = data_dir / "server.properties"
    props.write_text(
        SERVER_PROPERTIES.read_text()
        + "\n# per-run (kafka_broker.py)\n"
        + "\n".join(
            [
                f"listeners={','.join(listeners)}",
                f"advertised.listeners={','.join(listeners)}",
                f"controller.quorum.bootstrap.servers={HOST}:{controller_port}",
                f"log.dirs={data_dir / 'kraft'}",
                *secure_props,
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
                *_scram_arguments(security),
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
    broker = Broker(
        f"{HOST}:{port}",
        proc.pid,
        data_dir,
        port,
        controller_port,
        sasl_ssl_bootstrap=f"{HOST}:{secure_ports[0]}" if secure_ports else None,
        ssl_bootstrap=f"{HOST}:{secure_ports[1]}" if secure_ports else None,
    )

    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    try:
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
    except BaseException:
        # Interrupted while waiting (Ctrl-C, or a SIGTERM turned into an exception): nobody
        # else knows of this broker yet, so it would outlive its starter.
        _stop_pid(broker.pid, data_dir, timeout_s=5)
        raise
    _stop_pid(broker.pid, data_dir, timeout_s=5)
    raise BrokerError(
        f"broker on {broker.bootstrap} did not come up ({last_error}; timeout {timeout_s:g} s);"
        f" tail of {log_path}:\n{_tail(_read_text(log_path), 60)}"
    )


def _secure_properties(security: Security) -> list[str]:
    return [
        (
            "listener.security.protocol.map="
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL"
        ),
        # One keystore and truststore for both TLS listeners, PEM so no keytool step is needed.
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={security.keystore_pem}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={security.truststore_pem}",
        "listener.name.ssl.ssl.client.auth=required",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512",
        (
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
    ]


def _scram_arguments(security: Security | None) -> list[str]:
    if security is None:
        return []
    return [
        arg
        for name, password in security.scram_users
        for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
    ]


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
    p_start.add_argument(
        "--secure",
        action="store_true",
        help="also SASL_SSL (SCRAM-SHA-512 user promo-bridge) and mutual-TLS listeners, with a"
        " test CA made in DATA_DIR/tls (needs trustme)",
    )
    p_stop = sub.add_parser("stop", help="stop the broker recorded in DATA_DIR/broker.pid")
    p_stop.add_argument("--data-dir", type=Path, required=True)
    p_stop.add_argument("--timeout", type=float, default=20.0, help="seconds before SIGKILL")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "fetch":
            # Silent when the jars are cached: `make run` and `make test` call this every time.
            fetch()
        elif args.cmd == "start":
            security = None
            if args.secure:
                pki = make_test_pki(args.data_dir.resolve() / "tls")
                security = Security(
                    keystore_pem=pki.broker_keystore,
                    truststore_pem=pki.ca_cert,
                    scram_users=((CLI_SCRAM_USER, CLI_SCRAM_PASSWORD),),
                )
            b = start_broker(
                args.data_dir, args.port, args.timeout, args.controller_port, security=security
            )
            print(f"bootstrap={b.bootstrap} pid={b.pid}")
            if args.secure:
                print(
                    f"sasl_ssl_bootstrap={b.sasl_ssl_bootstrap} ssl_bootstrap={b.ssl_bootstrap}"
                    f" tls_dir={args.data_dir.resolve() / 'tls'}"
                    f" scram_user={CLI_SCRAM_USER} scram_password={CLI_SCRAM_PASSWORD}"
                )
        elif not stop_data_dir(args.data_dir, args.timeout):
            print(f"no running broker recorded in {args.data_dir}")
    except BrokerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
