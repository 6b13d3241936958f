"""The package's imports run one way: down the layers, never in a cycle.

Read from the source with `ast` (nothing is imported), so an import inside a function counts as
much as one at the top of a module. An import may break the rule only with a comment on it (or
on the line above) that starts `# layer-exception:` and says why.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import tuneloop

PACKAGE = Path(tuneloop.__file__).parent
MARK = "# layer-exception:"

# Lowest first; a module may import its own layer and the ones before it.
LAYERS = [
    ("tuneloop", "tuneloop.errors", "tuneloop.files", "tuneloop.config",
     "tuneloop.recipe_template"),
    ("tuneloop.data",),
    ("tuneloop.models",),
    ("tuneloop.workspace", "tuneloop.registry", "tuneloop.track"),  # run folders, lineage
    ("tuneloop.train",),
    ("tuneloop.evaluate",),
    ("tuneloop.export", "tuneloop.serve", "tuneloop.report", "tuneloop.refine", "tuneloop.ui"),
    ("tuneloop.cli", "tuneloop.quickstart"),
]  # fmt: skip

# Imports that break the rule in files this change could not edit, each with its way out. The
# test fails when one is gone, so the entry is removed with the debt.
OWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the tuneloop module imported
    where: str  # module:line
    excused: bool  # carries a `# layer-exception:` comment


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of a tuneloop module in `path`: `from a import b` names `a.b` when `b` is a
    module, else `a`."""
    text = path.read_text()
    lines = text.splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets = subs if len(subs) == len(node.names) else [base, *subs]
        else:
            continue
        near = lines[max(node.lineno - 2, 0) : node.end_lineno]
        excused = any(MARK in ln and ln.split(MARK, 1)[1].strip() for ln in near)
        where = f"{name}:{node.lineno}"
        found += [Import(name, t, where, excused) for t in targets if t in known and t != name]
    return found


def all_imports() -> list[Import]:
    mods = modules()
    return [i for name, path in mods.items() for i in imports_of(name, path, set(mods))]


def layer(name: str) -> int:
    for n, members in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members if m != "tuneloop"):
            return n
    return 0 if name == "tuneloop" else -1


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer(m) < 0] == []


def test_imports_only_go_down_the_layers():
    upward = [
        f"{i.where}: {i.source} (layer {layer(i.source)}) imports {i.target} "
        f"(layer {layer(i.target)})"
        for i in all_imports()
        if layer(i.target) > layer(i.source) and not i.excused and (i.source, i.target) not in OWED
    ]
    assert upward == []


def test_training_does_not_import_evaluation():
    up = [i.where for i in all_imports() if i.source.startswith("tuneloop.train.")
          and i.target.startswith("tuneloop.evaluate") and not i.excused
          and (i.source, i.target) not in OWED]  # fmt: skip
    assert up == []


def test_no_import_cycle():
    edges: dict[str, set[str]] = defaultdict(set)
    for i in all_imports():
        if not i.excused:
            edges[i.source].add(i.target)
    assert cycles(edges) == []


def test_owed_imports_are_still_there():
    present = {(i.source, i.target) for i in all_imports()}
    assert [pair for pair in OWED if pair not in present] == []


def test_the_checker_sees_a_cycle_and_a_function_level_import(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    path = tmp_path / "m.py"
    path.write_text(
        "def f():\n    from tuneloop.evaluate import run\n\n"
        "def g():\n    # layer-exception: because\n    from tuneloop.cli import main\n"
    )
    found = imports_of("tuneloop.train.m", path, {"tuneloop.evaluate.run", "tuneloop.cli.main"})
    assert [(i.target, i.excused) for i in found] == [
        ("tuneloop.evaluate.run", False),
        ("tuneloop.cli.main", True),
    ]
