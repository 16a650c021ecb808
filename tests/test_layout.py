"""The tree shows the layers, and imports run one way: each module imports only from its own
layer or those below it, no two modules import each other by any path, and a queue row's
columns are known by name only where the queue reads and writes them (README, "How the code is
laid out")."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hpod"
LAYERS = {  # higher imports lower, never the reverse
    "face": 6,  # cli/, display.py, status_display.py, __main__.py, __init__.py
    "supervisor": 5,
    "results": 4,
    "study": 3,
    "records": 2,
    "trial": 1,
    "guard": 0,
    "base": -1,  # job.py, state.py, keyed_file.py, storage.py, errors.py, tables.py, logs.py
}
BASE = {"job", "state", "keyed_file", "storage", "errors", "tables", "logs"}
ROW_READERS = {"hpod.supervisor.queue", "hpod.supervisor.rows", "hpod.supervisor.enqueue"}  # enqueue writes rows


def layer_of(module: str) -> str:
    """`hpod.study.plan` -> study; `hpod.cli` -> face; `hpod.job` -> base."""
    parts = module.split(".")[1:]
    head = parts[0] if parts else "__init__"
    if head in LAYERS:
        return head
    return "base" if head in BASE else "face"


def imports(path: Path, *, typing_too: bool = True) -> set[str]:
    """The hpod modules a file imports, anywhere in it; without those under `if TYPE_CHECKING`
    when `typing_too` is False (they never run)."""
    tree = ast.parse(path.read_text())
    if not typing_too:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                node.body = []
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


def import_graph() -> dict[str, set[str]]:
    """Module → the hpod modules it imports at run time (`hpod.cli.base.cli` counts as hpod.cli.base)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for target in imports(path, typing_too=False):
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert not cycles(import_graph())


def test_the_cycle_check_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


ROW_NAMES = {"row"}  # the name every reader of a queue row used


def row_reads(path: Path) -> list[str]:
    """`row["column"]`, `row.get("column")` and `job.row[...]`: a queue row read by key."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        target, key = None, None
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            target, key = node.value, node.slice.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                target, key = node.func.value, first.value
        named = getattr(target, "id", None) or getattr(target, "attr", None)
        if key in QUEUE_COLUMNS and named in ROW_NAMES:
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def queue_columns() -> set[str]:
    from hpod.supervisor.rows import QueuedJob

    return {f.name for f in dataclasses.fields(QueuedJob)}


QUEUE_COLUMNS = queue_columns()


def test_no_queue_row_is_read_by_key_outside_the_queue():
    reads = [read for name, path in modules().items() if name not in ROW_READERS for read in row_reads(path)]
    assert not reads, reads


def test_the_row_check_finds_a_planted_read(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('def f(row, job):\n    return row["study_name"], job.row.get("state"), row["not_a_column"]\n')
    assert row_reads(planted) == ["planted.py:2 row['study_name']", "planted.py:2 job.row.get('state')"]


def test_the_queued_job_has_every_column_of_the_queue(tmp_path):
    import sqlite3

    from hpod.supervisor.queue import Queue

    Queue(tmp_path / "queue.db").close()
    columns = {row[1] for row in sqlite3.connect(tmp_path / "queue.db").execute("PRAGMA table_info(jobs)")}
    assert columns == QUEUE_COLUMNS
