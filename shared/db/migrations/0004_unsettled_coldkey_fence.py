"""The database fence of the coldkey lane: at most one unsettled stake action per coldkey.

A partial unique index on stake_actions(coldkey) over the statuses whose extrinsic may
still be pending (`submitting`, `unknown`): inserting a second such row for one coldkey
fails, whatever happened to the Redis lease, and the stake stage reads that as "wait,
nothing sent". PostgreSQL and SQLite both support partial indexes; rows without a coldkey
(NULL) never conflict. Hand-written (Tortoise's UniqueConstraint with a condition is
PostgreSQL-only), so the model state is unchanged and `makemigrations` does not see it.

If a database already holds two unsettled rows of one coldkey, the migration stops and
names them: settle all but one with `python -m pipeline settle TRADE_ID ...` (it needs no
migration) and migrate again.
"""

from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

INDEX = "uidx_stake_actions_coldkey_unsettled"
UNSETTLED = "('submitting', 'unknown')"


async def _refuse_duplicates(apps: Any, schema_editor: Any) -> None:
    if schema_editor.collect_sql:
        return
    _, rows = await schema_editor.client.execute_query(
        "SELECT coldkey, COUNT(*) AS n FROM stake_actions "  # noqa: S608
        f"WHERE coldkey IS NOT NULL AND status IN {UNSETTLED} GROUP BY coldkey HAVING COUNT(*) > 1"
    )
    if rows:
        found = ", ".join(f"{row['coldkey']} ({row['n']} rows)" for row in rows)
        raise RuntimeError(
            f"more than one unsettled stake action per coldkey: {found}; settle all but one "
            "with `python -m pipeline settle TRADE_ID --status succeeded|failed --reason TEXT "
            "--force`, then migrate again"
        )


class Migration(migrations.Migration):
    dependencies = [("models", "0003_trading_safety")]

    initial = False

    operations = [
        ops.RunPython(_refuse_duplicates, ops.RunPython.noop),
        ops.RunSQL(
            f'CREATE UNIQUE INDEX IF NOT EXISTS "{INDEX}" ON "stake_actions" ("coldkey") '
            f'WHERE "status" IN {UNSETTLED}',
            reverse_sql=f'DROP INDEX IF EXISTS "{INDEX}"',
        ),
    ]
