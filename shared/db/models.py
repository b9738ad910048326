"""Tortoise models: API tokens, trades and every stage's record of a trade."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

from shared.tweets import Tweet, dump_tweets, load_tweets


class ApiToken(Model):
    """A bearer token created with `python -m gateway tokens create`. Only its hash is kept."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    prefix = fields.CharField(max_length=12)
    # Comma-separated scopes: read, trade, admin.
    scopes = fields.CharField(max_length=64, default="read")
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_tokens"


class Trade(Model):
    """One trade's journey. `trade_id` is the same in every event and record."""

    trade_id = fields.CharField(max_length=32, primary_key=True)
    netuid = fields.IntField()
    hotkey = fields.CharField(max_length=64)
    source = fields.CharField(max_length=16)
    status = fields.CharField(max_length=24, default="requested")
    reason = fields.TextField(null=True)
    request_id = fields.CharField(max_length=64, null=True)
    requested_by = fields.CharField(max_length=64, null=True)
    replay_of = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "trades"
        indexes = (Index(fields=("netuid", "hotkey", "created_at")),)


def one_per_trade(related_name: str) -> fields.OneToOneRelation[Trade]:
    """A stage record's trade: one record of its kind per trade, deleted with the trade."""
    return fields.OneToOneField("models.Trade", related_name=related_name, on_delete=fields.CASCADE)


class TradeRecord(Model):
    """What every stage's record of a trade has: its own id and the trade's id (the FK column,
    set by Tortoise from the subclass's `trade`)."""

    id = fields.IntField(primary_key=True)
    trade_id: str

    class Meta:
        abstract = True


# The tweets stage's record of a trade: the search it ran and what it found.
class TweetBatch(TradeRecord):
    trade: fields.OneToOneRelation[Trade] = one_per_trade("tweets")
    fetched_at = fields.DatetimeField(auto_now_add=True)
    source = fields.CharField(max_length=16)
    query = fields.CharField(max_length=256)
    count = fields.IntField(default=0)
    # Stored and read back as the one tweet schema (shared/tweets.py).
    tweets: fields.Field[list[Tweet]] = fields.JSONField(
        default=list, encoder=dump_tweets, decoder=load_tweets
    )
    error = fields.TextField(null=True)

    class Meta:
        table = "tweet_batches"


# The sentiment stage's record of a trade: the score (-100..100), who gave it and why.
class SentimentScore(TradeRecord):
    trade: fields.OneToOneRelation[Trade] = one_per_trade("sentiment")
    scored_at = fields.DatetimeField(auto_now_add=True)
    netuid = fields.IntField()
    score = fields.IntField(null=True)
    backend = fields.CharField(max_length=16)
    model = fields.CharField(max_length=128, null=True)
    reason = fields.TextField(null=True)
    fallback_reason = fields.TextField(null=True)

    class Meta:
        table = "sentiment_scores"


class StakeAction(TradeRecord):
    """The stake stage's decision and its chain result, unique per trade (idempotency)."""

    trade: fields.OneToOneRelation[Trade] = one_per_trade("stake_action")
    netuid = fields.IntField()
    hotkey = fields.CharField(max_length=64)
    coldkey = fields.CharField(max_length=64, null=True)
    direction = fields.CharField(max_length=8)
    status = fields.CharField(max_length=16)
    reason = fields.TextField(null=True)
    score = fields.IntField(null=True)
    amount_tao = fields.DecimalField(max_digits=20, decimal_places=9, null=True)
    amount_alpha = fields.DecimalField(max_digits=20, decimal_places=9, null=True)
    success = fields.BooleanField(null=True)
    message = fields.TextField(null=True)
    error_name = fields.CharField(max_length=64, null=True)
    block_hash = fields.CharField(max_length=80, null=True)
    block = fields.IntField(null=True)
    fee_rao = fields.BigIntField(null=True)
    # Chain state read just before submitting: what reconciliation compares against.
    nonce_before = fields.IntField(null=True)
    block_before = fields.IntField(null=True)
    stake_before_rao = fields.BigIntField(null=True)
    balance_before_rao = fields.BigIntField(null=True)
    submitted_at = fields.DatetimeField(null=True)
    # The signed extrinsic, stored before it is sent: settlement looks for this hash in the
    # blocks of its mortality window [era_start_block, era_end_block], never at balances.
    extrinsic_hash = fields.CharField(max_length=80, null=True)
    extrinsic_nonce = fields.IntField(null=True)
    era_start_block = fields.IntField(null=True)
    era_end_block = fields.IntField(null=True)
    limit_price_rao = fields.BigIntField(null=True)  # price protection sent with the call
    settle_attempts = fields.IntField(default=0)
    settle_error = fields.TextField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "stake_actions"
        indexes = (
            Index(fields=("netuid", "hotkey")),
            Index(fields=("status", "direction")),
            Index(fields=("coldkey", "created_at")),
        )
