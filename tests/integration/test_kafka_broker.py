"""The test broker harness (scripts/kafka_broker.py) starts a real broker and stops it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kafka_broker

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

pytestmark = pytest.mark.integration


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_start_broker_answers_kafka_protocol_and_stop_ends_it(tmp_path: Path) -> None:
    """start_broker returns a broker that answers ApiVersions; stop_broker ends its process."""
    broker = kafka_broker.start_broker(tmp_path)
    try:
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert kafka_broker.api_versions(broker.port) > 0
        assert _running(broker.pid)
        assert (tmp_path / "broker.pid").read_text().strip() == str(broker.pid)
    finally:
        kafka_broker.stop_broker(broker)
    assert not _running(broker.pid)
    assert not (tmp_path / "broker.pid").exists()
    with pytest.raises(ConnectionRefusedError):
        kafka_broker.api_versions(broker.port)


def test_restart_on_same_data_dir_keeps_cluster(tmp_path: Path) -> None:
    """A second start on a used data dir skips formatting and serves the same cluster id."""
    meta = tmp_path / "kraft" / "meta.properties"
    first = kafka_broker.start_broker(tmp_path)
    kafka_broker.stop_broker(first)
    cluster = meta.read_text()
    second = kafka_broker.start_broker(tmp_path, port=first.port)
    try:
        assert kafka_broker.api_versions(second.port) > 0
        assert meta.read_text() == cluster
    finally:
        kafka_broker.stop_broker(second)


def test_cli_start_prints_bootstrap_and_stop_kills_pid(tmp_path: Path) -> None:
    """CLI `start` prints `bootstrap=127.0.0.1:PORT pid=N`; `stop --timeout 0` SIGKILLs that pid."""
    script = str(SCRIPTS / "kafka_broker.py")
    port = kafka_broker.free_port()
    started = subprocess.run(
        [sys.executable, script, "start", "--port", str(port), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    pid = int((tmp_path / "broker.pid").read_text()) if (tmp_path / "broker.pid").exists() else 0
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"bootstrap=127.0.0.1:{port} pid={pid}"
        assert kafka_broker.api_versions(port) > 0
    finally:
        stopped = subprocess.run(
            [sys.executable, script, "stop", "--data-dir", str(tmp_path), "--timeout", "0"],
            capture_output=True,
            text=True,
            check=False,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert pid > 0
    assert not _running(pid)
