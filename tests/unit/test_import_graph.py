"""The layout rules: which package may import which, and no import cycle.

The graph is read from the source with ``ast`` (nothing is imported): an
edge ``a -> b`` for every ``import b`` / ``from b import x`` in module ``a``
of the project's packages, its test library, its tests and its benchmarks,
at any depth (imports inside functions count too: a cycle hidden in a
function is still a cycle). Imports under ``if TYPE_CHECKING:`` are left
out, since they never run. A project module is named in full
(``ryu_app.net.topology``); anything else by its top-level package
(``ryu``, ``requests``).

The rules (each test fails naming the offending edges):

- only ``ryu_app`` imports Ryu among the packages that ship (tests, the
  test library and benchmarks drive the Ryu app and may);
- ``measure_cli`` imports neither Ryu, ``ryu_app`` nor ``host_agent``: the
  CLI needs only ``requests`` and PyYAML;
- ``host_agent`` and ``ryu_app`` never import each other: they are
  different processes and talk HTTP through ``measure_model``'s types;
- neither ``host_agent`` nor ``ryu_app`` imports ``measure_cli``: what the
  CLI shares with a server (policy checks, the REST client) lives in
  ``measure_model`` or ``measure_common``;
- no module imports a test module: harnesses and shared helpers live in
  ``testing/``, shared fixtures in a ``conftest.py``;
- no import cycle.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("ryu_app", "host_agent", "measure_model", "measure_common", "measure_cli", "topo")
PACKAGES = (*SHIPPED, "testing", "tests", "bench")

Graph = dict[str, set[str]]

pytestmark = pytest.mark.unit


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def _imported_names(tree: ast.AST, name: str, is_package: bool) -> list[str]:
    """Every dotted name module ``name`` imports (``from a import b`` gives ``a.b``)."""
    skip = _type_checking_only(tree)
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".")
                package = package if is_package else package[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names += [f"{base}.{a.name}" for a in node.names]
    return names


@functools.cache
def import_graph(packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Module -> what it imports: project modules in full, others by top-level name."""
    paths = {_module_name(p): p for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    graph: Graph = {name: set() for name in paths}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        for target in _imported_names(tree, name, path.name == "__init__.py"):
            if target.split(".")[0] in packages:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name and target not in packages:
                    graph[name].add(target)
            else:
                graph[name].add(target.split(".")[0])
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue  # outside the project
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _is_test_module(module: str) -> bool:
    last = module.rpartition(".")[2]
    return _in(module, "tests") and (last.startswith("test_") or last == "conftest")


def forbidden(graph: Graph, source: Callable[[str], bool],
              target: Callable[[str], bool]) -> list[str]:
    """``a -> b`` for every edge from a module ``source`` accepts to one ``target`` accepts."""
    return sorted(f"{a} -> {b}" for a, deps in graph.items() if source(a)
                  for b in deps if target(b))


RULES: dict[str, tuple[Callable[[str], bool], Callable[[str], bool]]] = {
    "only ryu_app imports Ryu": (
        lambda a: _in(a, *SHIPPED) and not _in(a, "ryu_app"), lambda b: b == "ryu"),
    "measure_cli imports neither Ryu, ryu_app nor host_agent": (
        lambda a: _in(a, "measure_cli"), lambda b: _in(b, "ryu", "ryu_app", "host_agent")),
    "host_agent does not import ryu_app": (
        lambda a: _in(a, "host_agent"), lambda b: _in(b, "ryu_app")),
    "ryu_app does not import host_agent": (
        lambda a: _in(a, "ryu_app"), lambda b: _in(b, "host_agent")),
    "host_agent and ryu_app do not import measure_cli": (
        lambda a: _in(a, "host_agent", "ryu_app"), lambda b: _in(b, "measure_cli")),
    "no module imports a test module": (
        lambda a: True, _is_test_module),
}


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c", "ryu"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("rule, edge", [
    ("only ryu_app imports Ryu", ("topo.launch", "ryu")),
    ("only ryu_app imports Ryu", ("measure_model.task", "ryu")),
    ("measure_cli imports neither Ryu, ryu_app nor host_agent", ("measure_cli.cli", "ryu")),
    ("measure_cli imports neither Ryu, ryu_app nor host_agent",
     ("measure_cli.render", "host_agent.api")),
    ("measure_cli imports neither Ryu, ryu_app nor host_agent",
     ("measure_cli.watch", "ryu_app.rest.api")),
    ("host_agent does not import ryu_app", ("host_agent.agent", "ryu_app.net.topology")),
    ("ryu_app does not import host_agent", ("ryu_app.service.core", "host_agent.counters")),
    ("host_agent and ryu_app do not import measure_cli",
     ("ryu_app.rest.api", "measure_cli.policy_check")),
    ("host_agent and ryu_app do not import measure_cli", ("host_agent.agent", "measure_cli")),
    ("no module imports a test module", ("tests.unit.test_auth", "tests.unit.test_fuzz")),
    ("no module imports a test module", ("tests.netns.conftest", "tests.netns.test_x")),
    ("no module imports a test module", ("bench.e2e", "tests.mininet.test_y")),
])
def test_each_rule_catches_its_violation(rule, edge):
    source, target = RULES[rule]
    assert forbidden({edge[0]: {edge[1]}}, source, target) == [f"{edge[0]} -> {edge[1]}"]


@pytest.mark.parametrize("edge", [
    ("ryu_app.app", "ryu"), ("testing.harness", "ryu"), ("tests.unit.test_rest", "ryu"),
    ("measure_cli.cli", "measure_common.httpclient"), ("tests.unit.test_x", "testing.harness"),
    ("tests.unit.test_x", "tests"), ("host_agent.agent", "measure_model.task"),
    ("ryu_app.rest.api", "measure_model.policy_errors"), ("tests.unit.test_cli", "measure_cli"),
])
def test_the_rules_allow_what_the_layout_allows(edge):
    graph = {edge[0]: {edge[1]}}
    assert all(forbidden(graph, *rule) == [] for rule in RULES.values())


def test_the_graph_sees_the_real_imports():
    graph = import_graph()
    assert "measure_common.httpclient" in graph["ryu_app.service.core"]
    assert "host_agent.overlay.down" in graph["host_agent.overlay.node"]
    assert "host_agent.bandwidth.worker" in graph["host_agent.bandwidth.receive"]
    assert "ryu" in graph["ryu_app.app"]
    assert "testing.harness" in graph["tests.unit.test_rest"]
    assert "bench.common" in graph["bench.e2e"]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_layout_rule(rule):
    assert forbidden(import_graph(), *RULES[rule]) == [], rule


def test_no_import_cycle_between_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
