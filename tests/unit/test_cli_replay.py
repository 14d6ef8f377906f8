"""`replay --dry-run`: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import BAD_RULES, EVENTS, RULES, first_line, run


def test_replay_table_shows_batches(capsys: pytest.CaptureFixture[str]) -> None:
    """`replay --dry-run` prints a summary, skipped actions and one row per batch."""
    assert run("replay", RULES, EVENTS, "--dry-run", "--window-ms", "200") == 0
    out = capsys.readouterr().out
    assert first_line(out) == (
        "events: 30 (0 refused); commands: 29 (1 duplicate refused); batches: 21"
    )
    assert "no_customer_id" in out
    rows = [" ".join(line.split()) for line in out.splitlines() if line.startswith("b1 ")]
    assert rows == [
        "b1 +0.200 enrolAndEarn enrol big-spender id 3 window 423927867, 423927868, 423927870"
    ]


def test_replay_json_keeps_lane_order(capsys: pytest.CaptureFixture[str]) -> None:
    """In the replayed batches, a customer's revoke_earn precedes its revoke_enrol."""
    assert run("replay", RULES, EVENTS, "--dry-run", "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["commands"]) == 29
    order = [
        (b["action"], c["identifier_value"])
        for b in doc["batches"]
        for c in b["commands"]
        if b["action"].startswith("revoke")
    ]
    for customer in ("423927867", "423927868", "919986000590"):
        mine = [action for action, who in order if who == customer]
        assert mine == ["revoke_earn", "revoke_enrol"]
    assert all(b["size"] <= 100 for b in doc["batches"])


def test_replay_window_changes_batching(capsys: pytest.CaptureFixture[str]) -> None:
    """A zero window sends each command on its own; a long one coalesces more."""
    run("replay", RULES, EVENTS, "--dry-run", "--format", "json", "--window-ms", "0")
    narrow = len(json.loads(capsys.readouterr().out)["batches"])
    run("replay", RULES, EVENTS, "--dry-run", "--format", "json", "--window-ms", "10000")
    wide = len(json.loads(capsys.readouterr().out)["batches"])
    assert narrow > 21 > wide


def test_replay_reports_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Undecodable lines are reported with their line number, and the exit code is 1."""
    events = tmp_path / "events.jsonl"
    lines = EVENTS.read_text().splitlines()[:2]
    events.write_text("\n".join([lines[0], "{not json", "", lines[1]]) + "\n")
    assert run("replay", RULES, events, "--dry-run") == 1
    out = capsys.readouterr().out
    assert "events: 3 (1 refused)" in out
    assert "  line 2: Invalid JSON: key must be a string at line 1 column 2" in out


def test_replay_events_without_time_use_the_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Events without `time` are spaced --interval-ms apart on the simulated clock."""
    events = tmp_path / "events.jsonl"
    docs = [json.loads(line) for line in EVENTS.read_text().splitlines()[:2]]
    for doc in docs:
        del doc["time"]
    events.write_text("\n".join(json.dumps(d) for d in docs))
    args = ("replay", RULES, events, "--dry-run", "--format", "json")
    run(*args, "--interval-ms", "500")
    spaced = json.loads(capsys.readouterr().out)["batches"]
    run(*args, "--interval-ms", "10")
    close = json.loads(capsys.readouterr().out)["batches"]
    assert len(spaced) > len(close)


def test_replay_requires_dry_run() -> None:
    """replay without --dry-run is a usage error: it never calls the API."""
    with pytest.raises(SystemExit) as exited:
        run("replay", RULES, EVENTS)
    assert exited.value.code == 2


def test_invalid_rules_stop_explain_and_replay(capsys: pytest.CaptureFixture[str]) -> None:
    """explain and replay exit 1 with the rules problems when the rules are invalid."""
    assert run("replay", BAD_RULES, EVENTS, "--dry-run") == 1
    assert "revoke_enrol is not supported" in capsys.readouterr().err


def test_replay_runs_with_the_service_window_by_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --window-ms, replay batches with the service's window and its setting."""
    monkeypatch.delenv("PROMO_BRIDGE_BATCH_WINDOW_MS", raising=False)
    assert run("replay", RULES, EVENTS, "--dry-run", "--format", "json") == 0
    default = json.loads(capsys.readouterr().out)
    assert run("replay", RULES, EVENTS, "--dry-run", "--format", "json", "--window-ms", "500") == 0
    assert json.loads(capsys.readouterr().out) == default
    monkeypatch.setenv("PROMO_BRIDGE_BATCH_WINDOW_MS", "0")
    assert run("replay", RULES, EVENTS, "--dry-run", "--format", "json") == 0
    assert len(json.loads(capsys.readouterr().out)["batches"]) > len(default["batches"])


def test_replay_refuses_a_bad_batching_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad PROMO_BRIDGE_ batching variable is named, as the service would name it."""
    monkeypatch.setenv("PROMO_BRIDGE_CAPILLARY_REVOKE_DIRECT_EARN_BATCH_SIZE", "0")
    assert run("replay", RULES, EVENTS, "--dry-run") == 2
    err = capsys.readouterr().err
    assert "PROMO_BRIDGE_CAPILLARY_REVOKE_DIRECT_EARN_BATCH_SIZE" in err
