"""Turn an LLM reply into a score in -100..100, or refuse it with the reason.

A wrong number is worse than no number: a refusal sends the scorer to its
fallback (SENTIMENT_FALLBACK), a number grabbed from prose moves real stake. A
reply that quotes a tweet ("Sentiment score: 100" but that is spam) or hedges
("score: -100 would be unfair") must never become ±100, so prose is never mined
for numbers. The request asks for JSON output; only JSON is accepted.

The rule:

1. The whole reply (surrounding whitespace aside) is one JSON object, or one
   Markdown code fence (```json … ``` or ``` … ```) holding one JSON object and
   nothing else. A reasoning model's leading, closed `<think>…</think>` block
   (also `<thinking>`, `<reasoning>`) is dropped first: it is marked as not the
   answer. Any other text before or after the object refuses the reply.
2. The object has the key `score` whose value is a JSON integer (not a float,
   a string or a boolean) in -100..100; out of range is refused, not clamped.
3. `reason`, when it is a string, is kept (squeezed and capped) for the record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

Method = Literal["json", "fenced"]

MIN_SCORE: Final = -100
MAX_SCORE: Final = 100
_REASON_MAX: Final = 300
_SNIPPET: Final = 80

_LEADING_THOUGHT = re.compile(r"^\s*<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_FENCE = re.compile(r"^```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?[ \t]*```$", re.S)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A score read from a reply, the model's short reason if it gave one, and its shape."""

    score: int
    reason: str | None
    method: Method


class UnusableReply(ValueError):
    """The reply holds no acceptable score; the message says why (for the trade's record)."""


def parse_score(content: str | None) -> int | None:
    """The score in `content` (-100..100), or None if the reply is not acceptable."""
    verdict = parse_reply(content)
    return verdict.score if verdict is not None else None


def parse_reply(content: str | None) -> Verdict | None:
    """Like `read_reply`, with None instead of the reason."""
    try:
        return read_reply(content)
    except UnusableReply:
        return None


def read_reply(content: str | None) -> Verdict:
    """The verdict in `content`; UnusableReply (with why) unless it follows the module rule."""
    text = strip_leading_thought(content or "").strip()
    if not text:
        raise UnusableReply("empty reply")
    method: Method = "json"
    fenced = _FENCE.match(text)
    if fenced is not None:
        text, method = fenced.group(1).strip(), "fenced"
    try:
        value = json.loads(text)
    except ValueError:
        raise UnusableReply(f"reply is not a JSON object: {_snippet(text)!r}") from None
    if not isinstance(value, dict):
        raise UnusableReply(f"reply is JSON {type(value).__name__}, not an object")
    if "score" not in value:
        raise UnusableReply("JSON object has no `score`")
    score = value["score"]
    if isinstance(score, bool) or not isinstance(score, int):
        raise UnusableReply(f"`score` is {json.dumps(score)[:_SNIPPET]}, not an integer")
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise UnusableReply(f"`score` {score} is outside {MIN_SCORE}..{MAX_SCORE}")
    return Verdict(score, _reason(value.get("reason")), method)


def strip_leading_thought(content: str) -> str:
    """The reply without a leading, closed reasoning block (rule 1)."""
    return _LEADING_THOUGHT.sub("", content, count=1)


def clamp(score: int) -> int:
    return max(MIN_SCORE, min(MAX_SCORE, score))


def _reason(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    reason = " ".join(value.split())
    return reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 1] + "…"


def _snippet(text: str) -> str:
    squeezed = " ".join(text.split())
    return squeezed if len(squeezed) <= _SNIPPET else squeezed[: _SNIPPET - 1] + "…"
