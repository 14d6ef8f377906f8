"""`rules check`, `rules explain` and `replay --dry-run`: output and exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from promo_bridge._cli_rules import add_rules_parsers

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "rules.yaml"
BAD_RULES = ROOT / "examples" / "bad-rules.yaml"
EVENTS = ROOT / "examples" / "events.jsonl"


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="promo-bridge")
    add_rules_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    result: int = args.func(args)
    return result


def first_line(text: str) -> str:
    return text.splitlines()[0]


def test_check_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    """`rules check` on a valid file exits 0 with a one-line summary."""
    assert run("rules", "check", RULES) == 0
    out = capsys.readouterr().out
    assert out.strip() == (
        f"{RULES}: OK: 4 rules (order.placed: 2, return.created: 1, review.submitted: 1),"
        " 2 promotions, 1 target"
    )


def test_check_refuses_bad_rules_naming_rule_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`rules check examples/bad-rules.yaml` exits 1 naming the file, line and rule."""
    assert run("rules", "check", BAD_RULES) == 1
    out = capsys.readouterr().out
    line = next(
        n for n, text in enumerate(BAD_RULES.read_text().splitlines(), 1) if "revoke_enrol:" in text
    )
    assert first_line(out) == (
        f"{BAD_RULES}:{line}: rule 'revoke-on-return': action revoke_enrol is not supported by"
        " promotion 'direct-10pct' (DIRECT_ISSUE)"
    )
    assert out.splitlines()[-1] == f"{BAD_RULES}: 1 problem"


def test_check_prints_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Warnings are printed but do not fail the check."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.read_text().replace("event.data.total.amount", "event.data.totl.amount"))
    line = next(n for n, text in enumerate(rules.read_text().splitlines(), 1) if "totl" in text)
    assert run("rules", "check", rules) == 0
    assert first_line(capsys.readouterr().out).startswith(
        f"warning: {rules}:{line}: rule 'enrol-big-spenders': when: event.data.totl"
    )


def test_explain_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rules explain` shows the verdicts for one event, as text or JSON."""
    event = tmp_path / "event.json"
    event.write_text(EVENTS.read_text().splitlines()[0])
    assert run("rules", "explain", RULES, event) == 0
    text = capsys.readouterr().out
    assert first_line(text) == "event evt-0001 (order.placed): 2 commands"
    assert "enrol-big-spenders: matched" in text
    assert run("rules", "explain", RULES, event, "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["rule"] for r in doc["rules"]] == ["enrol-big-spenders", "shoe-lovers-get-10pct"]


def test_explain_refuses_an_invalid_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules explain` exits 1 with the decode reason when the event is invalid."""
    event = tmp_path / "event.json"
    event.write_text('{"specversion": "1.0"}')
    assert run("rules", "explain", RULES, event) == 1
    assert "not a valid event: id: Field required" in capsys.readouterr().err


def test_replay_table_shows_batches(capsys: pytest.CaptureFixture[str]) -> None:
    """`replay --dry-run` prints a summary, skipped actions and one row per batch."""
    assert run("replay", RULES, EVENTS, "--dry-run") == 0
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
