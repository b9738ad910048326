"""One settings class for every process, read from the environment (and `.env`).

Names follow ../shared/design.md; `.env.example` lists every one of them.
Secrets are `SecretStr` so that a repr, a log line or a traceback never shows them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import unquote, unquote_plus, urlsplit

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.ss58 import normalize_ss58

DEFAULT_SQLITE_URL = "sqlite://data/taostake.sqlite3"
# One try of the stake handler, besides its wait for the coldkey's lane, reads the account
# and signs (each up to CHAIN_TIMEOUT_S), submits (up to STAKE_SUBMIT_TIMEOUT_S) and makes
# a dozen database and Redis round trips: this margin is for those round trips.
STAKE_HANDLER_MARGIN_S = 2.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- HTTP gateway ---------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    api_tokens: SecretStr = SecretStr("")
    auth_cache_ttl_s: NonNegativeFloat = 10.0
    rate_limit_per_min: PositiveInt = 1200
    trade_rate_limit_per_min: PositiveInt = 30
    rate_limit_sync_s: PositiveFloat = 0.5
    # Failed checks of unknown tokens allowed per client address (IPv6: per /64) per minute
    # before 429s; a token known valid in the process is never throttled.
    auth_failures_per_min: PositiveInt = 30
    # Stored-token lookups (database round trips) in flight at once in one process; beyond
    # it a check of an unknown token answers 503 `auth_busy` at once.
    auth_lookup_concurrency: PositiveInt = 16
    # Addresses of reverse proxies whose X-Forwarded-For/-Proto is believed (comma separated,
    # uvicorn's syntax, "*" for any). Empty: proxy headers are ignored and the client address
    # is the peer's.
    forwarded_allow_ips: str = ""
    # uvicorn's HTTP parser. httptools (the default: fastest) does not bound the size of
    # request headers: put a reverse proxy that does in front of it; h11 refuses a request
    # head over 21 KiB itself (cached hits about a third slower; see docs/api.md).
    http_parser: Literal["httptools", "h11"] = "httptools"

    # --- Redis, database ------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_pool_size: int = Field(256, ge=8)
    redis_pool_timeout_s: PositiveFloat = 5.0
    redis_socket_timeout_s: PositiveFloat = 10.0
    database_url: str = ""
    db_pool_size: PositiveInt = 20
    db_command_timeout_s: PositiveFloat = 10.0
    # `python -m shared.db.migrate` waits this long for the database to accept connections.
    db_connect_wait_s: NonNegativeFloat = 60.0

    # --- chain -----------------------------------------------------------------------------
    bittensor_network: str = "test"
    chain_timeout_s: PositiveFloat = 10.0
    chain_connect_timeout_s: PositiveFloat = 15.0
    chain_retry_max_s: PositiveFloat = 30.0
    chain_read_concurrency: PositiveInt = 8
    dividends_storage: Literal["auto", "TaoDividendsPerSubnet", "RootAlphaDividendsPerSubnet"] = (
        "auto"
    )

    # --- wallet ----------------------------------------------------------------------------
    wallet_name: str = "default"
    wallet_hotkey: str = "default"
    wallet_path: str = "~/.bittensor/wallets"
    wallet_mnemonic: SecretStr | None = None
    wallet_password: SecretStr | None = None

    # --- tweets and sentiment --------------------------------------------------------------
    datura_api_key: SecretStr | None = None
    datura_base_url: str = "https://apis.datura.ai"
    datura_timeout_s: PositiveFloat = 20.0
    tweet_query_template: str = "Netuid {netuid}"
    tweet_count: int = Field(20, ge=1, le=30)
    tweet_cache_ttl_s: NonNegativeFloat = 60.0
    chutes_api_key: SecretStr | None = None
    chutes_base_url: str = "https://llm.chutes.ai"
    chutes_model: str = "unsloth/Llama-3.2-3B-Instruct"
    chutes_timeout_s: PositiveFloat = 30.0
    sentiment_fallback: Literal["vader", "none"] = "vader"
    http_max_retries: NonNegativeInt = 3
    # Datura/Chutes replies larger than this are refused unread (an invalid response).
    http_max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)

    # --- trading ---------------------------------------------------------------------------
    stake_amount_tao: PositiveFloat = 1.0
    stake_sizing: Literal["fixed", "proportional"] = "fixed"
    stake_max_tao: PositiveFloat = 1.0
    staking_enabled: bool = True
    stake_dry_run: bool = False
    stake_submit_timeout_s: PositiveFloat = 120.0
    # Unsettled stake actions older than submit timeout + margin are reconciled from chain.
    stake_settle_margin_s: NonNegativeFloat = 30.0
    stake_reconcile_every_s: PositiveFloat = 30.0
    trade_by_default: bool = True
    trade_cooldown_s: PositiveInt = 300
    cache_ttl_s: PositiveInt = 120
    cache_l1_max_entries: PositiveInt = 10_000
    default_netuid: int = Field(18, ge=0, le=65535)
    default_hotkey: str = "5FFApaS75bv5pJHfAp2FVLBj9ZaXuFDjEypsaBNc1wCfe52v"

    @field_validator("default_hotkey")
    @classmethod
    def _check_hotkey(cls, value: str) -> str:
        """In SS58 format 42, as the gateway normalizes a queried hotkey: one account, one
        cooldown key and one pair, however DEFAULT_HOTKEY is spelled."""
        try:
            return normalize_ss58(value.strip())
        except ValueError:
            raise ValueError(f"DEFAULT_HOTKEY: {value!r} is not an SS58 address") from None

    # --- trading safety (risk limits, price protection, trusted events) --------------------
    # HMAC-SHA256 key that signs every stream event; required by publishers and consumers.
    event_signing_key: SecretStr | None = None
    min_abs_score: int = Field(20, ge=0, le=100)  # dead band: |score| below it never trades
    max_event_age_s: PositiveFloat = 900.0  # a trade older than this is skipped as stale
    max_position_tao: PositiveFloat = 10.0  # stake per (netuid, hotkey) an add stays under
    daily_trade_limit_tao: PositiveFloat = 5.0  # executed TAO per coldkey, rolling 24 h
    trade_netuids: str = ""  # optional allowlist "1,18,64"; empty: every subnet
    slippage_tolerance: float = Field(0.005, gt=0, lt=1)
    allow_partial_stake: bool = False

    # --- pipeline and schedule -------------------------------------------------------------
    rescore_interval_s: PositiveInt = 900
    rescore_window_s: PositiveInt = 86_400
    watchlist: str = ""
    worker_concurrency: PositiveInt = 32
    # Entries a batch stage (tweets, sentiment) reads and writes together, at most.
    worker_batch: PositiveInt = 32
    stream_maxlen: int = Field(100_000, ge=100)
    max_deliveries: PositiveInt = 5
    worker_handler_timeout_s: PositiveFloat = 240.0
    # Entries of a consumer silent this long are reclaimed; a running handler keeps its
    # entries fresh, so this may be shorter than the handler timeout.
    worker_claim_idle_s: PositiveFloat = 300.0
    # While a dependency (database, chain, Datura) is down, a handler is retried in place
    # (no delivery spent): first after this, doubling up to the max.
    worker_outage_backoff_s: PositiveFloat = 0.5
    worker_outage_backoff_max_s: PositiveFloat = 15.0

    # --- metrics (the pipeline's own Prometheus endpoint; the gateway serves /metrics) ----
    # Each pipeline process serves GET /metrics here; 0 turns the endpoint off. Beat has no
    # endpoint: its runs are exposed by the pipeline (docs/metrics.md).
    metrics_port: int = Field(9108, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # How often stream, stake-table and beat gauges are read (one small query each).
    metrics_sample_every_s: float = Field(15.0, ge=1)

    # --- logging ---------------------------------------------------------------------------
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    @property
    def stake_settle_after_s(self) -> float:
        """Age past which an unsettled stake action is no longer in its submitter's hands
        (STAKE_SUBMIT_TIMEOUT_S + STAKE_SETTLE_MARGIN_S): settlement proves it from the chain,
        and a crashed holder's coldkey lane has expired by then."""
        return self.stake_submit_timeout_s + self.stake_settle_margin_s

    @property
    def stake_lane_wait_s(self) -> float:
        """How long one try of the stake handler may wait for the coldkey's lane: what
        WORKER_HANDLER_TIMEOUT_S leaves after an account read and a signature (each up to
        CHAIN_TIMEOUT_S), a submit (STAKE_SUBMIT_TIMEOUT_S) and STAKE_HANDLER_MARGIN_S."""
        return (
            self.worker_handler_timeout_s
            - self.stake_submit_timeout_s
            - 2 * self.chain_timeout_s
            - STAKE_HANDLER_MARGIN_S
        )

    @model_validator(mode="after")
    def _stake_fits_handler_timeout(self) -> Settings:
        # A try that runs out of time mid-submit spends a delivery and cancels the submit,
        # leaving its extrinsic to be settled from the chain: refuse such a budget.
        if self.stake_lane_wait_s <= 0:
            needed = self.stake_submit_timeout_s + 2 * self.chain_timeout_s + STAKE_HANDLER_MARGIN_S
            raise ValueError(
                f"WORKER_HANDLER_TIMEOUT_S={self.worker_handler_timeout_s:g} is too short for "
                f"the stake stage: one try needs more than STAKE_SUBMIT_TIMEOUT_S="
                f"{self.stake_submit_timeout_s:g} + 2 × CHAIN_TIMEOUT_S="
                f"{self.chain_timeout_s:g} (account read, signing) + "
                f"{STAKE_HANDLER_MARGIN_S:g} s (database round trips) = {needed:g} s; raise "
                "WORKER_HANDLER_TIMEOUT_S or lower the other two"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """SQLite in ./data when DATABASE_URL is unset, so `make run` needs no database server."""
        return self.database_url or DEFAULT_SQLITE_URL

    def static_tokens(self) -> list[str]:
        """Tokens from API_TOKENS (comma separated); empty entries ignored."""
        raw = self.api_tokens.get_secret_value()
        return [token.strip() for token in raw.split(",") if token.strip()]

    def allowed_netuids(self) -> frozenset[int] | None:
        """TRADE_NETUIDS as a set; None when unset (every subnet may trade)."""
        raw = [part.strip() for part in self.trade_netuids.split(",") if part.strip()]
        return frozenset(int(part) for part in raw) if raw else None

    @field_validator("trade_netuids")
    @classmethod
    def _check_netuids(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part and not (part.isdigit() and 0 <= int(part) <= 65535):
                raise ValueError(f"TRADE_NETUIDS: {part!r} is not a netuid (0..65535)")
        return value

    def secret_values(self) -> list[str]:
        """Every configured secret, so the log filter can mask them wherever they appear."""
        # An entry may be `TOKEN:scope+scope`: mask the bare token as well as the entry.
        values = [part for entry in self.static_tokens() for part in {entry, entry.split(":")[0]}]
        for secret in (
            self.wallet_mnemonic,
            self.wallet_password,
            self.datura_api_key,
            self.chutes_api_key,
            self.event_signing_key,
        ):
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        for url in (self.redis_url, self.database_url):
            values.extend(url_secrets(url))
        # A node provider's key may be in the query (`wss://…/ws?apikey=…`).
        values.extend(url_secrets(self.bittensor_network, query=True))
        return values


def url_secrets(url: str, *, query: bool = False) -> list[str]:
    """What in a URL is a credential: its password and, with `query`, its query's values,
    each as written and decoded (a client library may print either). A value too short to
    mask safely is left out by the log masker (`register_secrets`)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL the services could use either
        return []
    written = [password] if password else []
    if query:
        written += [pair.partition("=")[2] for pair in parts.query.split("&")]
    found: list[str] = []
    for value in written:
        for form in (value, unquote(value), unquote_plus(value)):
            if form and form not in found:
                found.append(form)
    return found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
