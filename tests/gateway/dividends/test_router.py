"""GET /api/v1/tao_dividends through the real app, real Redis and PostgreSQL, a fake chain."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.scopes import static_owner
from shared.constants import STREAM_DIVIDEND_REQUESTED
from shared.errors import ChainBadResponse, ChainError, ChainUnavailable, StorageUnsupported
from shared.settings import Settings
from shared.ss58 import decode_ss58, encode_ss58
from tests.conftest import AUTH, TOKENS, capture_json_records, make_settings, running_app
from tests.fakes.chain import ALICE, BOB, DEFAULT_HOTKEY, FakeChain
from tests.gateway.conftest import ADMIN, READER, TRADER, bearer, owner

URL = "/api/v1/tao_dividends"


class TestLookups:
    async def test_one_entry_has_the_design_fields_and_is_cached(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        first = await client.get(
            URL, params={"netuid": 3, "hotkey": ALICE, "trade": "false"}, headers=AUTH
        )
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["netuid"] == 3 and body["hotkey"] == ALICE
        assert body["dividend"] == 123_456_789
        assert body["cached"] is False and body["stake_tx_triggered"] is False
        assert body["storage"] == "TaoDividendsPerSubnet" and body["unit"] == "tao_rao"
        assert body["block"] == 1000 and body["trade_id"] is None
        second = await client.get(
            URL, params={"netuid": 3, "hotkey": ALICE, "trade": "false"}, headers=AUTH
        )
        assert second.json()["cached"] is True
        assert second.json()["dividend"] == 123_456_789
        assert chain.calls["dividend"] == 1

    async def test_cache_is_shared_through_redis_between_processes(
        self, settings: Settings, chain: FakeChain
    ) -> None:
        params = {"netuid": 3, "hotkey": ALICE, "trade": "false"}
        async with running_app(create_app(settings, chain=chain)) as one:
            assert (await one.get(URL, params=params, headers=AUTH)).json()["cached"] is False
        other_chain = FakeChain()
        async with running_app(create_app(settings, chain=other_chain)) as two:
            body = (await two.get(URL, params=params, headers=AUTH)).json()
        assert body["cached"] is True and body["dividend"] == 123_456_789
        assert other_chain.reads == 0

    async def test_netuid_only_lists_every_hotkey_of_the_subnet(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        response = await client.get(URL, params={"netuid": 3, "trade": "false"}, headers=AUTH)
        body = response.json()
        assert response.status_code == 200
        assert {(d["hotkey"], d["dividend"]) for d in body["dividends"]} == {
            (ALICE, 123_456_789),
            (BOB, 7),
        }
        assert body["count"] == 2 and body["cached"] is False
        assert chain.calls["subnet_dividends"] == 1 and chain.calls["dividend"] == 0

    async def test_netuid_zero_is_a_real_subnet(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        body = (await client.get(URL, params={"netuid": 0, "trade": "false"}, headers=AUTH)).json()
        assert [(d["netuid"], d["hotkey"], d["dividend"]) for d in body["dividends"]] == [
            (0, ALICE, 11)
        ]
        assert chain.calls["all_dividends"] == 0
        one = await client.get(
            URL, params={"netuid": 0, "hotkey": ALICE, "trade": "false"}, headers=AUTH
        )
        assert one.json()["netuid"] == 0 and one.json()["dividend"] == 11

    async def test_neither_lists_every_subnet(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        body = (await client.get(URL, params={"trade": "false"}, headers=AUTH)).json()
        assert {d["netuid"] for d in body["dividends"]} == {0, 3, 18}
        assert body["count"] == 4
        assert chain.calls["all_dividends"] == 1

    async def test_hotkey_only_filters_every_subnet(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        body = (
            await client.get(URL, params={"hotkey": ALICE, "trade": "false"}, headers=AUTH)
        ).json()
        assert {(d["netuid"], d["dividend"]) for d in body["dividends"]} == {
            (0, 11),
            (3, 123_456_789),
        }
        assert all(d["hotkey"] == ALICE for d in body["dividends"])

    async def test_unknown_entry_reads_zero(self, client: httpx.AsyncClient) -> None:
        body = (
            await client.get(
                URL, params={"netuid": 3, "hotkey": DEFAULT_HOTKEY, "trade": "false"}, headers=AUTH
            )
        ).json()
        assert body["dividend"] == 0

    async def test_root_alpha_storage_reports_its_unit(self, settings: Settings) -> None:
        chain = FakeChain(storage="RootAlphaDividendsPerSubnet")
        async with running_app(create_app(settings, chain=chain)) as client:
            body = (
                await client.get(
                    URL, params={"netuid": 3, "hotkey": BOB, "trade": "false"}, headers=AUTH
                )
            ).json()
        assert body["storage"] == "RootAlphaDividendsPerSubnet" and body["unit"] == "alpha_rao"

    async def test_1000_concurrent_misses_cost_one_chain_read(self, settings: Settings) -> None:
        chain = FakeChain(delay_s=0.05)
        async with running_app(create_app(settings, chain=chain)) as client:
            responses = await asyncio.gather(
                *(
                    client.get(
                        URL, params={"netuid": 3, "hotkey": ALICE, "trade": "false"}, headers=AUTH
                    )
                    for _ in range(1000)
                )
            )
        assert [r.status_code for r in responses] == [200] * 1000
        assert {r.json()["dividend"] for r in responses} == {123_456_789}
        assert chain.reads == 1


class TestValidation:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"netuid": 70000}, "netuid"),
            ({"netuid": -1}, "netuid"),
            ({"netuid": "abc"}, "netuid"),
            ({"netuid": 3, "hotkey": ALICE[:-1] + "X"}, "hotkey"),
            ({"netuid": 3, "hotkey": "not-an-address"}, "hotkey"),
            ({"hotkey": "0x" + "ab" * 32}, "hotkey"),
            ({"trade": "maybe"}, "trade"),
        ],
    )
    async def test_bad_input_is_422_naming_the_field(
        self, client: httpx.AsyncClient, chain: FakeChain, params: dict[str, object], field: str
    ) -> None:
        response = await client.get(URL, params=params, headers=AUTH)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["message"].startswith(field)
        assert error["request_id"] == response.headers["x-request-id"]
        assert chain.reads == 0


class TestAuth:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Token " + "test-token-alpha-123"},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer a b"},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": "Basic dGVzdDp0ZXN0"},
        ],
    )
    async def test_bad_credentials_are_401(
        self, client: httpx.AsyncClient, chain: FakeChain, headers: dict[str, str]
    ) -> None:
        response = await client.get(URL, params={"netuid": 3}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
        assert chain.reads == 0

    async def test_second_static_token_works(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            URL,
            params={"netuid": 3, "trade": "false"},
            headers={"Authorization": "Bearer test-token-beta-456"},
        )
        assert response.status_code == 200

    async def test_stored_token_works_until_revoked(
        self, redis_url: str, clean_db: str, redis: Redis, chain: FakeChain
    ) -> None:
        from gateway.tokens import create_token, revoke_token

        settings = make_settings(redis_url, clean_db, auth_cache_ttl_s=0)
        async with running_app(create_app(settings, chain=chain)) as client:
            token = await create_token("ops")
            headers = {"Authorization": f"Bearer {token}"}
            ok = await client.get(URL, params={"netuid": 3, "trade": "false"}, headers=headers)
            assert ok.status_code == 200
            await revoke_token("ops")
            await asyncio.sleep(0.01)
            revoked = await client.get(URL, params={"netuid": 3, "trade": "false"}, headers=headers)
            assert revoked.status_code == 401


class TestTrade:
    async def test_trade_publishes_one_event_with_the_design_fields(
        self, client: httpx.AsyncClient, redis: Redis
    ) -> None:
        response = await client.get(
            URL,
            params={"netuid": 3, "hotkey": ALICE, "trade": "true"},
            headers={**AUTH, "X-Request-ID": "req-42"},
        )
        body = response.json()
        assert body["stake_tx_triggered"] is True and body["trade_status"] == "enqueued"
        entries = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
        assert len(entries) == 1
        fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
        assert fields["type"] == "dividend_requested" and fields["version"] == "1"
        assert fields["trade_id"] == body["trade_id"]
        assert fields["netuid"] == "3" and fields["hotkey"] == ALICE
        assert fields["source"] == "api" and fields["request_id"] == "req-42"
        assert fields["requested_by"] == static_owner(TOKENS[0])
        # Only what the stages read: the dividend answer itself is not part of the trade.
        assert not {"dividend", "unit", "block"} & fields.keys()
        assert fields["occurred_at"].endswith("Z") and len(fields["event_id"]) == 32

    async def test_trade_defaults_to_setting_and_uses_default_pair(
        self, client: httpx.AsyncClient, redis: Redis
    ) -> None:
        body = (await client.get(URL, headers=AUTH)).json()
        assert body["stake_tx_triggered"] is True
        entries = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
        fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
        assert (fields["netuid"], fields["hotkey"]) == ("18", DEFAULT_HOTKEY)

    async def test_trade_false_enqueues_nothing(
        self, client: httpx.AsyncClient, redis: Redis
    ) -> None:
        body = (await client.get(URL, params={"netuid": 3, "trade": "false"}, headers=AUTH)).json()
        assert body["stake_tx_triggered"] is False and body["trade_status"] == "not_requested"
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0

    async def test_1000_concurrent_trades_for_one_pair_enqueue_exactly_one(
        self, client: httpx.AsyncClient, redis: Redis
    ) -> None:
        responses = await asyncio.gather(
            *(
                client.get(
                    URL, params={"netuid": 3, "hotkey": ALICE, "trade": "true"}, headers=AUTH
                )
                for _ in range(1000)
            )
        )
        assert [r.status_code for r in responses] == [200] * 1000
        bodies = [r.json() for r in responses]
        assert sum(b["stake_tx_triggered"] for b in bodies) == 1
        assert len({b["trade_id"] for b in bodies}) == 1
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1

    async def test_cooldown_is_shared_between_processes_and_expires(
        self, redis_url: str, clean_db: str, redis: Redis
    ) -> None:
        # Long enough that the second request always lands inside it on a loaded machine.
        settings = make_settings(redis_url, clean_db, trade_cooldown_s=3)
        params = {"netuid": 3, "hotkey": ALICE, "trade": "true"}
        async with (
            running_app(create_app(settings, chain=FakeChain())) as one,
            running_app(create_app(settings, chain=FakeChain())) as two,
        ):
            first = (await one.get(URL, params=params, headers=AUTH)).json()
            again = (await two.get(URL, params=params, headers=AUTH)).json()
            assert first["stake_tx_triggered"] is True
            assert again["stake_tx_triggered"] is False
            assert again["trade_status"] == "cooldown"
            assert again["trade_id"] == first["trade_id"]
            assert "already enqueued" in again["trade_detail"]
            await asyncio.sleep(3.1)
            later = (await two.get(URL, params=params, headers=AUTH)).json()
        assert later["stake_tx_triggered"] is True and later["trade_id"] != first["trade_id"]
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 2

    async def test_the_default_hotkey_shares_its_cooldown_with_its_other_spellings(
        self, redis_url: str, clean_db: str, redis: Redis
    ) -> None:
        """DEFAULT_HOTKEY spelled with another network prefix is normalized like a queried
        hotkey: the omitted hotkey and the same account given are one pair, one trade."""
        polkadot = encode_ss58(decode_ss58(DEFAULT_HOTKEY), 0)
        settings = make_settings(redis_url, clean_db, default_hotkey=polkadot)
        assert settings.default_hotkey == DEFAULT_HOTKEY
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            omitted = await client.get(URL, params={"netuid": 18, "trade": "true"}, headers=AUTH)
            given = {"netuid": 18, "hotkey": DEFAULT_HOTKEY, "trade": "true"}
            same = (await client.get(URL, params=given, headers=AUTH)).json()
        assert omitted.json()["stake_tx_triggered"] is True
        assert same["trade_status"] == "cooldown"
        assert same["trade_id"] == omitted.json()["trade_id"]
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 1


class TestLimitsAndFailures:
    async def test_rate_limit_is_429_with_retry_after(
        self, redis_url: str, clean_db: str, redis: Redis
    ) -> None:
        settings = make_settings(redis_url, clean_db, rate_limit_per_min=3)
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            codes = [
                (
                    await client.get(URL, params={"netuid": 3, "trade": "false"}, headers=AUTH)
                ).status_code
                for _ in range(3)
            ]
            limited = await client.get(URL, params={"netuid": 3, "trade": "false"}, headers=AUTH)
            other = await client.get(
                URL,
                params={"netuid": 3, "trade": "false"},
                headers={"Authorization": "Bearer test-token-beta-456"},
            )
        assert codes == [200, 200, 200]
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limited"
        assert other.status_code == 200

    async def test_trade_limit_is_tighter(
        self, redis_url: str, clean_db: str, redis: Redis
    ) -> None:
        settings = make_settings(redis_url, clean_db, trade_rate_limit_per_min=1)
        async with running_app(create_app(settings, chain=FakeChain())) as client:
            first = await client.get(URL, params={"netuid": 3, "trade": "true"}, headers=AUTH)
            second = await client.get(URL, params={"netuid": 3, "trade": "true"}, headers=AUTH)
            read = await client.get(URL, params={"netuid": 3, "trade": "false"}, headers=AUTH)
        assert (first.status_code, second.status_code, read.status_code) == (200, 429, 200)

    async def test_redis_down_is_503(self, clean_db: str) -> None:
        from tests.conftest import private_redis

        with private_redis() as (url, proc):
            settings = make_settings(url, clean_db)
            async with running_app(create_app(settings, chain=FakeChain())) as client:
                proc.kill()
                proc.wait()
                response = await client.get(
                    URL, params={"netuid": 3, "trade": "false"}, headers=AUTH
                )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "redis_unavailable"

    async def test_stalled_chain_is_504_within_the_timeout(
        self, redis_url: str, clean_db: str, redis: Redis
    ) -> None:
        chain = FakeChain()
        chain.stalled = True
        settings = make_settings(redis_url, clean_db, chain_timeout_s=0.3)
        async with running_app(create_app(settings, chain=chain)) as client:
            start = time.monotonic()
            response = await client.get(URL, params={"netuid": 3, "trade": "true"}, headers=AUTH)
            elapsed = time.monotonic() - start
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "chain_timeout"
        assert elapsed < 1.5
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0

    async def test_unavailable_chain_is_503(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        chain.error = ChainUnavailable("chain test is not connected")
        response = await client.get(URL, params={"netuid": 3}, headers=AUTH)
        assert response.status_code == 503
        assert response.json()["error"] == {
            "code": "chain_unavailable",
            "message": "chain test is not connected",
            "request_id": response.headers["x-request-id"],
        }

    @pytest.mark.parametrize(
        ("error", "public"),
        [
            (ChainBadResponse, "the chain node's answer could not be used"),
            (StorageUnsupported, "the chain does not hold the storage item this read needs"),
        ],
    )
    async def test_what_the_node_said_is_logged_not_answered(
        self, settings: Settings, error: type[ChainError], public: str
    ) -> None:
        """The SDK's text can name the node's URL or carry whatever the node sent."""
        chain = FakeChain()
        app = create_app(settings, chain=chain)
        records = capture_json_records(settings)
        chain.error = error(
            "chain dividends failed: ValueError: wss://node.example/ws?k=1 said <x>"
        )
        async with running_app(app) as client:
            response = await client.get(URL, params={"netuid": 3}, headers=AUTH)
        assert response.status_code == 503
        rid = response.headers["x-request-id"]
        assert response.json()["error"] == {
            "code": error.code,
            "message": f"{public}; quote request_id when reporting it",
            "request_id": rid,
        }
        [logged] = [r for r in records if r["msg"] == "chain error answered"]
        assert logged["request_id"] == rid and "said <x>" in logged["error"]

    async def test_unexpected_error_is_500_without_a_stack_trace(
        self, client: httpx.AsyncClient, chain: FakeChain
    ) -> None:
        chain.error = RuntimeError("boom at /secret/path")  # type: ignore[assignment]
        response = await client.get(URL, params={"netuid": 3}, headers=AUTH)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "internal_error" and "RuntimeError" in error["message"]
        assert "Traceback" not in response.text and "/secret/path" not in response.text


class TestScopes:
    """A token without `trade` never enqueues: 403 when it asks, no trade when it does not."""

    @staticmethod
    async def _trade_traces(redis: Redis) -> tuple[int, list[bytes]]:
        return await redis.xlen(STREAM_DIVIDEND_REQUESTED), await redis.keys("trade:cooldown:*")

    async def test_read_token_asking_to_trade_is_403_and_enqueues_nothing(
        self, scoped: httpx.AsyncClient, redis: Redis, chain: FakeChain
    ) -> None:
        response = await scoped.get(
            URL, params={"netuid": 3, "hotkey": ALICE, "trade": "true"}, headers=bearer(READER)
        )
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "insufficient_scope" and "'trade'" in error["message"]
        assert error["request_id"] == response.headers["x-request-id"]
        assert await self._trade_traces(redis) == (0, [])
        assert chain.reads == 0

    async def test_read_token_with_trade_omitted_never_trades(
        self, scoped: httpx.AsyncClient, redis: Redis
    ) -> None:
        response = await scoped.get(
            URL, params={"netuid": 3, "hotkey": ALICE}, headers=bearer(READER)
        )
        assert response.status_code == 200
        body = response.json()
        assert body["stake_tx_triggered"] is False and body["trade_status"] == "not_requested"
        assert body["dividend"] == 123_456_789
        assert await self._trade_traces(redis) == (0, [])

    async def test_trade_token_with_trade_omitted_trades_as_its_owner(
        self, scoped: httpx.AsyncClient, redis: Redis
    ) -> None:
        response = await scoped.get(
            URL, params={"netuid": 3, "hotkey": ALICE}, headers=bearer(TRADER)
        )
        assert response.json()["stake_tx_triggered"] is True
        [(_, fields)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
        assert fields[b"requested_by"].decode() == owner(TRADER)
        assert TRADER.encode() not in b"".join(fields.values())

    async def test_admin_without_trade_cannot_trade(
        self, scoped: httpx.AsyncClient, redis: Redis
    ) -> None:
        response = await scoped.get(URL, params={"trade": "true"}, headers=bearer(ADMIN))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_scope"
        assert await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0

    async def test_stored_token_scopes_apply(self, scoped: httpx.AsyncClient, redis: Redis) -> None:
        from gateway.tokens import create_token

        reader = await create_token("dash", frozenset({"read"}))
        trader = await create_token("bot", frozenset({"read", "trade"}))
        params = {"netuid": 3, "hotkey": ALICE, "trade": "true"}
        refused = await scoped.get(URL, params=params, headers=bearer(reader))
        assert refused.status_code == 403 and await redis.xlen(STREAM_DIVIDEND_REQUESTED) == 0
        assert (await scoped.get(URL, params=params, headers=bearer(trader))).status_code == 200
        [(_, fields)] = await redis.xrange(STREAM_DIVIDEND_REQUESTED)
        assert fields[b"requested_by"] == b"bot"
