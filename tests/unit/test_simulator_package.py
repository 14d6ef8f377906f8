"""The simulator package's boundaries: standalone, and a small declared public surface."""

from __future__ import annotations

import ast
from pathlib import Path

import promo_bridge.simulator as simulator

PACKAGE = Path(simulator.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


def test_simulator_imports_neither_the_client_nor_the_domain() -> None:
    """No simulator module imports promo_bridge.capillary or promo_bridge.domain."""
    offenders = {
        f"{path.name}: {module}"
        for path in PACKAGE.glob("*.py")
        for module in _imported_modules(path)
        if module.startswith(("promo_bridge.capillary", "promo_bridge.domain"))
    }
    assert offenders == set()


def test_public_surface_is_exported() -> None:
    """The names the package docstring documents are importable from promo_bridge.simulator."""
    expected = {
        "Simulator",
        "Catalogue",
        "load_catalogue",
        "default_catalogue",
        "Faults",
        "Credentials",
        "Ledger",
        "serve",
        "add_simulate_api_parser",
        "run_simulator",
        "ApiOptions",
    }
    assert expected <= set(simulator.__all__)
    assert all(hasattr(simulator, name) for name in simulator.__all__)


def test_shipped_catalogue_is_package_data() -> None:
    """catalogue.yaml sits in the package, where pyproject's package-data picks it up."""
    assert (PACKAGE / "catalogue.yaml").is_file()
