"""Every stream, group and Redis key prefix in one place (see ../shared/design.md, Events)."""

from typing import Final

STREAM_DIVIDEND_REQUESTED: Final = "stream:dividend_requested"
STREAM_TWEETS_FETCHED: Final = "stream:tweets_fetched"
STREAM_SENTIMENT_SCORED: Final = "stream:sentiment_scored"
STREAM_STAKE_EXECUTED: Final = "stream:stake_executed"
STREAM_DEAD_LETTER: Final = "stream:dead_letter"

GROUP_TWEETS: Final = "tweets"
GROUP_SENTIMENT: Final = "sentiment"
GROUP_STAKE: Final = "stake"

# Which stream each event type is published to.
EVENT_STREAMS: Final[dict[str, str]] = {
    "dividend_requested": STREAM_DIVIDEND_REQUESTED,
    "tweets_fetched": STREAM_TWEETS_FETCHED,
    "sentiment_scored": STREAM_SENTIMENT_SCORED,
    "stake_executed": STREAM_STAKE_EXECUTED,
    "dead_letter": STREAM_DEAD_LETTER,
}

KEY_DIVIDENDS_CACHE: Final = "cache:dividends:"
KEY_TRADE_COOLDOWN: Final = "trade:cooldown:"
KEY_RATE_LIMIT: Final = "ratelimit:"
KEY_TRADED_PAIRS: Final = "trade:pairs"
KEY_WORKER_HEALTH: Final = "health:worker:"
KEY_TWEETS_CACHE: Final = "cache:tweets:"
KEY_SCORE_CACHE: Final = "cache:sentiment:"
KEY_COLDKEY_LOCK: Final = "lock:coldkey:"
KEY_SCHEDULE_RUNS: Final = "schedule:runs"
KEY_SCHEDULE_LAST: Final = "schedule:last_run"
# Beat increments it when a run fails (the pipeline exposes it as taostake_schedule_errors_total).
KEY_SCHEDULE_ERRORS: Final = "schedule:errors"

RATE_LIMIT_WINDOW_S: Final = 60
EVENT_VERSION: Final = 1
