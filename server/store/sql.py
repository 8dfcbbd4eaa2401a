"""The queries both databases answer, each written once. A `Dialect` says what differs:
how a parameter is written (`?` or `$1`), how a list of values is matched, and the few
expressions (a column's size, the steps' summary) each database spells its own way."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import FINISHED_SQL, RUN_COLUMNS, SUSPENDED_SQL, UNFINISHED_SQL, RunFilter, list_columns, parse_cursor


@dataclass(frozen=True)
class Dialect:
    param: Callable[[int], str]  # the n-th parameter (from 1)
    any_of: Callable[[int, int], str]  # "= ANY($n)" or "IN (?, ?)" for a list parameter of that length
    steps_summary: str  # a JSON array of the steps' {name, status}, from `runs.steps`
    size: str  # a column's size in bytes, `{}` standing for the column

    def sql(self, template: str, *counts: int) -> str:
        """`template` with `{0}`, `{1}`... as this dialect's parameters (a list parameter
        counts as one: give its length in `counts`, in order, for `{in0}`, `{in1}`...)."""
        return _render(self, template, counts)


@functools.lru_cache(maxsize=512)  # the same few statements, read on every store call
def _render(dialect: Dialect, template: str, counts: tuple[int, ...]) -> str:
    marks = [dialect.param(i) for i in range(1, 33)]
    lists = {f"in{i}": dialect.any_of(i + 1, n) for i, n in enumerate(counts)}
    return template.format(*marks, **lists)


SQLITE = Dialect(
    param=lambda n: "?",
    any_of=lambda n, count: "IN (" + ", ".join("?" * count) + ")",
    steps_summary="(SELECT json_group_array(json_object('name', json_extract(value, '$.name'), 'status',"
    " json_extract(value, '$.status'))) FROM json_each(runs.steps))",
    size="length(CAST({} AS BLOB))",
)
POSTGRES = Dialect(
    param=lambda n: f"${n}",
    any_of=lambda n, count: f"= ANY(${n}::text[])",
    steps_summary="(SELECT coalesce(json_agg(json_build_object('name', e->>'name', 'status', e->>'status')"
    " ORDER BY i), '[]')::text FROM jsonb_array_elements(runs.steps::jsonb) WITH ORDINALITY AS t(e, i))",
    size="octet_length({})",
)

SELECT_RUN = "SELECT " + ", ".join(RUN_COLUMNS) + " FROM runs"
GET_RUN = SELECT_RUN + " WHERE run_id = {0}"
LAST_SEQ = "SELECT last_seq FROM runs WHERE run_id = {0}"
READ_EVENTS = "SELECT seq, event, frame FROM events WHERE run_id = {0} AND seq > {1} ORDER BY seq LIMIT {2}"
UNFINISHED_RUNS = SELECT_RUN + f" WHERE status IN ({UNFINISHED_SQL}) ORDER BY n"
DUE_WAITS = (
    f"SELECT run_id, wake_at FROM runs WHERE wake_at IS NOT NULL AND status IN ({SUSPENDED_SQL})"
    " AND workflow {in0} ORDER BY wake_at LIMIT {1}"
)
PRUNABLE = (
    f"SELECT run_id FROM runs WHERE status IN ({FINISHED_SQL}) AND finished_at < {{0}} ORDER BY finished_at LIMIT {{1}}"
)


def list_runs_query(dialect: Dialect, which: RunFilter, limit: int, before: str | None) -> tuple[str, list[Any]]:
    """A `list_runs` page's query and parameters (one row more than `limit`: is there more?).
    A `before` this server did not give is a ValueError."""
    where: list[str] = []
    params: list[Any] = []
    for condition, value in (
        ("workflow = {}", which.workflow),
        ("status = {}", which.status),
        ("started_by = {}", which.owner),
        ("n < {}", parse_cursor(before) if before is not None else None),
    ):
        if value is not None:
            params.append(value)
            where.append(condition.format(dialect.param(len(params))))
    if which.run_ids is not None:
        ids = sorted(which.run_ids)
        where.append("run_id " + dialect.any_of(len(params) + 1, len(ids)))
        if dialect is SQLITE:
            params.extend(ids)
        else:
            params.append(ids)
    sql = f"SELECT {list_columns(dialect.steps_summary, dialect.size)} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    params.append(limit + 1)
    return sql + f" ORDER BY n DESC LIMIT {dialect.param(len(params))}", params
