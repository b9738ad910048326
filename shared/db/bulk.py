"""Multi-row INSERT in one statement and one round trip.

Tortoise's `bulk_create` runs an `executemany` inside a transaction on PostgreSQL: BEGIN,
one execution per row, COMMIT. A stage writing a batch of records wants one statement,
`INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING …`, which tells it which rows
went in (a row another consumer inserted first does not). Values go through each field's own
`to_db_value`, so they are stored exactly as Tortoise stores them (auto_now_add times, JSON
encoders, SQLite's datetimes).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, TypeVar

from tortoise.models import Model

M = TypeVar("M", bound=Model)
T = TypeVar("T")


def padded(items: Sequence[T]) -> list[T]:
    """`items` with the last one repeated up to the next power of two.

    PostgreSQL statements are prepared and cached per connection by their text, and a list
    of N parameters (`IN ($1, …, $N)`, N rows of VALUES) makes a new text for every N: padded,
    a batch of any size uses one of a few statements. A repeated id in `IN` or a repeated row
    under ON CONFLICT DO NOTHING changes nothing."""
    size = 1
    while size < len(items):
        size *= 2
    return [*items, *[items[-1]] * (size - len(items))] if items else []


def insert_sql(rows: Sequence[Model], first: int, postgres: bool) -> tuple[str, list[Any]]:
    """`INSERT … VALUES … ON CONFLICT DO NOTHING` of `rows` (one model), its parameters
    numbered from `first` + 1 on PostgreSQL."""
    meta = type(rows[0])._meta
    names = [
        name
        for name in meta.fields_db_projection
        if not (name == meta.pk_attr and meta.fields_map[name].generated)
    ]
    fields = [meta.fields_map[name] for name in names]
    if any(field.unique or field.pk for field in fields):
        rows = padded(rows)  # a repeated row hits its own unique key: inserted once
    values: list[Any] = []
    for row in rows:
        values.extend(
            field.to_db_value(getattr(row, name), row)
            for name, field in zip(names, fields, strict=True)
        )
    width = len(names)
    groups = []
    for i in range(len(rows)):
        marks = (f"${first + i * width + j + 1}" if postgres else "?" for j in range(width))
        groups.append(f"({', '.join(marks)})")
    columns = ", ".join(f'"{meta.fields_db_projection[name]}"' for name in names)
    # Names come from the model's metadata, never from input; every value is a bound parameter.
    sql = (
        f'INSERT INTO "{meta.db_table}" ({columns}) VALUES {", ".join(groups)} '  # noqa: S608
        "ON CONFLICT DO NOTHING"
    )
    return sql, values


async def insert_many(rows: Sequence[M], *, returning: str | None = None) -> list[Any]:
    """INSERT `rows` (all of one model) in one statement; a row whose unique key is taken is
    skipped. Returns the `returning` column of the rows that went in ([] without it)."""
    if not rows:
        return []
    meta = type(rows[0])._meta
    db = meta.db
    sql, values = insert_sql(rows, 0, db.capabilities.dialect == "postgres")
    if returning is None:
        await db.execute_query(sql, values)
        return []
    column = meta.fields_db_projection[returning]
    inserted = await db.execute_query_dict(f'{sql} RETURNING "{column}"', values)
    return list(dict.fromkeys(row[column] for row in inserted))


def _one_of(db_name: str, keys: Collection[str], params: list[Any], postgres: bool) -> str:
    """`"db_name"` is one of `keys`, its parameters appended to `params`: `= ANY($n)` on
    PostgreSQL, a padded IN on SQLite (a text that does not change with len(keys))."""
    if postgres:
        params.append(list(keys))
        return f'"{db_name}" = ANY(${len(params)}::text[])'
    listed = padded(sorted(keys))
    params.extend(listed)
    return f'"{db_name}" IN ({", ".join("?" for _ in listed)})'


async def select_by(model: type[M], column: str, keys: Collection[str]) -> list[M]:
    """The rows of `model` whose `column` is one of `keys`, in one SELECT whose text does not
    depend on how many keys there are (`= ANY($1)` on PostgreSQL, a padded IN on SQLite)."""
    if not keys:
        return []
    meta = model._meta
    db = meta.db
    params: list[Any] = []
    where = _one_of(
        meta.fields_db_projection[column], keys, params, db.capabilities.dialect == "postgres"
    )
    sql = f'SELECT * FROM "{meta.db_table}" WHERE {where}'  # noqa: S608
    rows = await db.execute_query_dict(sql, params)
    return [model._init_from_db(**row) for row in rows]


async def update_by(
    model: type[Model],
    column: str,
    keys: Collection[str],
    values: dict[str, Any],
    *,
    where: tuple[str, Collection[str]] | None = None,
) -> None:
    """UPDATE `model` SET `values` for the rows whose `column` is one of `keys` (and, with
    `where` = (other column, texts), whose other column is one of those), in one statement of
    a stable text (see `select_by`); values go through each field's `to_db_value`."""
    if not keys:
        return
    meta = model._meta
    db = meta.db
    postgres = db.capabilities.dialect == "postgres"
    sets = []
    params: list[Any] = []
    for field_name, value in values.items():
        field = meta.fields_map[field_name]
        params.append(field.to_db_value(value, model))
        mark = f"${len(params)}" if postgres else "?"
        sets.append(f'"{meta.fields_db_projection[field_name]}" = {mark}')
    conditions = [
        _one_of(meta.fields_db_projection[name], allowed, params, postgres)
        for name, allowed in [(column, keys), *([where] if where is not None else [])]
    ]
    sql = f'UPDATE "{meta.db_table}" SET {", ".join(sets)} WHERE {" AND ".join(conditions)}'  # noqa: S608
    await db.execute_query(sql, params)
