"""The house's layers, read from the source: the faces reach the rest through the service layer, and no two
modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "api", "cli", "core", "service", "store", "workers")

# What the command line still imports past the service layer: the model, where it runs it in its own process
# (eval, memory), and the API app that `serve` runs. Listed so that nothing is added to it unnoticed; the
# stores and the workers it never imports (the test below).
CLI_PAST_THE_SERVICE = {
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
    ("cli/services.py", "agent.models"),
    ("cli/services.py", "api.app"),  # serve: the API in this process
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


def test_the_faces_never_import_the_stores_or_the_workers():
    past = {(str(p.relative_to(ROOT)), m) for face in ("api", "cli") for p in sources(face) for m in imports(p)}
    assert sorted((p, m) for p, m in past if m.split(".")[0] in ("store", "workers")) == []


def test_no_import_circle_of_any_length():
    """A circle (a -> b -> ... -> a) makes import order matter and the layers meaningless; imports inside
    functions count too, since they run on the same path."""
    from graphlib import CycleError, TopologicalSorter

    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sources(package):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[name] = {m for m in imports(path) if m != name}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
