"""The package's import graph: no cycles, and the core never imports a workflow.

Every module of src/yoloq is parsed with `ast`, imports inside functions included:
an import that only runs later still ties the two modules together. `from P import M`
where M is a submodule is an edge to P.M; an import of a package's own `__init__`
from inside that package is not an edge (it is how a package hands names on).
"""

from __future__ import annotations

import ast
from pathlib import Path

import yoloq

PACKAGE_ROOT = Path(yoloq.__file__).parent
# The quantization core and the stages under the workflows; none may import a workflow.
CORE = ("quant", "graph", "export", "evaluate", "runtime", "data", "models", "sensitivity")
WORKFLOWS = "yoloq.workflows"
# The workflows proper; the rest of the workflows package (steps, config, the QAT
# engine) is the shared layer they compose.
SIBLINGS = ("ptq", "sensitivity", "qat", "demo")


def module_names(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (`__init__` as its package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, target] if target else base)


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `module` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            source = node.module
            if node.level:
                source = _resolve_relative(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    edges.add(submodule)
                elif source in known and not module.startswith(source + "."):
                    edges.add(source)
    edges.discard(module)
    return edges


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    names = module_names(root)
    known = set(names)
    return {name: imported_modules(name, path, known) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(core module, workflow module) for every import of a workflow by the core."""
    return sorted(
        (source, target)
        for source, targets in graph.items()
        if source.split(".")[1:2] and source.split(".")[1] in CORE
        for target in targets
        if target == WORKFLOWS or target.startswith(WORKFLOWS + ".")
    )


def workflow_of(module: str) -> str | None:
    """"qat" for yoloq.workflows.qat(.anything); None for the shared layer and the rest."""
    parts = module.split(".")
    if parts[:2] == ["yoloq", "workflows"] and len(parts) > 2 and parts[2] in SIBLINGS:
        return parts[2]
    return None


def crossing_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, workflow) for every import of a workflow by another workflow or by
    the shared layer of the workflows package."""
    return sorted(
        (source, target)
        for source, targets in graph.items()
        if source.startswith(WORKFLOWS + ".") or source == WORKFLOWS
        for target in targets
        if workflow_of(target) is not None and workflow_of(target) != workflow_of(source)
    )


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_core_never_imports_a_workflow():
    assert upward_imports(import_graph()) == []


def test_workflows_are_siblings_over_the_shared_steps():
    graph = import_graph()
    assert {workflow_of(name) for name in graph} >= set(SIBLINGS)  # each exists
    assert crossing_imports(graph) == []


def test_crossing_imports_name_workflow_to_workflow_and_steps_to_workflow():
    graph = {"yoloq.workflows.demo": {"yoloq.workflows.qat", "yoloq.workflows.steps"},
             "yoloq.workflows.steps": {"yoloq.workflows.ptq"},
             "yoloq.workflows.qat": {"yoloq.workflows.training.train"},
             "yoloq.cli.demo": {"yoloq.workflows.demo"}}
    assert crossing_imports(graph) == [("yoloq.workflows.demo", "yoloq.workflows.qat"),
                                       ("yoloq.workflows.steps", "yoloq.workflows.ptq")]


def test_the_graph_sees_imports_inside_functions_and_submodules(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.a import f\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.b import g\n")
    (package / "sub" / "b.py").write_text("from pkg.sub import helper\nfrom pkg import a\n")
    graph = import_graph(package)
    # a -> sub.b only from inside a function; sub.b -> sub (its own package) is no edge.
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_upward_imports_name_the_core_module_and_the_workflow():
    graph = {"yoloq.models.yolo": {"yoloq.workflows.steps"}, "yoloq.workflows.ptq":
             {"yoloq.models.yolo"}, "yoloq.cli.ptq": {"yoloq.workflows.ptq"}}
    assert upward_imports(graph) == [("yoloq.models.yolo", "yoloq.workflows.steps")]
