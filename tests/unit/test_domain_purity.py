"""The functional core stays pure: nothing in domain/ reaches Kafka or HTTP (DESIGN.md, Layout)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import promo_bridge.domain

DOMAIN = Path(promo_bridge.domain.__file__).parent
# Third-party I/O libraries, and the shell packages of this project that wrap them.
FORBIDDEN = ("aiokafka", "httpx", "kafka", "promo_bridge.kafka", "promo_bridge.capillary")


def _modules() -> list[Path]:
    return sorted(DOMAIN.glob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def test_domain_modules_import_no_kafka_or_http() -> None:
    """No module of domain/ imports aiokafka, httpx, or the kafka/capillary shells."""
    assert _modules(), "domain/ has no modules?"
    offenders = {
        path.name: sorted(name for name in _imports(path) if _forbidden(name))
        for path in _modules()
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_importing_the_domain_loads_no_kafka_or_http() -> None:
    """Importing every domain module in a fresh interpreter loads neither aiokafka nor httpx."""
    modules = [f"promo_bridge.domain.{path.stem}" for path in _modules() if path.stem != "__init__"]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(','.join(sorted(m for m in ('aiokafka', 'httpx') if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
