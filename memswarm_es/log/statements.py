"""Statements compiled once for a database's dialect by SQLAlchemy and run on the DB-API
cursor, so that a hot path pays no per-statement or per-row cost of SQLAlchemy's (the log's
reads, the SQL view kept beside it)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class Statement:
    """The SQL text of a compiled statement, and the order of its parameters when the driver
    takes them by position."""

    sql: str
    order: tuple[str, ...] | None
    fixed: Mapping[str, Any]  # parameters the statement binds itself (SQLite's OFFSET 0, say)
    _take: Callable[[Mapping[str, Any]], Any] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The values in the driver's order, taken in C (a tuple even for one parameter).
        take: Callable[[Mapping[str, Any]], Any] | None = None
        if self.order is not None and len(self.order) > 1:
            take = operator.itemgetter(*self.order)
        elif self.order:
            name = self.order[0]
            take = lambda values: (values[name],)  # noqa: E731
        object.__setattr__(self, "_take", take)

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        if self.fixed:
            values = {**self.fixed, **values}
        if self.order is None:
            return values
        return self._take(values) if self._take is not None else ()

    def run(self, cursor: Any, values: Mapping[str, Any]) -> list[Any]:
        """The rows of the statement with ``values``."""
        cursor.execute(self.sql, self.params(values))
        return cursor.fetchall() if cursor.description else []

    def count(self, cursor: Any, values: Mapping[str, Any]) -> int:
        """The rows the statement (an update) changed with ``values``."""
        cursor.execute(self.sql, self.params(values))
        return int(cursor.rowcount)

    def run_many(self, cursor: Any, values: Sequence[Mapping[str, Any]]) -> None:
        if values:
            cursor.executemany(self.sql, [self.params(v) for v in values])


def compile_for(dialect: sa.Dialect, stmt: sa.ClauseElement) -> Statement:
    """``stmt`` compiled for ``dialect`` (its parameters named by bind parameters)."""
    compiled = stmt.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    order = tuple(compiled.positiontup or ()) if dialect.positional else None
    fixed = {name: bind.value for name, bind in compiled.binds.items()
             if bind.value is not None and not bind.required and name in compiled.params}
    return Statement(str(compiled), order, fixed)
