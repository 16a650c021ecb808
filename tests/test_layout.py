"""The tree shows the layers, and imports run one way: each module imports only from its own
layer or those below it (README, "How the code is laid out")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hpod"
LAYERS = {  # higher imports lower, never the reverse
    "face": 6,  # cli.py, display.py, __main__.py, __init__.py
    "supervisor": 5,
    "results": 4,
    "study": 3,
    "records": 2,
    "trial": 1,
    "guard": 0,
    "base": -1,  # job.py, state.py, errors.py, tables.py, logs.py
}
BASE = {"job", "state", "errors", "tables", "logs"}


def layer_of(module: str) -> str:
    """`hpod.study.plan` -> study; `hpod.cli` -> face; `hpod.job` -> base."""
    parts = module.split(".")[1:]
    head = parts[0] if parts else "__init__"
    if head in LAYERS:
        return head
    return "base" if head in BASE else "face"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpod"):
            found |= {f"{node.module}.{a.name}" if node.module == "hpod" else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hpod")}
    return found


def modules() -> dict[str, Path]:
    return {".".join(("hpod", *p.relative_to(PACKAGE).with_suffix("").parts)): p for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_from_a_higher_layer():
    upward = [
        f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
        for name, path in modules().items()
        for target in imports(path)
        if LAYERS[layer_of(target)] > LAYERS[layer_of(name)]
    ]
    assert not upward, upward


def test_every_module_lives_in_a_known_layer_and_stays_readable_in_one_sitting():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long
    assert {layer_of(name) for name in modules()} == set(LAYERS)
