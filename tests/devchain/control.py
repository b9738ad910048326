"""The node's control API: `dev_*` RPC methods for other processes (scripts, the demo).

Each method calls the same in-process API a test uses (`DevChain.fund`, `.stall`, ...),
so a node in another process can be steered exactly like one in the test's own loop.
They are not Subtensor methods: the transport neither counts them nor applies faults to
them, and `rpc_methods` does not list them.
"""

from __future__ import annotations

from typing import Any

from tests.devchain.jsonrpc import Namespace, Params, RpcError
from tests.devchain.transport import Connection


class ControlRpc(Namespace):
    def rpc_dev_counts(self, connection: Connection, params: Params) -> dict[str, Any]:
        return self.node.counts()

    def rpc_dev_resetCounts(self, connection: Connection, params: Params) -> bool:
        self.node.reset_counts()
        return True

    def rpc_dev_fund(self, connection: Connection, params: Params) -> int:
        address, tao = str(params[0]), float(params[1])
        self.node.fund(address, tao)
        return self.node.balance(address)

    def rpc_dev_balance(self, connection: Connection, params: Params) -> int:
        return self.node.balance(str(params[0]))

    def rpc_dev_stake(self, connection: Connection, params: Params) -> int:
        return self.node.stake(str(params[0]), str(params[1]), int(params[2]))

    def rpc_dev_addSubnet(self, connection: Connection, params: Params) -> list[int]:
        price_tao = float(params[1]) if len(params) > 1 else 1.0
        self.node.add_subnet(int(params[0]), price_tao=price_tao)
        return self.node.subnets()

    def rpc_dev_setPrice(self, connection: Connection, params: Params) -> int:
        self.node.set_price(int(params[0]), float(params[1]))
        return self.node.price(int(params[0]))

    def rpc_dev_setDividend(self, connection: Connection, params: Params) -> int:
        netuid, hotkey, amount = int(params[0]), str(params[1]), params[2]
        storage = str(params[3]) if len(params) > 3 and params[3] else None
        value = None if amount is None else int(amount)
        self.node.set_dividend(netuid, hotkey, value, storage=storage)
        return self.node.dividend(netuid, hotkey, storage=storage)

    def rpc_dev_sealBlock(self, connection: Connection, params: Params) -> str:
        return self.node.seal_block()

    def rpc_dev_applied(self, connection: Connection, params: Params) -> list[dict[str, Any]]:
        return [
            {
                "block": a.block,
                "index": a.index,
                "hash": a.hash,
                "signer": a.signer,
                "call": f"{a.pallet}.{a.call}",
                "args": {
                    k: v if isinstance(v, int | str | bool) else str(v) for k, v in a.args.items()
                },
                "success": a.success,
                "error": a.error,
                "fee": a.fee,
            }
            for a in self.node.applied
        ]

    def rpc_dev_fault(self, connection: Connection, params: Params) -> bool:
        """["stall", methods...] | ["unstall"] | ["delay", seconds, methods...] |
        ["drop_on", method] | ["close_on", method] | ["error_on", method] |
        ["error_storage", pallet, name, times?] |
        ["fail_next", ErrorName] | ["reject_next", data?] | ["drop_after", method] |
        ["move_price", netuid, price_tao] | ["clear"]"""
        node = self.node
        kind, rest = (str(params[0]), params[1:]) if params else ("", [])
        if kind == "stall":
            node.stall(*map(str, rest))
        elif kind == "unstall":
            node.unstall()
        elif kind == "delay":
            node.delay(float(rest[0]), *map(str, rest[1:]))
        elif kind in ("drop_on", "close_on", "error_on", "drop_after"):
            getattr(node, kind)(str(rest[0]) if rest else "*")
        elif kind == "error_storage":
            node.error_on_storage(str(rest[0]), str(rest[1]), int(rest[2]) if len(rest) > 2 else 1)
        elif kind == "fail_next":
            node.fail_next_extrinsic(str(rest[0]))
        elif kind == "reject_next":
            node.reject_next_extrinsic(*map(str, rest[:1]))
        elif kind == "move_price":
            node.move_price_on_next_extrinsic(int(rest[0]), float(rest[1]))
        elif kind == "clear":
            node.clear_faults()
        else:
            raise RpcError(-32602, "Invalid params", f"unknown fault {kind!r}")
        return True
