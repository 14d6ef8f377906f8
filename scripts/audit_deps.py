"""Audit the installed dependency set for known vulnerabilities with pip-audit (issue 15).

    python scripts/audit_deps.py

Exit 1 when an installed package has a known vulnerability that scripts/audit_accepted.txt does
not list. To accept one, add a line `VULN-ID  # why, and until when` to that file: the ID is
passed to pip-audit's --ignore-vuln. When the package index answers for no package at all (a
mirror without PyPI's JSON API, no network), the audit is reported as skipped and exits 0:
"could not ask" must not read as "nothing found", nor block a build that cannot ask.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ACCEPTED = Path(__file__).resolve().parent / "audit_accepted.txt"


def accepted_ids() -> list[str]:
    """Vulnerability IDs accepted on purpose: the first word of each non-comment line."""
    ids = []
    for line in ACCEPTED.read_text().splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            ids.append(word)
    return ids


def main() -> int:
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--skip-editable",
        "--progress-spinner",
        "off",
        "--format",
        "json",
    ]
    for vuln in accepted_ids():
        command += ["--ignore-vuln", vuln]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return 1
    dependencies = report["dependencies"]
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        print(
            f"dependency audit skipped: the index answered for none of {len(dependencies)}"
            " packages (no PyPI JSON API here)"
        )
        return 0
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "none yet"
            print(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    unaudited = len(dependencies) - len(audited)
    print(
        f"dependency audit: {len(audited)} packages audited, {unaudited} not found on the index,"
        f" {len(vulnerable)} vulnerable"
    )
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
