"""`rules check` and `rules explain`: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import BAD_RULES, EVENTS, RULES, first_line, run


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


def test_check_warns_of_an_enrolment_revoked_before_its_earns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules check` exits 0 but warns, with line and rule, of a revoke_enrol alone."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.read_text().replace("      - revoke_earn: big-spender\n", ""))
    line = next(
        n for n, text in enumerate(rules.read_text().splitlines(), 1) if "revoke_enrol:" in text
    )
    assert run("rules", "check", rules) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"warning: {rules}:{line}: rule 'revoke-on-return': revoke_enrol on promotion"
        " 'big-spender' has no revoke_earn or revoke_direct_earn of it before it: Capillary"
        " wants the earns revoked before the enrolment (put one earlier in this rule)"
    )
    assert out[-1].startswith(f"{rules}: OK: ")


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
