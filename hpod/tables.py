"""Tables that fit the terminal: each column has a rank, and as the terminal narrows columns are
dropped whole (named in the caption) rather than any cell being cut or any row wrapped, the way
`ps`, `kubectl get` and pueue do: first those with nothing in them now (every cell empty or
"-"), then the highest-ranked. Numbers, states and keys are never cut. Output to a pipe or a
file is not squeezed: it gets every column."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table

UNLIMITED = 100_000  # the width a pipe gets: room for every column
EMPTY = ("", "-")  # a cell that tells nothing


@dataclass(frozen=True)
class Column:
    name: str
    justify: str = "right"
    rank: int = 0  # 0: always shown; the highest rank is dropped first as the terminal narrows


def fitted(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int | None,
    title: str | None = None,
    caption: str | None = None,
    styles: Sequence[str | None] | None = None,
) -> Table:
    """The table with as many columns as fit in `width` (None: all): empty ones dropped first,
    then by rank."""
    kept = list(range(len(columns)))
    empty = {i for i in range(len(columns)) if all(row[i] in EMPTY for row in rows)}
    droppable = sorted(
        (i for i, c in enumerate(columns) if c.rank > 0), key=lambda i: (i not in empty, -columns[i].rank, -i)
    )
    table = build(columns, rows, kept, title, caption, styles)
    while width is not None and natural_width(table) > width and droppable:
        kept.remove(droppable.pop(0))
        table = build(columns, rows, kept, title, caption, styles)
    dropped = [c.name for i, c in enumerate(columns) if i not in kept]
    if dropped:
        note = f"not shown at {width} columns: {', '.join(dropped)} (--wide or --json shows them)"
        table.caption = note if caption is None else f"{caption}\n{note}"
    return table


def build(columns, rows, kept, title, caption, styles) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,  # a rule under the header; one space between columns, as `ps` has
        show_edge=False,
        padding=0,
    )
    for i in kept:
        column = columns[i]
        cells = [column.name, *(row[i] for row in rows)]
        table.add_column(column.name, justify=column.justify, no_wrap=True, min_width=max(map(len, cells)))
    for n, row in enumerate(rows):
        table.add_row(*(row[i] for i in kept), style=None if styles is None else styles[n])
    return table


def natural_width(table: Table) -> int:
    """The columns' width with nothing squeezed (the title and caption may wrap)."""
    title, caption = table.title, table.caption
    table.title = table.caption = None
    try:
        return Console(width=UNLIMITED).measure(table).maximum
    finally:
        table.title, table.caption = title, caption


def table_width(console: Console, wide: bool = False) -> int | None:
    """The width tables fit to: the terminal's, or None (every column) for a pipe, a file or --wide."""
    return console.width if console.is_terminal and not wide else None


def show(console: Console, table: Table) -> None:
    """Print a table never squeezed: a pipe or a file gets its full width, and a terminal too
    narrow for even the columns that are always shown gets lines it wraps, not cut cells."""
    width = console.width
    console.width = max(width, natural_width(table))  # print() alone caps a table at the console's width
    try:
        if console.is_terminal:
            console.print(table)
            return
        with console.capture() as captured:  # a pipe or the journal: no padding to the table's width
            console.print(table)
        console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    finally:
        console.width = width
