"""Turn an LLM reply into a score in -100..100, or None when no score can be identified.

A wrong number is worse than no number: None sends the scorer to its fallback,
a number grabbed from prose moves real stake. So the rules are strict about
*where* a number may come from and tolerant only about how it is written.

Rules, in order:

1. Thoughts are not answers. `<think>…</think>` (also `<thinking>`, `<reasoning>`)
   blocks are removed; a lone closing tag drops everything before it (templates
   that open the block themselves); an unclosed opening tag drops everything after
   it (the reply was cut off mid-thought). What remains is the answer text.
2. JSON first. Candidates are taken in this order, and the first kind that yields
   a score wins:
   a. the whole answer as JSON (an object, a one-object array, or a bare number
      or numeric string when that is the entire answer);
   b. the contents of Markdown code fences (```json … ``` or ``` … ```);
   c. every JSON object embedded in prose.
   Within one kind, candidates that disagree make the reply ambiguous: None.
3. In an object, the score is the first of the keys `score`, `sentiment_score`,
   `sentimentScore`, `overall_score`, `sentiment` (matched case-insensitively,
   `-`/space treated as `_`) whose value is a number, or a numeric string such
   as "62", "+62", "-40.5", "62/100". Labels like `"sentiment": "positive"` are
   not numbers and are skipped. One level of nesting is searched when the top
   level has no score key (`{"result": {"score": 5}}`).
4. Only when no JSON candidate yields a score, a keyed score in plain text is
   accepted: `score: 62`, `"score": -40` (e.g. JSON cut off by max_tokens),
   `Sentiment score is 35`, `score of 70/100`. All such mentions must agree.
   A bare number in prose ("3 of 5 tweets…", "netuid 18") is never a score.
5. Booleans, NaN and infinities are not numbers. Floats are rounded. Values
   outside -100..100 are clamped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

Method = Literal["json", "fenced", "embedded", "text"]

SCORE_KEYS: Final = ("score", "sentiment_score", "sentimentscore", "overall_score", "sentiment")
REASON_KEYS: Final = ("reason", "explanation", "rationale", "justification", "summary")
MIN_SCORE: Final = -100
MAX_SCORE: Final = 100
_REASON_MAX: Final = 300

_THOUGHT_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_THOUGHT_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.I)
_THOUGHT_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.I)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n?(.*?)```", re.S)
_NUMERIC = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(?:/\s*100)?\s*$")
_KEYED = re.compile(
    r"""(?<![\w])(?:sentiment[ _-]?)?score\b["'*_]*\s*(?::|=|\bis\b|\bof\b)\s*["'*_]*
        ([+-]?\d+(?:\.\d+)?)(?!\d|\.\d)(\s*/\s*\d+)?""",
    re.I | re.X,
)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Verdict:
    """A score read from a reply, the model's short reason if it gave one, and how it was found."""

    score: int
    reason: str | None
    method: Method


def parse_score(content: str | None) -> int | None:
    """The score in `content` (-100..100), or None if none is identifiable. See module rules."""
    verdict = parse_reply(content)
    return verdict.score if verdict is not None else None


def parse_reply(content: str | None) -> Verdict | None:
    """Like `parse_score`, with the reason and the rule that matched."""
    if not content:
        return None
    text = strip_thoughts(content).strip()
    if not text:
        return None

    whole = _loads(text)
    if whole is not _NOTHING:
        found = _from_value(whole, top_level=True)
        if found is not None:
            return Verdict(found[0], found[1], "json")

    kinds: tuple[tuple[Method, list[Any]], ...] = (
        ("fenced", [_loads(block) for block in _FENCE.findall(text)]),
        ("embedded", _embedded_objects(text)),
    )
    for method, candidates in kinds:
        results = [r for r in (_from_value(c) for c in candidates) if r is not None]
        if results:
            if len({score for score, _ in results}) > 1:
                return None
            score, reason = results[0]
            return Verdict(score, reason, method)

    return _from_text(text)


def strip_thoughts(content: str) -> str:
    """The reply without reasoning blocks (rule 1)."""
    text = _THOUGHT_BLOCK.sub(" ", content)
    closes = list(_THOUGHT_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THOUGHT_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text


class _Nothing:
    """Sentinel: not JSON at all (distinct from a JSON `null`)."""


_NOTHING: Final = _Nothing()


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOTHING


def _embedded_objects(text: str) -> list[Any]:
    """Every top-level JSON object inside `text` (nested ones come with their parent)."""
    found: list[Any] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = _DECODER.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        found.append(value)
        index = text.find("{", end)
    return found


def _from_value(value: Any, *, top_level: bool = False) -> tuple[int, str | None] | None:
    if isinstance(value, dict):
        return _from_object(value, depth=0)
    if isinstance(value, list):
        dicts = [item for item in value if isinstance(item, dict)]
        return _from_object(dicts[0], depth=0) if len(value) == 1 and dicts else None
    if top_level:
        number = _number(value)
        return (number, None) if number is not None else None
    return None


def _from_object(obj: dict[Any, Any], *, depth: int) -> tuple[int, str | None] | None:
    keys = {_norm_key(k): v for k, v in obj.items() if isinstance(k, str)}
    for key in SCORE_KEYS:
        if key in keys:
            number = _number(keys[key])
            if number is not None:
                return number, _reason(keys)
    if depth == 0:
        for nested in keys.values():
            if isinstance(nested, dict):
                found = _from_object(nested, depth=1)
                if found is not None:
                    return found[0], found[1] or _reason(keys)
    return None


def _norm_key(key: str) -> str:
    return key.strip().replace("-", "_").replace(" ", "_").lower()


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _NUMERIC.match(value)
        if match is None:
            return None
        number = float(match.group(1))
    else:
        return None
    if not math.isfinite(number):
        return None
    return clamp(round(number))


def clamp(score: int) -> int:
    return max(MIN_SCORE, min(MAX_SCORE, score))


def _reason(keys: dict[str, Any]) -> str | None:
    for key in REASON_KEYS:
        value = keys.get(key)
        if isinstance(value, str) and value.strip():
            reason = " ".join(value.split())
            return reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 1] + "…"
    return None


def _from_text(text: str) -> Verdict | None:
    scores: set[int] = set()
    for match in _KEYED.finditer(text):
        denominator = match.group(2)
        if denominator is not None and int(denominator.strip(" /")) != MAX_SCORE:
            continue
        number = float(match.group(1))
        if math.isfinite(number):
            scores.add(clamp(round(number)))
    if len(scores) != 1:
        return None
    return Verdict(scores.pop(), None, "text")
