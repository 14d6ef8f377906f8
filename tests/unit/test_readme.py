"""The README stands alone: its settings table matches settings.py, its example file runs.

The table is hand-written (its meaning column is prose), so a setting added to or removed from
`Settings`, or a changed default, fails here naming the variable instead of leaving the README
quietly wrong for the next operator.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from promo_bridge import cli
from promo_bridge.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_CODE = re.compile(r"`([^`]*)`")


def _expand(first: str, suffix: str, known: set[str]) -> str:
    """`PROMO_BRIDGE_HTTP_HOST` / `_HTTP_PORT`: the suffix replaces the first name's tail."""
    parts = first.split("_")
    candidates = ["_".join(parts[:-k]) + suffix for k in range(1, len(parts) - 1)]
    return next((name for name in candidates if name in known), candidates[0])


def readme_settings(text: str, known: set[str]) -> dict[str, str | None]:
    """variable -> the default its row shows (None when the cell shows no literal)."""
    rows: dict[str, str | None] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith(f"`{ENV_PREFIX}"):
            continue
        names = _CODE.findall(cells[0])
        variables = [names[0]] + [_expand(names[0], s, known) for s in names[1:]]
        # A grouped row lists its defaults in the same order, `a` / `b`; prose such as
        # "half of the above" or "(image CAs)" documents a derived or absent default.
        defaults = [part.strip() for part in cells[1].split(" / ")]
        for index, variable in enumerate(variables):
            cell = defaults[index] if index < len(defaults) else ""
            literal = _CODE.match(cell)
            rows[variable] = literal.group(1) if literal else None
    return rows


def _as_documented(value: Any) -> str | None:
    """A default as the README spells it; None for one that is unset or derived at start-up."""
    if value is None or value in ("", []):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _code_settings() -> dict[str, str | None]:
    return {
        ENV_PREFIX + name.upper(): _as_documented(field.get_default(call_default_factory=True))
        for name, field in Settings.model_fields.items()
    }


def test_readme_lists_every_setting_and_no_other() -> None:
    """Every field of Settings has a README row, and every row names a real setting."""
    code = _code_settings()
    documented = readme_settings(README.read_text(encoding="utf-8"), set(code))
    assert sorted(set(code) - set(documented)) == [], "settings missing from the README table"
    assert sorted(set(documented) - set(code)) == [], "README rows naming no setting"


def test_readme_defaults_match_the_code() -> None:
    """Each default the code sets literally is the README's; derived ones are prose there."""
    code = _code_settings()
    documented = readme_settings(README.read_text(encoding="utf-8"), set(code))
    differ = {
        name: (documented[name], default)
        for name, default in code.items()
        if default is not None and name in documented and documented[name] != default
    }
    assert differ == {}, "README default vs settings.py default"


def test_grouped_rows_expand_to_full_names() -> None:
    """`X_HTTP_HOST` / `_HTTP_PORT` rows name both settings with their own defaults."""
    known = {"PROMO_BRIDGE_HTTP_HOST", "PROMO_BRIDGE_HTTP_PORT"}
    row = "| `PROMO_BRIDGE_HTTP_HOST` / `_HTTP_PORT` | `127.0.0.1` / `8080` | ops port |"
    assert readme_settings(row, known) == {
        "PROMO_BRIDGE_HTTP_HOST": "127.0.0.1",
        "PROMO_BRIDGE_HTTP_PORT": "8080",
    }


def test_readme_one_event_example_replays(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's replay line runs on examples/one-event.jsonl: one event, two commands."""
    command = "promo-bridge replay examples/rules.yaml examples/one-event.jsonl --dry-run"
    assert command in README.read_text(encoding="utf-8")
    lines = (ROOT / "examples" / "one-event.jsonl").read_text(encoding="utf-8").splitlines()
    assert len([json.loads(line) for line in lines if line.strip()]) == 1
    monkeypatch.chdir(ROOT)
    assert cli.main(command.split()[1:]) == 0
    assert "events: 1 (0 refused); commands: 2" in capsys.readouterr().out
