"""`author_*`: the transaction pool, plus `account_nextIndex` and `payment_queryInfo`.

Admission decodes the extrinsic, applies the pool faults (`reject_next`), verifies the
signature against the rebuilt signing payload, lets `SubtensorLogic.check` refuse what a
real pool refuses (nonce, fees, price limit), then seals it at once in a new block (with
`fail_next` / `move_price_next` applied). A watch gets `ready` and `inBlock` right after
the answer and `finalized` after `finality_delay_s` unless the client unwatched first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bittensor_wallet import Keypair

from tests.devchain.codec import DecodedExtrinsic, to_public_key
from tests.devchain.jsonrpc import Namespace, Params, Reply, RpcError, hex_bytes
from tests.devchain.logic import Rejected
from tests.devchain.state import Block
from tests.devchain.transport import Connection


class AuthorRpc(Namespace):
    # ------------------------------------------------------------------ before submitting
    def rpc_account_nextIndex(self, connection: Connection, params: Params) -> int:
        if not params:
            raise RpcError(-32602, "Invalid params", "expected [address]")
        try:
            return self.node.logic.nonce(self.node.blocks.head_state, str(params[0]))
        except ValueError as exc:
            raise RpcError(-32602, "Invalid params", str(exc)) from None

    def rpc_payment_queryInfo(self, connection: Connection, params: Params) -> dict[str, Any]:
        return {
            "weight": {"ref_time": 1_000_000_000, "proof_size": 10_000},
            "class": "normal",
            "partialFee": str(self.node.logic.fee_rao),
        }

    # ------------------------------------------------------------------ the pool
    def _admit(self, params: Params) -> tuple[DecodedExtrinsic, Block]:
        node, faults = self.node, self.node.faults
        if not params or not isinstance(params[0], str):
            raise RpcError(-32602, "Invalid params", "expected [extrinsic_hex]")
        try:
            ext = node.codec.decode_extrinsic(hex_bytes(params[0]))
        except Exception as exc:
            raise RpcError(
                1002, "Verification Error: Runtime error: Could not decode", str(exc)
            ) from None
        if faults.reject_next:
            rejected = faults.reject_next.popleft()
            raise RpcError(rejected.code, rejected.message, rejected.data)
        state = node.blocks.head_state
        try:
            if node.verify_signatures and ext.signed:
                self._verify_signature(ext)
            node.logic.check(state, ext)
        except Rejected as rejected:
            raise RpcError(rejected.code, rejected.message, rejected.data) from None
        forced = faults.fail_next.popleft() if faults.fail_next else None
        if faults.move_price_next:
            netuid, price = faults.move_price_next.popleft()
            state.prices[netuid] = price
        return ext, node.blocks.seal([ext], forced)

    def _verify_signature(self, ext: DecodedExtrinsic) -> None:
        blocks = self.node.blocks
        genesis = blocks.genesis.hash
        birth_hash = genesis
        if isinstance(ext.era, tuple | list) and len(ext.era) == 2:
            period, phase = int(ext.era[0]), int(ext.era[1])
            current = blocks.head.number
            birth = (max(current, phase) - phase) // period * period + phase
            if birth > current:
                raise Rejected("Transaction has an ancient birth block")
            birth_hash = blocks.blocks[birth].hash
        try:
            payload = self.node.codec.signing_payload(ext, genesis, birth_hash)
        except ValueError as exc:
            raise Rejected(f"Could not rebuild the signed payload: {exc}", code=1002) from None
        (scheme, signature), *_ = dict(ext.signature or {"?": ""}).items()
        crypto_type = {"Ed25519": 0, "Sr25519": 1, "Ecdsa": 2}.get(scheme)
        if crypto_type is None or ext.signer is None:
            raise Rejected(f"unsupported signature {scheme}")
        public_key = to_public_key(ext.signer).hex()
        verifier = Keypair(public_key=public_key, crypto_type=crypto_type)
        if not verifier.verify(payload, bytes.fromhex(str(signature).removeprefix("0x"))):
            raise Rejected("Transaction has a bad signature")

    def rpc_author_submitExtrinsic(self, connection: Connection, params: Params) -> str:
        ext, _ = self._admit(params)
        return ext.hash

    def rpc_author_submitAndWatchExtrinsic(self, connection: Connection, params: Params) -> Reply:
        _, block = self._admit(params)
        sub = self.node.transport.subscription_id()
        connection.extrinsic_subs.add(sub)

        async def updates() -> None:
            method = "author_extrinsicUpdate"
            await connection.notify(method, sub, "ready")
            await connection.notify(method, sub, {"inBlock": block.hash})
            # Give a client that only waits for inclusion time to unwatch, as on a real chain.
            await asyncio.sleep(self.node.finality_delay_s)
            if sub in connection.extrinsic_subs:
                connection.extrinsic_subs.discard(sub)
                await connection.notify(method, sub, {"finalized": block.hash})

        return Reply(sub, updates)

    def rpc_author_unwatchExtrinsic(self, connection: Connection, params: Params) -> bool:
        sub = str(params[0]) if params else ""
        known = sub in connection.extrinsic_subs
        connection.extrinsic_subs.discard(sub)
        return known

    def rpc_author_pendingExtrinsics(self, connection: Connection, params: Params) -> list[str]:
        return []
