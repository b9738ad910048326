from __future__ import annotations

from pydantic import BaseModel, Field


class StreamGroupOut(BaseModel):
    stream: str
    length: int = Field(description="Entries kept in the stream (capped with MAXLEN ~).")
    last_id: str = Field(description="The last entry id generated (`-` for none).")
    group: str | None = Field(
        description="The stage's consumer group; null for a stream no stage reads."
    )
    consumers: int | None
    pending: int | None = Field(description="Delivered to the group and not yet acknowledged.")
    lag: int | None = Field(
        description="Entries not yet delivered to the group (null when Redis cannot tell)."
    )
    oldest_pending_idle_s: float | None = Field(
        description="Seconds since the oldest pending entry was last delivered."
    )


class StreamsOut(BaseModel):
    streams: list[StreamGroupOut] = Field(description="One row per (stream, group).")
    dead_letters: int = Field(description="Entries in stream:dead_letter.")
