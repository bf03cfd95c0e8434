"""The runner's modules import one another without a cycle, and none reaches for another
module's private names: what two modules share lives in a module both import."""

from __future__ import annotations

import ast
from pathlib import Path

from test_layering import SRC, imported_modules

RUNNER = SRC / "runner"


def module_name(path: Path) -> str:
    return ".".join(["schedgen", *path.relative_to(SRC).with_suffix("").parts])


def runner_graph() -> dict[str, set[str]]:
    """module -> the runner modules it imports (at the top or inside a function)."""
    modules = {module_name(p): p for p in RUNNER.glob("*.py") if p.name != "__init__.py"}
    return {name: {m for m in imported_modules(path) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            found.append(trail[trail.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def private_uses(path: Path, text: str | None = None) -> set[str]:
    """`_name`s of other schedgen modules that `path` imports or reads as attributes."""
    tree = ast.parse(path.read_text() if text is None else text)
    aliases, found = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("schedgen")):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.add(alias.name)
                aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("schedgen"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.add(f"{node.value.id}.{node.attr}")
    return found


def test_runner_imports_form_no_cycle():
    graph = runner_graph()
    assert "schedgen.runner.run" in graph["schedgen.runner.batch"]  # the graph sees imports
    assert not cycles(graph), cycles(graph)


def test_runner_modules_use_no_private_name_of_another():
    used = {p.name: u for p in sorted(RUNNER.glob("*.py")) if (u := private_uses(p))}
    assert not used, used


def test_the_checks_see_a_violation():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    text = ("from schedgen.runner import main as single\nfrom .run import _hidden\n"
            "def f():\n    return single._Terminated, single.__name__\n")
    assert private_uses(RUNNER / "probe.py", text) == {"_hidden", "single._Terminated"}


def test_the_runner_loads_no_pydantic():
    """The runner image has no pydantic (tests/images/test_locks.py): its modules, and the
    shared ones they import (schedgen.logs, not schedgen.settings), must not need it."""
    import subprocess
    import sys

    probe = ("import sys, schedgen.runner.main, schedgen.runner.batch, schedgen.runner.cli_parse, schedgen.cli\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_settings', 'fastapi')"
             " or m == 'schedgen.settings'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
