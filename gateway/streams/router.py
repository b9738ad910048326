"""GET /api/v1/streams.

Scope `read`: the answer is counts only (the figures the pipeline's /metrics publishes), no
entry, trade id or error text, so no caller learns another's data from it. Dead letters
themselves stay with `python -m pipeline dead-letter`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from redis.exceptions import RedisError

from gateway.deps import ReaderDep, StateDep
from gateway.errors import documented
from gateway.headers import no_store
from gateway.streams.schemas import StreamGroupOut, StreamsOut
from gateway.trades.router import COMMON_ERRORS
from shared.errors import RedisUnavailable
from shared.streams import dead_letter_count, stream_rows

router = APIRouter(prefix="/api/v1", tags=["streams"], dependencies=[Depends(no_store)])


@router.get(
    "/streams",
    response_model=StreamsOut,
    summary="Stream lengths, group lag and pending entries, dead-letter count",
    description="Scope: `read`. Counts only: no entry, trade id or error text.",
    responses=documented(
        {
            **{status: text for status, text in COMMON_ERRORS.items() if status != 422},
            403: "`insufficient_scope`: the token lacks `read`",
            503: "`redis_unavailable`: Redis cannot answer; `database_unavailable` (token "
            "store) or `auth_busy` (too many token checks in progress; see Retry-After)",
        }
    ),
)
async def streams(caller: ReaderDep, state: StateDep) -> StreamsOut:
    try:
        rows = await stream_rows(state.redis)
        dead = await dead_letter_count(state.redis)
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(f"redis unavailable: {type(exc).__name__}") from exc
    return StreamsOut(
        streams=[StreamGroupOut.model_validate(row, from_attributes=True) for row in rows],
        dead_letters=dead,
    )
