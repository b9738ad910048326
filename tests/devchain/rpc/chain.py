"""`chain_*`: block hashes, headers, bodies and head subscriptions.

Finality is instant, so the finalized head is the head and every head subscription
(new, finalized, all) gets the current head at once and each sealed block after it
(the transport announces them). Unknown blocks answer `null`, as a node does.
"""

from __future__ import annotations

from typing import Any

from tests.devchain.jsonrpc import Namespace, Params, Reply
from tests.devchain.transport import Connection


class ChainRpc(Namespace):
    def rpc_chain_getHead(self, connection: Connection, params: Params) -> str:
        return self.node.head.hash

    def rpc_chain_getFinalizedHead(self, connection: Connection, params: Params) -> str:
        return self.node.head.hash

    def rpc_chain_getBlockHash(self, connection: Connection, params: Params) -> Any:
        number = params[0] if params else None
        blocks = self.node.blocks.blocks

        def one(value: Any) -> str | None:
            if value is None:
                return self.node.head.hash
            index = int(value, 16) if isinstance(value, str) else int(value)
            return blocks[index].hash if 0 <= index < len(blocks) else None

        return [one(n) for n in number] if isinstance(number, list) else one(number)

    def rpc_chain_getHeader(self, connection: Connection, params: Params) -> dict[str, Any] | None:
        block_hash = params[0] if params else None
        block = self.node.head if block_hash is None else self.node.blocks.by_hash.get(block_hash)
        return None if block is None else block.header()

    def rpc_chain_getBlock(self, connection: Connection, params: Params) -> dict[str, Any] | None:
        block_hash = params[0] if params else None
        block = self.node.head if block_hash is None else self.node.blocks.by_hash.get(block_hash)
        if block is None:
            return None
        body = {"header": block.header(), "extrinsics": list(block.extrinsics)}
        return {"block": body, "justifications": None}

    def _subscribe_heads(self, connection: Connection, method: str) -> Reply:
        sub = self.node.transport.subscription_id()
        connection.head_subs[sub] = method

        async def first_head() -> None:
            await connection.notify(method, sub, self.node.head.header())

        return Reply(sub, first_head)

    def rpc_chain_subscribeNewHeads(self, connection: Connection, params: Params) -> Reply:
        return self._subscribe_heads(connection, "chain_newHead")

    def rpc_chain_subscribeFinalizedHeads(self, connection: Connection, params: Params) -> Reply:
        return self._subscribe_heads(connection, "chain_finalizedHead")

    def rpc_chain_subscribeAllHeads(self, connection: Connection, params: Params) -> Reply:
        return self._subscribe_heads(connection, "chain_allHead")

    def _unsubscribe_heads(self, connection: Connection, params: Params) -> bool:
        return connection.head_subs.pop(str(params[0]) if params else "", None) is not None

    rpc_chain_unsubscribeNewHeads = _unsubscribe_heads
    rpc_chain_unsubscribeFinalizedHeads = _unsubscribe_heads
    rpc_chain_unsubscribeAllHeads = _unsubscribe_heads
