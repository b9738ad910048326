"""Sentiment of a subnet's tweets: LLM prompt and reply parsing, VADER fallback, the scorer.

The stage worker needs only `SentimentScorer` and `SentimentResult`; the other
modules are public so the parsing rules and the prompt can be tested and reused.
"""

from pipeline.sentiment.parse import UnusableReply, Verdict, parse_reply, parse_score, read_reply
from pipeline.sentiment.prompt import build_messages
from pipeline.sentiment.scorer import Backend, SentimentResult, SentimentScorer
from pipeline.sentiment.vader import VaderScorer, get_vader

__all__ = [
    "Backend",
    "SentimentResult",
    "SentimentScorer",
    "UnusableReply",
    "VaderScorer",
    "Verdict",
    "build_messages",
    "get_vader",
    "parse_reply",
    "parse_score",
    "read_reply",
]
