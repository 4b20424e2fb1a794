"""The house's layers, read from the source: the faces reach the rest through the service layer, and no two
modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "api", "cli", "core", "service", "store", "workers")

# What the command line still imports past the service layer, each where it runs the model or the services
# in its own process (eval, memory, up/down). Listed so that nothing is added to it unnoticed.
CLI_PAST_THE_SERVICE = {
    ("cli/__init__.py", "store.redis"),
    ("cli/evaluate.py", "agent.choices"),
    ("cli/evaluate.py", "agent.evaluation"),
    ("cli/evaluate.py", "agent.models"),
    ("cli/evaluate.py", "agent.retrieval"),
    ("cli/memory.py", "agent.choices"),
    ("cli/memory.py", "agent.documents"),
    ("cli/memory.py", "agent.models"),
    ("cli/memory.py", "agent.pipeline"),
    ("cli/memory.py", "agent.retrieval"),
    ("cli/queries.py", "agent.choices"),
    ("cli/queries.py", "workers.liveness"),
    ("cli/services.py", "agent.models"),
    ("cli/services.py", "api.app"),  # serve: the API in this process
    ("cli/services.py", "store.db"),
    ("cli/services.py", "store.redis"),
    ("cli/services.py", "workers"),
    ("cli/services.py", "workers.app"),
}


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The project modules ``path`` imports (``from workers import local`` counts as ``workers``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_http_api_imports_only_the_service_layer_and_core():
    past = {(str(p.relative_to(ROOT)), m) for p in sources("api") for m in imports(p)}
    assert {(p, m) for p, m in past if m.split(".")[0] not in ("api", "service", "core")} == set()


def test_the_command_line_adds_nothing_past_the_service_layer():
    past = {(str(p.relative_to(ROOT)), m) for p in sources("cli") for m in imports(p)}
    beyond = {(p, m) for p, m in past if m.split(".")[0] not in ("cli", "service", "core")}
    assert beyond <= CLI_PAST_THE_SERVICE, sorted(beyond - CLI_PAST_THE_SERVICE)


def test_no_two_modules_import_each_other():
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sources(package):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[name] = imports(path)
    pairs = {tuple(sorted((a, b))) for a, deps in graph.items() for b in deps if a != b and a in graph.get(b, ())}
    assert pairs == set()
