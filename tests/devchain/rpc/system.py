"""`system_*` and `rpc_methods`: what the node says about itself.

A development chain called Bittensor (ss58 42, 9 decimals, TAO) with no peers;
`rpc_methods` lists every answered method except the `dev_*` control methods.
"""

from __future__ import annotations

from typing import Any

from tests.devchain.jsonrpc import Namespace, Params
from tests.devchain.transport import CONTROL_PREFIX, Connection


class SystemRpc(Namespace):
    def rpc_rpc_methods(self, connection: Connection, params: Params) -> dict[str, Any]:
        handlers = self.node.transport.handlers
        names = sorted(name for name in handlers if not name.startswith(CONTROL_PREFIX))
        return {"version": 1, "methods": names}

    def rpc_system_chain(self, connection: Connection, params: Params) -> str:
        return "Bittensor"

    def rpc_system_name(self, connection: Connection, params: Params) -> str:
        return "devchain"

    def rpc_system_version(self, connection: Connection, params: Params) -> str:
        return f"devchain-spec{self.node.spec}"

    def rpc_system_chainType(self, connection: Connection, params: Params) -> str:
        return "Development"

    def rpc_system_properties(self, connection: Connection, params: Params) -> dict[str, Any]:
        return {"ss58Format": 42, "tokenDecimals": 9, "tokenSymbol": "TAO"}

    def rpc_system_health(self, connection: Connection, params: Params) -> dict[str, Any]:
        return {"peers": 0, "isSyncing": False, "shouldHavePeers": False}
