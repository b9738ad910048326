"""Multi-row INSERT in one statement and one round trip.

Tortoise's `bulk_create` runs an `executemany` inside a transaction on PostgreSQL: BEGIN,
one execution per row, COMMIT. A stage writing a batch of records wants one statement,
`INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING …`, which tells it which rows
went in (a row another consumer inserted first does not). Values go through each field's own
`to_db_value`, so they are stored exactly as Tortoise stores them (auto_now_add times, JSON
encoders, SQLite's datetimes).
"""

from __future__ import annotations

from collections.abc import Sequence
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


async def insert_many(rows: Sequence[M], *, returning: str | None = None) -> list[Any]:
    """INSERT `rows` (all of one model) in one statement; a row whose unique key is taken is
    skipped. Returns the `returning` column of the rows that went in ([] without it)."""
    if not rows:
        return []
    model = type(rows[0])
    meta = model._meta
    db = meta.db
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
    postgres = db.capabilities.dialect == "postgres"
    width = len(names)
    groups = []
    for i in range(len(rows)):
        marks = (f"${i * width + j + 1}" if postgres else "?" for j in range(width))
        groups.append(f"({', '.join(marks)})")
    columns = ", ".join(f'"{meta.fields_db_projection[name]}"' for name in names)
    # Names come from the model's metadata, never from input; every value is a bound parameter.
    sql = (
        f'INSERT INTO "{meta.db_table}" ({columns}) VALUES {", ".join(groups)} '  # noqa: S608
        "ON CONFLICT DO NOTHING"
    )
    if returning is None:
        await db.execute_query(sql, values)
        return []
    column = meta.fields_db_projection[returning]
    inserted = await db.execute_query_dict(f'{sql} RETURNING "{column}"', values)
    return list(dict.fromkeys(row[column] for row in inserted))
