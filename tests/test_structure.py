"""The package's import graph, read from the source: no cycles, the network a leaf, and imports of
minigen's own modules inside functions only where a comment says why. Model-free and fast."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "minigen"

# what the network module (model.py) may import from minigen: nothing about generation, text,
# export, the CLI or the public facade
MODEL_MAY_IMPORT = {"minigen.cache", "minigen.config", "minigen.layout", "minigen.positions", "minigen.precision"}


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


# -- the option table (minigen/generation/options.py) is the one place each option is written ------

# option names that may appear in a list / tuple / dict / set written outside the table and the
# processor table, with why
NAME_IN_A_LIST_ALLOWED = {
    ("minigen.export_options", "max_new_tokens"): "export()'s own parameters, named in their range check",
    ("minigen.export_options", "num_beams"): "export()'s own parameters, named in their range check",
    ("minigen.export_options", "top_k"): "export()'s own parameters, named in their range check",
    ("minigen.generation.core", "renormalize_logits"): "a lookup in the compile key's processors",
    ("minigen.generation.generate", "output_scores"): "the memory check's message names what was asked",
    ("minigen.generation.generate", "output_logits"): "the memory check's message names what was asked",
    ("minigen.generation.generate", "output_hidden_states"): "the memory check's message names what was asked",
    ("minigen.generation.generate", "output_attentions"): "the memory check's message names what was asked",
    ("minigen.gpt2", "output_hidden_states"): "logits()'s own parameters, named in their type check",
    ("minigen.gpt2", "output_attentions"): "logits()'s own parameters, named in their type check",
}
TABLES = {"minigen.generation.options", "minigen.generation.processors"}


def test_every_generation_config_field_is_a_row_of_the_option_table():
    import dataclasses

    from minigen.generation.config import GenerationConfig
    from minigen.generation.options import ALL, ALL_MODES, HOST, KEY, OPTIONS, REFUSALS, TENSOR

    assert [f.name for f in dataclasses.fields(GenerationConfig)] == [o.name for o in OPTIONS]
    config = GenerationConfig()
    for o in OPTIONS:
        assert getattr(config, o.name) == o.default and f"    {o.name}: " in GenerationConfig.__doc__, o.name
        assert o.doc and callable(o.check) and o.role in (KEY, TENSOR, HOST), o.name
        assert o.strategies <= ALL and o.modes <= ALL_MODES and o.export <= o.strategies, o.name
        assert set(o.refusals) <= set(REFUSALS), o.name
        assert (o.dtype is not None) == (o.role == TENSOR or bool(o.export)), f"{o.name}: a tensor needs its dtype"
        assert not o.export or hasattr(o.check, "tensor_allowed") or o.shape, f"{o.name}: a SavedModel input's check"
        o.check(o.name, o.default)  # the default passes its own check


def test_every_processor_reads_an_option_of_the_table():
    from minigen.generation import processors as P
    from minigen.generation.config import GenerationConfig
    from minigen.generation.options import BY_NAME

    for p in P.PROCESSORS + P.WARPERS:  # an option, or a property of GenerationConfig resolved from options
        assert p.option in BY_NAME or isinstance(getattr(GenerationConfig, p.option, None), property), p.option


def test_every_option_has_a_flag_or_is_python_only():
    """Each option with a scalar (or list of ids) value is a flag of `minigen generate` and `minigen
    batch`; the others (nested structures, functions, the outputs the command does not write) are
    Python only. The commands' option flags are exactly the table's."""
    from minigen import cli
    from minigen.generation.options import OPTIONS, OUTPUTS, bias_map, decay_pair, functions, word_list

    cli.build_parser()
    for o in OPTIONS:
        assert o.flag or o.modes <= OUTPUTS or o.check in (bias_map, word_list, functions, decay_pair), \
            f"{o.name} has no flag of minigen generate: give it one, or say why it is Python only"
    table = {o.flag for o in OPTIONS if o.flag}
    own = {"generate": {"--model", "--input", "--output", "--overwrite", "--format", "--batch-size", "--dtype",
                        "--assistant-model", "--stream", "--verbose", "--help"},
           "batch": {"--input", "--output", "--errors", "--model", "--rows", "--overwrite", "--dtype", "--help"}}
    for command, flags in own.items():
        parser = cli.SUBPARSERS[command]
        given = {s for action in parser._actions for s in action.option_strings if s.startswith("--")}
        assert given - flags == table, f"minigen {command}: flags outside the option table: {given - flags - table}"


def test_no_hand_list_of_option_names_outside_the_tables():
    """A list of option names written by hand drifts from the table (the CLI flags, the SavedModel
    inputs and the text API's refusals once did): derive it from options.OPTIONS instead."""
    from minigen.generation.options import BY_NAME

    found = []
    for module, path in MODULES.items():
        if module in TABLES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                for item in items:
                    if isinstance(item, ast.Constant) and item.value in BY_NAME \
                            and (module, item.value) not in NAME_IN_A_LIST_ALLOWED:
                        found.append(f"{module}:{node.lineno} {item.value}")
    assert not found, "option names listed by hand: " + ", ".join(found)


def test_the_options_page_is_the_table():
    from minigen.generation.options import markdown

    page = PACKAGE.parent / "docs" / "options.md"
    assert page.read_text() == markdown(), "docs/options.md is stale: run `make docs`"


def test_every_strategy_is_registered_once_and_its_modes_agree():
    """A strategy is a row of generate.STRATEGIES (its loop, and the module streaming compiles) and a
    row of options.MODES (the modes the option checks let it run in): the two name the same
    strategies, and those that stream are those whose modes include streaming."""
    from minigen.generation.generate import STRATEGIES
    from minigen.generation.options import ALL, MODES, STREAM, TITLES

    assert set(STRATEGIES) == set(ALL) == set(MODES) == set(TITLES)
    assert {n for n, s in STRATEGIES.items() if s.stream is not None} == {n for n, m in MODES.items() if STREAM in m}
