"""The package's layering, read from the import statements: shared modules import no
component, and no component imports another (the runner image carries the runner and the
shared modules only). `schedgen.cli` is the `schedgen` command's entry point and may
compose components."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "schedgen"
COMPONENTS = ("runner", "operator", "api")
ENTRY_POINTS = {"cli.py"}


def imported_modules(path: Path, text: str | None = None) -> set[str]:
    """Absolute names of the schedgen modules `path` imports (relative imports resolved)."""
    package = ["schedgen", *path.relative_to(SRC).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "schedgen" or m.startswith("schedgen.")}


def component_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in COMPONENTS else None


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_respect_the_layers(path):
    own = path.relative_to(SRC).parts[0] if len(path.relative_to(SRC).parts) > 1 else None
    if path.name in ENTRY_POINTS and own is None:
        return
    foreign = {m for m in imported_modules(path) if component_of(m) not in (None, own)}
    assert not foreign, f"{path.relative_to(SRC)} imports {sorted(foreign)}"


def test_the_check_sees_a_violation():
    """The rule can fail: a runner module importing the operator and the API is caught."""
    probe = SRC / "runner" / "probe.py"  # read from the text below, never written
    text = "from schedgen.operator import scheduler\nfrom ..api import gate\nfrom . import parsing\n"
    assert {component_of(m) for m in imported_modules(probe, text)} == {"operator", "api", "runner"}


MAX_FUNCTION_LINES = 60


def long_functions(path: Path, text: str | None = None, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """Functions and methods of `path` longer than `limit` lines (docstring included)."""
    tree = ast.parse(path.read_text() if text is None else text)
    return {f"{path.name}:{node.lineno}:{node.name}": size for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (size := node.end_lineno - node.lineno + 1) > limit}


def test_no_product_function_is_over_60_lines():
    """Short functions, one concern each (a cap on modules made a class split into two
    files; a cap on functions keeps each step readable where it is)."""
    long = {name: n for p in sources() for name, n in long_functions(p).items()}
    assert not long, long


def test_the_function_check_sees_a_long_function():
    text = "def f():\n" + "    x = 1\n" * 61 + "\n\ndef g():\n    return 1\n"
    assert long_functions(SRC / "probe.py", text) == {"probe.py:1:f": 62}
