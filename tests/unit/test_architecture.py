"""Import rules between the service's parts, computed from the source of service/promo_bridge.

Every module is parsed, and every import in it is an edge: at the top, inside a function or
under TYPE_CHECKING alike. `from promo_bridge.x import y` where y is a submodule is an edge to
promo_bridge.x.y as well as to promo_bridge.x; importing a module also runs its packages'
`__init__`, so it is an edge to each of them; and a package's `__init__` imports what it
imports. A rule forbids a set of modules (promo_bridge's or third-party, glob patterns matching
a module or one of its packages) to a set of source modules, through any chain of promo_bridge
modules. A failure lists, for each source module and forbidden pattern, the shortest chain.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import promo_bridge

SOURCE = Path(promo_bridge.__file__).parent

# The service's edges (Kafka, HTTP), its wiring and its metrics, and the libraries they wrap.
EDGE_WIRING_METRICS = (
    "promo_bridge.kafka",
    "promo_bridge.capillary",
    "promo_bridge.simulator",
    "promo_bridge.observability",
    "promo_bridge.pipeline",
    "promo_bridge.runtime*",
    "promo_bridge.settings",
    "promo_bridge.bootstrap",
    "promo_bridge.cli",
    "promo_bridge._cli_*",
    "aiokafka",
    "kafka",
    "httpx",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "structlog",
)

Graph = Mapping[str, frozenset[str]]


# -- the import graph -----------------------------------------------------------------------


def module_name(package_dir: Path, path: Path) -> str:
    """`pkg/a/b.py` -> `pkg.a.b`; `pkg/a/__init__.py` -> `pkg.a`."""
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _packages_of(name: str) -> Iterator[str]:
    """`a.b.c` -> `a.b.c`, `a.b`, `a`."""
    while name:
        yield name
        name = name.rpartition(".")[0]


def _imported_names(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    """Dotted names of what the module imports; `from x import y` yields x and x.y."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(package_dir: Path) -> Graph:
    """Each module of the package -> the modules it imports (its own package's and others)."""
    paths = {module_name(package_dir, path): path for path in sorted(package_dir.rglob("*.py"))}
    internal = package_dir.name
    graph: dict[str, frozenset[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for imported in _imported_names(tree, name, path.name == "__init__.py"):
            if imported.split(".")[0] != internal:
                targets.add(imported)
            else:
                # `from pkg.a import Name` names no module; `pkg.a` and its packages run.
                targets.update(p for p in _packages_of(imported) if p in paths)
        graph[name] = frozenset(targets - {name})
    return graph


def _matches(name: str, patterns: Sequence[str]) -> str | None:
    """The first pattern that matches the module or one of its packages."""
    for pattern in patterns:
        if any(fnmatchcase(package, pattern) for package in _packages_of(name)):
            return pattern
    return None


def violations(graph: Graph, sources: Iterable[str], forbidden: Sequence[str]) -> list[str]:
    """`a -> b -> c` for each source and forbidden pattern it reaches: the shortest chain."""
    chains: list[str] = []
    for source in sorted(sources):
        parent: dict[str, str | None] = {source: None}
        found: dict[str, str] = {}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            pattern = _matches(node, forbidden) if node != source else None
            if pattern is not None and pattern not in found:
                found[pattern] = node
            for target in sorted(graph.get(node, ())):
                if target not in parent:
                    parent[target] = node
                    queue.append(target)
        for pattern in forbidden:
            if pattern in found:
                chain: list[str] = []
                step: str | None = found[pattern]
                while step is not None:
                    chain.append(step)
                    step = parent[step]
                chains.append(" -> ".join(reversed(chain)))
    return chains


def modules_under(graph: Graph, *packages: str) -> list[str]:
    """The modules of the packages (or the modules named); at least one, or a rule is vacuous."""
    found = sorted(name for name in graph if _matches(name, packages))
    assert found, f"no module matches {packages}"
    return found


def _report(rule: str, chains: list[str]) -> str:
    return f"{rule}; {len(chains)} chain(s):\n  " + "\n  ".join(chains)


# -- the service's rules --------------------------------------------------------------------

GRAPH = import_graph(SOURCE)


def test_the_graph_sees_the_service() -> None:
    """The graph holds the service's parts, so that the rules below are not vacuous."""
    for name in ("promo_bridge.domain.rules", "promo_bridge.kafka.consumer", "promo_bridge.cli"):
        assert name in GRAPH
    assert "promo_bridge.domain.commands" in GRAPH["promo_bridge.domain.batcher"]


def test_domain_reaches_no_edge_wiring_or_metrics() -> None:
    """Nothing in domain/ reaches Kafka, HTTP, the simulator, metrics, settings or the wiring."""
    chains = violations(GRAPH, modules_under(GRAPH, "promo_bridge.domain"), EDGE_WIRING_METRICS)
    assert not chains, _report("domain/ must stay pure", chains)


def test_kafka_and_capillary_never_reach_each_other() -> None:
    """kafka/ and capillary/ do not reach each other, directly or through other modules."""
    chains = violations(
        GRAPH, modules_under(GRAPH, "promo_bridge.kafka"), ["promo_bridge.capillary"]
    ) + violations(GRAPH, modules_under(GRAPH, "promo_bridge.capillary"), ["promo_bridge.kafka"])
    assert not chains, _report("the Kafka edge and the HTTP edge must stay apart", chains)


def test_simulator_shares_no_code_with_client_or_domain() -> None:
    """The simulator reaches neither capillary/ nor domain/, and neither of them reaches it."""
    chains = violations(
        GRAPH,
        modules_under(GRAPH, "promo_bridge.simulator"),
        ["promo_bridge.capillary", "promo_bridge.domain"],
    ) + violations(
        GRAPH,
        modules_under(GRAPH, "promo_bridge.capillary", "promo_bridge.domain"),
        ["promo_bridge.simulator"],
    )
    assert not chains, _report("the simulator must check the client independently", chains)


def test_pipeline_reaches_no_edge() -> None:
    """pipeline.py (the async shell) reaches neither capillary/ nor kafka/, aiokafka or httpx."""
    chains = violations(
        GRAPH,
        modules_under(GRAPH, "promo_bridge.pipeline"),
        ["promo_bridge.capillary", "promo_bridge.kafka", "aiokafka", "httpx"],
    )
    assert not chains, _report("pipeline.py must know no edge", chains)


def test_observability_reaches_no_edge_or_pipeline() -> None:
    """observability/ is handed its data (readiness, status) and reaches no part that owns it."""
    chains = violations(
        GRAPH,
        modules_under(GRAPH, "promo_bridge.observability"),
        ["promo_bridge.kafka", "promo_bridge.capillary", "promo_bridge.pipeline", "aiokafka"],
    )
    assert not chains, _report("observability must be handed its data", chains)


def test_importing_the_domain_loads_no_kafka_or_http() -> None:
    """Importing every domain module in a fresh interpreter loads neither aiokafka nor httpx."""
    modules = modules_under(GRAPH, "promo_bridge.domain")
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


# -- the graph itself, on a package made for it -----------------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_violations_follow_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level, relative, submodule and __init__ re-export imports all make chains."""
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core/__init__.py": "from pkg.core import model\n",
            "pkg/core/model.py": "def late():\n    from pkg import edge\n",
            "pkg/core/rel.py": "from ..edge import http\n",
            "pkg/core/typed.py": "from pkg.core.clean import Thing\n",
            "pkg/core/clean.py": "import json\nThing = 1\n",
            "pkg/edge/__init__.py": "",
            "pkg/edge/http.py": "import httpx.auth\n",
        },
    )
    graph = import_graph(package)
    sources = modules_under(graph, "pkg.core")
    assert sources == [
        "pkg.core",
        "pkg.core.clean",
        "pkg.core.model",
        "pkg.core.rel",
        "pkg.core.typed",
    ]
    assert violations(graph, sources, ["pkg.edge", "httpx"]) == [
        "pkg.core -> pkg.core.model -> pkg.edge",
        "pkg.core.model -> pkg.edge",
        "pkg.core.rel -> pkg.edge",
        "pkg.core.rel -> pkg.edge.http -> httpx.auth",
        # typed.py imports clean.py, and so runs pkg.core's __init__, which re-exports model.
        "pkg.core.typed -> pkg.core -> pkg.core.model -> pkg.edge",
    ]
    assert violations(graph, ["pkg.core.clean"], ["pkg.edge", "httpx"]) == []
