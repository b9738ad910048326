"""VADER fallback: crypto lexicon, aggregation, range, thread offload."""

from __future__ import annotations

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from pipeline.sentiment.vader import CRYPTO_LEXICON, VaderScorer, get_vader
from shared.tweets import Tweet

POSITIVE = [
    "Netuid 18 keeps shipping: new validators online and emissions climbing. Bullish.",
    "sn18 is going to the moon, hodl",
    "LFG, best subnet in bittensor, wagmi",
]
NEGATIVE = [
    "total rug, devs dumped, rekt",
    "bearish on this subnet, FUD everywhere and another outage",
    "Not convinced by Netuid 18 after the last outage, miners are leaving.",
]


@pytest.fixture(scope="module")
def vader() -> VaderScorer:
    return VaderScorer()


@pytest.mark.parametrize(
    ("word", "sign"),
    [
        ("bullish", 1),
        ("moon", 1),
        ("hodl", 1),
        ("pump", 1),
        ("bearish", -1),
        ("rug", -1),
        ("rekt", -1),
        ("fud", -1),
        ("dump", -1),
    ],
)
def test_crypto_words_carry_sentiment(vader: VaderScorer, word: str, sign: int) -> None:
    text = f"this subnet is {word}"
    assert vader.compound(text) * sign > 0.2
    assert word in CRYPTO_LEXICON


def test_lexicon_changes_stock_vader(vader: VaderScorer) -> None:
    text = "Bullish on netuid 18, to the moon"
    assert SentimentIntensityAnalyzer().polarity_scores(text)["compound"] == 0.0
    assert vader.compound(text) > 0.5


def test_positive_and_negative_batches(vader: VaderScorer) -> None:
    assert vader.score_texts(POSITIVE) > 40
    assert vader.score_texts(NEGATIVE) < -40
    mixed = vader.score_texts(POSITIVE + NEGATIVE)
    assert -40 < mixed < 40


def test_neutral_and_empty(vader: VaderScorer) -> None:
    assert vader.score_texts([]) == 0
    assert vader.score_texts(["", "   "]) == 0
    assert vader.score_texts(["Netuid 18 update at 10:00 UTC"]) == 0


def test_scores_are_ints_in_range(vader: VaderScorer) -> None:
    for texts in (POSITIVE, NEGATIVE, ["good " * 50], ["horrible scam " * 50]):
        score = vader.score_texts(texts)
        assert isinstance(score, int)
        assert -100 <= score <= 100


def test_engagement_weights(vader: VaderScorer) -> None:
    liked_positive = [
        Tweet(id="1", text=POSITIVE[0], like_count=5000, retweet_count=900),
        Tweet(id="2", text=NEGATIVE[0]),
    ]
    liked_negative = [
        Tweet(id="1", text=POSITIVE[0]),
        Tweet(id="2", text=NEGATIVE[0], like_count=5000, retweet_count=900),
    ]
    assert vader.score_tweets(liked_positive) > 0 > vader.score_tweets(liked_negative)
    with pytest.raises(ValueError, match="differ in length"):
        vader.score_texts(["a"], [1.0, 2.0])


def test_extra_lexicon(vader: VaderScorer) -> None:
    custom = VaderScorer({"Zorbly": 3.0})
    assert custom.compound("zorbly") > 0.5
    assert vader.compound("zorbly") == 0.0


async def test_async_large_batch_matches_sync(vader: VaderScorer) -> None:
    tweets = [Tweet(id=str(i), text=(POSITIVE + NEGATIVE)[i % 6]) for i in range(200)]
    assert await vader.ascore_tweets(tweets, inline_max=10) == vader.score_tweets(tweets)
    assert await vader.ascore_tweets(tweets[:3]) == vader.score_tweets(tweets[:3])


def test_process_wide_instance() -> None:
    assert get_vader() is get_vader()
    assert get_vader().name == "vader-crypto"


class TestProportional:
    """The score is the (weighted) mean compound × 100, never its sign: a faint mood must give
    a faint score, which the stake stage's MIN_ABS_SCORE dead band then leaves alone."""

    @pytest.mark.parametrize(
        ("compound", "expected"), [(0.01, 1), (0.004, 0), (-0.013, -1), (0.2023, 20), (1.0, 100)]
    )
    def test_score_is_compound_times_100(
        self, vader: VaderScorer, monkeypatch: pytest.MonkeyPatch, compound: float, expected: int
    ) -> None:
        monkeypatch.setattr(vader, "compound", lambda text: compound)
        assert vader.score_texts(["anything", "else"]) == expected

    def test_a_mildly_positive_batch_scores_low(self, vader: VaderScorer) -> None:
        batch = [
            Tweet(id="1", text="Netuid 18 shipped an update today, looks fine"),
            Tweet(id="2", text="validators online for sn18"),
            Tweet(id="3", text="sn18 emissions unchanged this week"),
        ]
        assert vader.score_tweets(batch) == 7  # (0.2023 + 0 + 0) / 3

    def test_engagement_is_a_weight_not_a_multiplier(self, vader: VaderScorer) -> None:
        mild = Tweet(id="1", text="Netuid 18 shipped an update today, looks fine", like_count=10**6)
        assert vader.score_tweets([mild]) == 20  # one tweet: its own compound, however liked
        neutral = Tweet(id="2", text="validators online for sn18")
        assert 7 < vader.score_tweets([mild, neutral]) < 20  # the liked one weighs more
