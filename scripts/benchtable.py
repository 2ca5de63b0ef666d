"""The table every benchmark prints: a title, measures in columns, then ratios and notes.

Numbers are right-aligned (integers with thousands separators, floats with ``decimals`` places
for their column, 2 by default); a column holding only text is left-aligned.
"""

from __future__ import annotations

from collections.abc import Sequence

Cell = str | int | float


def ratio(label: str, value: float, places: int = 2) -> str:
    """A line comparing two measures: ``label: 0.41x``."""
    return f"{label}: {value:.{places}f}x"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]], *,
                decimals: Sequence[int] = (), notes: Sequence[str] = ()) -> None:
    """Print ``rows`` under ``headers`` between rules, after ``title`` and before ``notes``."""
    places = [*decimals, *[2] * (len(headers) - len(decimals))]
    texts = [[_text(c, places[i]) for i, c in enumerate(row)] for row in rows]
    numeric = [any(not isinstance(row[i], str) for row in rows) for i in range(len(headers))]
    widths = [max(len(h), *(len(t[i]) for t in texts)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w)
                         for c, w, right in zip(cells, widths, numeric, strict=True)).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    print(f"\n{title}\n")
    print(line(headers))
    print(rule)
    for cells in texts:
        print(line(cells))
    if notes:
        print(rule)
        for note in notes:
            print(note)


def _text(cell: Cell, places: int) -> str:
    if isinstance(cell, str):
        return cell
    if isinstance(cell, int):
        return f"{cell:,}"
    return f"{cell:,.{places}f}"
