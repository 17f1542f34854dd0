"""The import structure: no cycles between top-level packages, the wheel never imports the laptop
platform, and every third-party module imported at run time is a declared dependency.

Imports are read from the source (ast), so imports inside functions and under `TYPE_CHECKING`
count for the package graph: a lazy import hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
import itertools
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WHEEL = PROJECT_ROOT / "src" / "mlops_template"
LAPTOP = PROJECT_ROOT / "laptop" / "src" / "mlops_laptop"
# Imported but installed by something else than a dependency: Spark is the Databricks runtime's
# (locally the `spark` dependency group), Databricks Connect the `connect` extra's, which cannot be
# installed beside pyspark.
PROVIDED = {"pyspark", "py4j", "databricks.connect"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. mlops_template.serving.deploy
    imported: str  # the module named by the import, e.g. mlops_template.platform.base
    type_checking: bool  # under `if TYPE_CHECKING:`
    line: int


def _module_name(path: Path, package_dir: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(path: Path, package_dir: Path) -> Iterator[Import]:
    module = _module_name(path, package_dir)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, *([node.module] if node.module else [])])]
            else:
                names = [str(node.module)]
        else:
            continue
        for name in names:
            yield Import(module, name, id(node) in type_checking, node.lineno)


@cache
def _all_imports() -> tuple[Import, ...]:
    return tuple(
        found
        for package_dir in (WHEEL, LAPTOP)
        for path in sorted(package_dir.rglob("*.py"))
        for found in _imports_of(path, package_dir)
    )


def _top_level(module: str) -> str:
    """`mlops_template.serving.deploy` -> `mlops_template.serving` (a package or top-level module)."""
    return ".".join(module.split(".")[:2])


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _ours(module: str) -> bool:
    return module.split(".")[0] in {WHEEL.name, LAPTOP.name}


def _package_graph() -> dict[str, dict[str, list[Import]]]:
    """Top-level package -> the top-level packages it imports -> the imports that do it."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for found in _all_imports():
        source, target = _top_level(found.module), _top_level(found.imported)
        if _ours(found.imported) and source != target and target != found.imported.split(".")[0]:
            graph.setdefault(source, {}).setdefault(target, []).append(found)
    return graph


def _cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            components.append([node, *component])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(sorted(c), graph) for c in components if len(c) > 1]


def _cycle_in(component: list[str], graph: dict[str, dict[str, list[Import]]]) -> list[str]:
    """A shortest path from the component's first package back to itself (breadth first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, {})):
                if target == start:
                    return [*paths[node], start]
                if target in members and target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def _describe(cycle: list[str], graph: dict[str, dict[str, list[Import]]]) -> str:
    steps = []
    for source, target in itertools.pairwise(cycle):
        where = graph[source][target][0]
        steps.append(f"{source} -> {target} ({where.module} line {where.line} imports {where.imported})")
    return "\n  ".join(steps)


def test_the_cycle_finder_finds_a_cycle_and_names_the_import():
    imports = {
        "p.a": {"p.b": [Import("p.a.x", "p.b.y", False, 3)]},
        "p.b": {"p.a": [Import("p.b.y", "p.a", True, 7)], "p.c": []},
    }
    assert _cycles(imports) == [["p.a", "p.b", "p.a"]]
    assert "p.b.y line 7 imports p.a" in _describe(["p.a", "p.b", "p.a"], imports)
    assert _cycles({"p.a": {"p.b": []}, "p.b": {"p.c": []}}) == []


def test_no_import_cycles_between_top_level_packages():
    """E.g. platform -> serving (for the endpoint deployer) while serving -> platform: the deployer
    is chosen by serving (`endpoint_deployer(platform)`), the laptop's registered as an entry point."""
    graph = _package_graph()
    cycles = [_describe(cycle, graph) for cycle in _cycles(graph)]
    assert not cycles, "import cycles between top-level packages:\n  " + "\n\n  ".join(cycles)


def test_the_wheel_never_imports_the_laptop_platform():
    """The laptop platform is found by entry point names (strings), never imported by the wheel."""
    offending = [
        f"{found.module} line {found.line} imports {found.imported}"
        for found in _all_imports()
        if _within(found.module, WHEEL.name) and _within(found.imported, LAPTOP.name)
    ]
    dynamic = [
        f"{path.relative_to(PROJECT_ROOT)} line {node.lineno}"
        for path in WHEEL.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func).endswith(("import_module", "__import__"))
        and any(LAPTOP.name in ast.unparse(argument) for argument in node.args)
    ]
    assert not offending + dynamic


# --- declared dependencies ------------------------------------------------------------------


def _declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {}).values()
    requirements = [*project["dependencies"], *itertools.chain.from_iterable(extras)]
    return {canonicalize_name(Requirement(requirement).name) for requirement in requirements}


@cache
def _distributions_of(module: str) -> frozenset[str]:
    """The installed distributions that provide `module` (for a namespace package such as
    `databricks`, those holding its subpackage, e.g. `databricks.sdk`)."""
    top, _, rest = module.partition(".")
    candidates = _import_names()[top]
    if len(candidates) > 1 and rest:
        folder = f"{top}/{rest.split('.')[0]}"
        candidates = [name for name in candidates if folder in _folders(name)]
    return frozenset(canonicalize_name(name) for name in candidates)


@cache
def _import_names() -> defaultdict[str, list[str]]:
    return defaultdict(list, packages_distributions())


@cache
def _folders(name: str) -> frozenset[str]:
    """The `top/sub` folders of distribution `name`'s files."""
    return frozenset(
        "/".join(Path(path).parts[:2]).removesuffix(".py") for path in distribution(name).files or []
    )


def _undeclared(package_dir: Path, declared: set[str]) -> list[str]:
    problems = []
    for found in _all_imports():
        if not _within(found.module, package_dir.name):
            continue
        top = found.imported.split(".")[0]
        if found.type_checking or _ours(found.imported) or top in sys.stdlib_module_names:
            continue
        if top == "__future__" or any(_within(found.imported, provided) for provided in PROVIDED):
            continue
        providers = _distributions_of(found.imported)
        if not providers & declared:
            problems.append(
                f"{found.module} line {found.line} imports {found.imported}, provided by "
                f"{sorted(providers) or 'nothing installed'}: none is declared"
            )
    return problems


@pytest.mark.parametrize(
    ("package_dir", "pyprojects"),
    [
        (WHEEL, [PROJECT_ROOT / "pyproject.toml"]),
        (LAPTOP, [PROJECT_ROOT / "pyproject.toml", PROJECT_ROOT / "laptop" / "pyproject.toml"]),
    ],
    ids=["wheel", "laptop"],
)
def test_every_third_party_import_is_a_declared_dependency(package_dir: Path, pyprojects: list[Path]):
    """A module imported at run time but only installed as someone else's dependency breaks when
    that dependency drops it (or, in the wheel, on a cluster that does not have it)."""
    declared = set().union(*(_declared(pyproject) for pyproject in pyprojects))
    assert not _undeclared(package_dir, declared)
