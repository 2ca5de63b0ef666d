"""The SQL log's index of events by scope and actor, kept in a table beside the events.

Indexes on ``(agent_id, position)`` and the like in the events table itself would put each
batch's rows on as many index pages as it has agents, contexts, groups and actors: most of
what an append writes, for queries (audit, ``as_of``, a subscription) that appends never make.
So the four indexes live on ``{prefix}scopes``, a copy of each event's scope and actor keyed
by position, which an append never writes: a scoped query that finds it far behind first
fills it from the events (``INSERT ... SELECT``, in bounded steps, under the log's write
lock). A scoped query is exact whatever the lag, being one statement (one snapshot): the
positions the table covers are found through its indexes, the ones after its last by a range
scan of the events' primary key. Its rows hold ids, never content, so forget leaves them be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..events import ROW_FIELDS

#: The columns indexed, each with the position.
COLUMNS = ("agent_id", "group_id", "context_id", "actor")
#: The events a scoped query reads past the index, at most, before the index is filled.
LAG = 1000
#: The events one transaction of filling copies, so that appends take turns with a long fill.
STEP = 50_000
#: The indexes on the events table itself made by versions before this table; dropped.
LEGACY = tuple(f"events_{column}" for column in COLUMNS)


def scopes_table(prefix: str, metadata: sa.MetaData) -> sa.Table:
    """``{prefix}scopes``: each event's scope and actor, by position, indexed by each."""
    table = sa.Table(
        f"{prefix}scopes", metadata,
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=False),
        *(sa.Column(column, sa.String(512)) for column in COLUMNS),
    )
    for column in COLUMNS:
        sa.Index(f"{prefix}scopes_{column}", table.c[column], table.c.position)
    return table


def uses_index(names: Sequence[str]) -> bool:
    """Whether a query filtering on ``names`` goes through the scope index (a memory's own
    events are found by the events' (memory_id, version) key instead)."""
    return "memory_id" not in names and any(name in COLUMNS for name in names)


def scoped_select(events: sa.Table, scopes: sa.Table, names: Sequence[str],
                  reverse: bool) -> sa.CompoundSelect:
    """The events matching the filters ``names`` (bound by those names, and ``after``,
    ``until`` and ``limit`` when present), in order: those the index covers through it, the
    rest by a range scan from its last position."""
    fields = [events.c[name] for name in ROW_FIELDS]
    filters = [name for name in names if name in COLUMNS]

    def bounded(position: sa.ColumnElement[Any]) -> list[sa.ColumnElement[bool]]:
        bounds = [position > sa.bindparam("after")]
        if "until" in names:
            bounds.append(position <= sa.bindparam("until"))
        return bounds

    covered = sa.select(sa.func.coalesce(sa.func.max(scopes.c.position), 0)).scalar_subquery()
    # The index's position, not the event's (equal): the index gives its order, no sort.
    indexed = (sa.select(*(scopes.c.position if f.name == "position" else f for f in fields))
               .select_from(scopes.join(events, events.c.position == scopes.c.position))
               .where(*bounded(scopes.c.position),
                      *(scopes.c[n] == sa.bindparam(n) for n in filters),
                      *(events.c[n] == sa.bindparam(n) for n in filters)))
    # One lower bound, the later of ``after`` and the index's last position, so that the
    # range scan starts there (given both, SQLite starts at the first and filters by the other).
    start = sa.case((covered > sa.bindparam("after"), covered), else_=sa.bindparam("after"))
    tail = (sa.select(*fields)
            .where(events.c.position > start,
                   *bounded(events.c.position)[1:],
                   *(events.c[n] == sa.bindparam(n) for n in filters)))
    both = sa.union_all(indexed, tail)
    position = both.selected_columns.position
    stmt = both.order_by(position.desc() if reverse else position)
    return stmt.limit(sa.bindparam("limit")) if "limit" in names else stmt


def lag_select(events: sa.Table, scopes: sa.Table) -> sa.Select[Any]:
    """The head's position and the index's last (``None`` when empty)."""
    return sa.select(sa.select(sa.func.max(events.c.position)).scalar_subquery(),
                     sa.select(sa.func.max(scopes.c.position)).scalar_subquery())


def fill_step(events: sa.Table, scopes: sa.Table, step: int) -> sa.Insert:
    """Copy at most ``step`` events past the index's last position into it (run under
    the log's write lock, so that the index stays a gapless prefix of the log)."""
    covered = sa.select(sa.func.coalesce(sa.func.max(scopes.c.position), 0)).scalar_subquery()
    source = (sa.select(events.c.position, *(events.c[c] for c in COLUMNS))
              .where(events.c.position > covered).order_by(events.c.position).limit(step))
    return sa.insert(scopes).from_select(["position", *COLUMNS], source)

