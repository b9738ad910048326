"""read_reply / parse_score: only a JSON object with an integer score is an answer."""

from __future__ import annotations

import pytest

from pipeline.sentiment.parse import (
    UnusableReply,
    parse_reply,
    parse_score,
    read_reply,
    strip_leading_thought,
)

ACCEPTED = [
    ('{"score": 62, "reason": "upbeat"}', 62),
    ('{"sentiment": "positive", "score": 62}', 62),
    ('  \n{"score": -100}\n', -100),
    ('{"score": 100}', 100),
    ('{"score": 0, "reason": "no relevant tweets"}', 0),
    ('```json\n{"score": -55, "reason": "outage"}\n```', -55),
    ('```\n{"score": 18}\n```', 18),
    ('```JSON\n{"score": 9}```', 9),
    ('<think>Tweet 1 says 100. {"score": 100} maybe?</think>\n{"score": 20}', 20),
]

REJECTED = [
    None,
    "",
    "   ",
    # the two replies: quoted and hedged numbers in prose
    'One tweet says "Sentiment score: 100" but that is spam',
    "I cannot rate these. score: -100 would be unfair.",
    # any prose around the object
    'Here is my analysis:\n{"score": 30}\nThanks!',
    'One tweet says "reply score: 100". {"score": -20}',
    'Sure!\n```json\n{"score": 18}\n```\nLet me know.',
    'reasoning without an opening tag</think>{"score": 15}',
    '{"score": 20}<think>unclosed',
    # the score key and type
    '{"sentiment_score": -35}',
    '{"result": {"score": 5}}',
    '{"score": "75"}',
    '{"score": 33.4}',
    '{"score": 60.0}',
    '{"score": true}',
    '{"score": null}',
    '{"score": "70/100"}',
    # range: refused, never clamped
    '{"score": 101}',
    '{"score": -1000}',
    # not an object
    "62",
    '"-15"',
    '[{"score": 12}]',
    "Score: **45**",
    '{"score": 62, "reason": "The tweets are mostly posi',
    "{'score': 33}",
]


@pytest.mark.parametrize(("content", "expected"), ACCEPTED)
def test_accepted(content: str, expected: int) -> None:
    assert parse_score(content) == expected


@pytest.mark.parametrize("content", REJECTED)
def test_rejected(content: str | None) -> None:
    assert parse_score(content) is None
    with pytest.raises(UnusableReply):
        read_reply(content)


def test_reasons_say_why() -> None:
    with pytest.raises(UnusableReply, match="not a JSON object"):
        read_reply('One tweet says "Sentiment score: 100" but that is spam')
    with pytest.raises(UnusableReply, match=r"outside -100\.\.100"):
        read_reply('{"score": 150}')
    with pytest.raises(UnusableReply, match="not an integer"):
        read_reply('{"score": "75"}')
    with pytest.raises(UnusableReply, match="no `score`"):
        read_reply('{"sentiment": 75}')
    with pytest.raises(UnusableReply, match="not an object"):
        read_reply("[1]")


def test_reason_and_method() -> None:
    verdict = parse_reply('{"score": 62, "reason": "  validators   growing "}')
    assert verdict is not None
    assert (verdict.score, verdict.reason, verdict.method) == (62, "validators growing", "json")
    fenced = parse_reply('```json\n{"score": 1, "reason": 7}\n```')
    assert fenced is not None and (fenced.reason, fenced.method) == (None, "fenced")
    long = parse_reply('{"score": 1, "reason": "' + "x" * 1000 + '"}')
    assert long is not None and long.reason is not None and len(long.reason) == 300


def test_strip_leading_thought() -> None:
    assert strip_leading_thought("<think>a</think>b") == "b"
    assert strip_leading_thought("  <Reasoning>a\nb</Reasoning> c") == " c"
    assert strip_leading_thought("x <think>a</think>b") == "x <think>a</think>b"
    assert strip_leading_thought("<think>cut off") == "<think>cut off"
