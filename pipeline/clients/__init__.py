"""Clients for the outside HTTP APIs the pipeline depends on (Datura tweets, Chutes LLM).

Both share one retry/timeout helper and one error hierarchy (`pipeline.clients.http`),
so a stage handles "retry later" versus "give up" the same way for either.
"""

from pipeline.clients.chutes import ChatCompletion, ChatMessage, ChutesClient
from pipeline.clients.datura import DaturaClient, MemoryTweetCache, Tweet, TweetCache, TweetSearch
from pipeline.clients.http import (
    AuthError,
    ExternalAPIError,
    InvalidResponseError,
    NotConfiguredError,
    QuotaError,
    RetryPolicy,
    make_session,
)

__all__ = [
    "AuthError",
    "ChatCompletion",
    "ChatMessage",
    "ChutesClient",
    "DaturaClient",
    "ExternalAPIError",
    "InvalidResponseError",
    "MemoryTweetCache",
    "NotConfiguredError",
    "QuotaError",
    "RetryPolicy",
    "Tweet",
    "TweetCache",
    "TweetSearch",
    "make_session",
]
