"""Every fixed value the pipeline's series use: bounded label values, buckets, the port.

Label values are listed up front so each series can be pre-labelled (a scrape shows 0, not
nothing, before the first event) and no label ever carries user data.
"""

from __future__ import annotations

from typing import Final

from shared.streams import STREAMS

DEFAULT_PORT: Final = 9108  # METRICS_PORT

# Handlers call outside APIs and the chain: milliseconds to minutes (a stake submit is bounded
# by STAKE_SUBMIT_TIMEOUT_S, 120 s by default).
STAGE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
API_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)

STAGE_OUTCOMES: Final = ("done", "retry", "failed", "timeout", "dead_lettered")
DEAD_LETTER_REASONS: Final = ("max_deliveries", "dropped", "poison")
DELIVERY_VIA: Final = ("read", "reclaim")
WORKER_REDIS_OPS: Final = ("read", "reclaim", "ack", "dead_letter")
API_SERVICES: Final = ("datura", "chutes")
API_OUTCOMES: Final = (
    "ok",
    "timeout",
    "connection_error",
    "http_429",
    "http_4xx",
    "http_5xx",
    "http_3xx",
    "http_other",
    "invalid_response",
)

# Every status a stake_actions row can hold; submitted extrinsics are the last five
# (`included`: in a finalized block, outcome unreadable, waiting for an operator).
STAKE_STATUSES: Final = (
    "skipped",
    "rejected",
    "dry_run",
    "submitting",
    "unknown",
    "included",
    "succeeded",
    "failed",
)
EXTRINSIC_OUTCOMES: Final = ("submitting", "unknown", "included", "succeeded", "failed")
UNSETTLED_STATUSES: Final = ("submitting", "unknown")

# Why a stake decision was "skipped", as a bounded label: (label, SQL LIKE pattern on the
# stored reason). First match wins; anything else is "other". The patterns follow the reasons
# written by pipeline/stages/{decision,risk,stake}.py.
SKIP_REASONS: Final[tuple[tuple[str, str], ...]] = (
    ("no_score", "no usable sentiment score%"),
    ("neutral", "neutral sentiment%"),
    ("zero_amount", "score % sizes to 0 TAO%"),
    ("dead_band", "score % is inside the dead band%"),
    ("not_allowlisted", "netuid % is not in TRADE_NETUIDS%"),
    ("stale", "stale:%"),
    ("cooldown", "cooldown:%"),
    ("daily_limit", "daily limit:%"),
    ("position_cap", "position cap:%"),
    ("staking_disabled", "staking disabled%"),
    ("insufficient_balance", "insufficient free balance%"),
    ("nothing_to_unstake", "nothing to unstake%"),
    ("no_price", "no usable price%"),
    ("no_wallet", "%: nothing submitted"),
)
SKIP_REASON_LABELS: Final = (*(label for label, _ in SKIP_REASONS), "other")

# Streams the stage groups read, and every stream whose length is worth watching.
GROUP_STREAMS: Final = tuple((stream, group) for stream, group in STREAMS if group is not None)
ALL_STREAMS: Final = tuple(stream for stream, _ in STREAMS)

SAMPLE_SOURCES: Final = ("streams", "database", "schedule")
JOB_OUTCOMES: Final = ("ok", "failed", "timeout", "cancelled")
