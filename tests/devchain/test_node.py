"""The simulated node's own behaviour over raw JSON-RPC (SDK contract: tests/shared/chain)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.devchain import FIXTURES_HINT, DevChain, fixtures_dir
from tests.devchain.state import Storage

os.environ["BT_MEV_PROTECTION"] = "0"

needs_fixtures = pytest.mark.skipif(fixtures_dir() is None, reason=FIXTURES_HINT)
ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, *params: Any, timeout: float = 5.0) -> dict[str, Any]:
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": list(params)}
        await self.ws.send(json.dumps(request))
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return reply


@pytest.fixture
async def node() -> AsyncIterator[DevChain]:
    async with DevChain(spec=393) as started:
        yield started


@pytest.fixture
async def client(node: DevChain) -> AsyncIterator[Client]:
    async with connect(node.url, max_size=None) as ws:
        yield Client(ws)


def test_keys_paged_is_exclusive_of_the_start_key_and_stays_in_the_prefix() -> None:
    storage = Storage({b"\x01\x01": b"", b"\x01\x02": b"", b"\x01\x03": b"", b"\x02\x00": b""})

    assert storage.keys_paged(b"\x01", 2, None) == [b"\x01\x01", b"\x01\x02"]
    assert storage.keys_paged(b"\x01", 2, b"\x01\x02") == [b"\x01\x03"]
    assert storage.keys_paged(b"\x01", 2, b"\x01\x03") == []
    assert storage.keys_paged(b"\x01", 10, b"\x01") == [b"\x01\x01", b"\x01\x02", b"\x01\x03"]


@needs_fixtures
class TestRpc:
    async def test_internal_error_is_answered_and_the_connection_stays(
        self, node: DevChain, client: Client
    ) -> None:
        node.error_on("chain_getHead")
        failed = await client.call("chain_getHead")
        again = await client.call("chain_getHead")

        assert failed["error"]["code"] == -32603
        assert "injected internal error" in failed["error"]["data"]
        assert again["result"] == node.head.hash
        assert node.open_connections == 1

    async def test_a_storage_item_fault_answers_errors_for_that_item_only(
        self, node: DevChain, client: Client
    ) -> None:
        events = "0x" + node.codec.storage_key("System", "Events").hex()
        number = "0x" + node.codec.storage_key("System", "Number").hex()
        node.error_on_storage("System", "Events", times=2)
        by_key = await client.call("state_getStorage", events)
        other = await client.call("state_getStorage", number)
        batched = await client.call("state_queryStorageAt", [number, events], node.head.hash)
        again = await client.call("state_queryStorageAt", [events], node.head.hash)

        assert by_key["error"]["code"] == batched["error"]["code"] == -32603
        assert "result" in other and "result" in again
        assert node.open_connections == 1

    async def test_unknown_method_and_unknown_runtime_api_are_errors(self, client: Client) -> None:
        unknown = await client.call("state_doesNotExist")
        api = await client.call("state_call", "NoSuchApi_method", "0x", None)

        assert unknown["error"]["code"] == -32601
        assert "is not found" in api["error"]["message"]

    async def test_counts_rpc_methods_but_not_dev_control_calls(
        self, node: DevChain, client: Client
    ) -> None:
        await client.call("chain_getHead")
        await client.call("chain_getHead")
        await client.call("state_call", "SwapRuntimeApi_current_alpha_price", "0x0300", None)
        counts = (await client.call("dev_counts"))["result"]

        assert counts["methods"] == {"chain_getHead": 2, "state_call": 1}
        assert counts["state_call"] == {"SwapRuntimeApi_current_alpha_price": 1}
        assert node.total_rpc_calls == 3

    async def test_stall_never_answers_and_delay_answers_late(
        self, node: DevChain, client: Client
    ) -> None:
        node.stall("chain_getHead")
        with pytest.raises(TimeoutError):
            await client.call("chain_getHead", timeout=0.3)
        node.unstall()
        node.delay(0.2)
        started = asyncio.get_running_loop().time()
        delayed = await client.call("system_chain")

        assert delayed["result"] == "Bittensor"
        assert asyncio.get_running_loop().time() - started >= 0.2

    async def test_storage_reads_follow_blocks(self, node: DevChain, client: Client) -> None:
        node.add_subnet(3)
        node.set_dividend(3, ALICE, 5)
        key = (
            "0x"
            + node.codec.storage_key("SubtensorModule", node.dividend_storage, [3, ALICE]).hex()
        )
        old = node.head.hash
        node.seal_block()
        node.set_dividend(3, ALICE, 6)

        at_old = await client.call("state_getStorageAt", key, old)
        at_head = await client.call("state_queryStorageAt", [key], None)
        unknown = await client.call("state_getStorageAt", key, "0x" + "11" * 32)

        assert at_old["result"] == "0x0500000000000000"
        assert at_head["result"] == [
            {"block": node.head.hash, "changes": [[key, "0x0600000000000000"]]}
        ]
        assert "UnknownBlock" in unknown["error"]["message"]

    async def test_existential_deposit_is_patched_into_the_served_metadata(self) -> None:
        async with DevChain(spec=315, existential_deposit=1_234) as patched:
            assert patched.existential_deposit == 1_234
        async with DevChain(spec=315) as recorded:
            assert recorded.existential_deposit == 500

    async def test_a_tampered_signature_is_rejected_and_a_genuine_one_accepted(
        self, node: DevChain, client: Client
    ) -> None:
        from async_substrate_interface.async_substrate import AsyncSubstrateInterface
        from bittensor_wallet import Keypair

        signer = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
        node.add_subnet(3)
        node.fund(signer.ss58_address, 5)
        async with AsyncSubstrateInterface(node.url, ws_shutdown_timer=None) as substrate:
            call = await substrate.compose_call(
                "SubtensorModule",
                "add_stake",
                {"hotkey": ALICE, "netuid": 3, "amount_staked": 10**9},
            )
            extrinsic = await substrate.create_signed_extrinsic(
                call, signer, era={"period": 64}, nonce=0
            )
        genuine = bytes(extrinsic.data.data)
        tampered = bytearray(genuine)
        tampered[40] ^= 0xFF  # inside the signature

        rejected = await client.call("author_submitExtrinsic", "0x" + tampered.hex())
        accepted = await client.call("author_submitExtrinsic", "0x" + genuine.hex())

        assert rejected["error"]["data"] == "Transaction has a bad signature"
        assert accepted["result"] == node.applied[0].hash
        assert node.stake(signer.ss58_address, ALICE, 3) == 10**9
