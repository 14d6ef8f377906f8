"""scripts/audit_deps.py: pip-audit's report into an exit code (issue 15)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

import audit_deps


def _report(monkeypatch: pytest.MonkeyPatch, dependencies: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        seen.extend(command)
        return subprocess.CompletedProcess(command, 0, json.dumps({"dependencies": dependencies}))

    monkeypatch.setattr(audit_deps.subprocess, "run", run)
    return seen


def test_known_vulnerability_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """An audited package with a vulnerability makes the audit exit 1."""
    vuln = {"id": "PYSEC-2099-1", "fix_versions": ["2.0"]}
    _report(monkeypatch, [{"name": "pkg", "version": "1.0", "vulns": [vuln]}])
    assert audit_deps.main() == 1


def test_clean_audit_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Audited packages without vulnerabilities exit 0."""
    _report(monkeypatch, [{"name": "pkg", "version": "1.0", "vulns": []}])
    assert audit_deps.main() == 0


def test_index_that_answers_for_nothing_skips(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When no package could be looked up the audit says skipped and does not fail the build."""
    _report(monkeypatch, [{"name": "pkg", "skip_reason": "Dependency not found on PyPI"}])
    assert audit_deps.main() == 0
    assert "skipped" in capsys.readouterr().out


def test_accepted_ids_are_passed_to_pip_audit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Each ID in the accepted file reaches pip-audit as --ignore-vuln; comments do not."""
    accepted = tmp_path / "accepted.txt"
    accepted.write_text("# header\nGHSA-aaaa-bbbb-cccc  # not reachable here, until 2027\n")
    monkeypatch.setattr(audit_deps, "ACCEPTED", accepted)
    seen = _report(monkeypatch, [{"name": "pkg", "version": "1.0", "vulns": []}])
    audit_deps.main()
    assert seen[seen.index("--ignore-vuln") + 1] == "GHSA-aaaa-bbbb-cccc"
    assert seen.count("--ignore-vuln") == 1
