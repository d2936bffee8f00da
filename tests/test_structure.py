"""The package's import graph, read from the source: no cycles, the network a leaf, and imports of
minigen's own modules inside functions only where a comment says why. Model-free and fast."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "minigen"

# what the network module (model.py) may import from minigen: nothing about generation, text,
# export, the CLI or the public facade
MODEL_MAY_IMPORT = {"minigen.cache", "minigen.config", "minigen.layout", "minigen.positions"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(importer: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The minigen modules an import statement loads (a `from pkg import name` counts as pkg.name
    when that is a module, else as pkg)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "minigen"]
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "minigen":
        return []
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        found.append(sub if sub in MODULES else target)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports() -> dict[str, list[tuple[str, bool, int]]]:
    """module -> [(imported module, inside a function, line)]"""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = []

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in resolve(name, path.name == "__init__.py", child):
                        if target != name:
                            edges.append((target, in_function, child.lineno))
                visit(child, nested)

        visit(tree, False)
        graph[name] = edges
    return graph


def test_no_import_cycle_among_minigen_modules():
    graph = {m: sorted({t for t, _, _ in edges if t in MODULES}) for m, edges in imports().items()}
    # a package's __init__ is loaded before any of its submodules: an edge into it is not a cycle's
    # way back unless __init__ itself imports the importer (checked by the walk like any other edge)
    state, cycles = {}, []

    def walk(node, path):
        state[node] = "open"
        for nxt in graph.get(node, []):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_network_module_is_a_leaf():
    used = {target for target, _, _ in imports()["minigen.model"]}
    assert used <= MODEL_MAY_IMPORT, f"minigen/model.py imports {sorted(used - MODEL_MAY_IMPORT)}"


def test_imports_inside_functions_say_why():
    """An import of minigen's own code inside a function needs a comment on the line or just above
    (why it cannot be at the top: usually to keep TensorFlow out of a fast path)."""
    silent = []
    for module, edges in imports().items():
        lines = MODULES[module].read_text().splitlines()
        for target, in_function, line in edges:
            if not in_function:
                continue
            context = lines[max(0, line - 4):line]
            if not any("#" in text for text in context):
                silent.append(f"{module}:{line} imports {target}")
    assert not silent, "imports inside functions without a reason: " + ", ".join(silent)


def test_no_test_module_imports_another():
    """Shared test helpers live in conftest.py or tests/helpers.py, never in a test module."""
    tests = pathlib.Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name} imports {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not found, found
