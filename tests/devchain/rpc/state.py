"""`state_*`: runtime version, metadata, storage reads, key paging and runtime-API calls.

Reads take an optional block hash and see that block's state (`BlockStore.at` refuses
unknown and pruned blocks). Storage is served as the raw SCALE bytes the model wrote;
`state_getKeysPaged` pages like a node (max 1000, start key exclusive). `state_call`
answers the metadata calls from the recorded blobs and every other runtime API through
`RuntimeApis`, decoding and encoding with the runtime's own types.
"""

from __future__ import annotations

from typing import Any

from tests.devchain.jsonrpc import Namespace, Params, RpcError, hex_bytes
from tests.devchain.transport import Connection

MAX_KEYS_PAGE = 1000


class StateRpc(Namespace):
    def rpc_state_getRuntimeVersion(self, connection: Connection, params: Params) -> dict[str, Any]:
        if params and params[0] is not None:
            self.node.blocks.at(params[0])
        return {
            "specName": "node-subtensor",
            "implName": "node-subtensor",
            "authoringVersion": 1,
            "specVersion": self.node.spec,
            "implVersion": 1,
            "apis": [],
            "transactionVersion": self.node.codec.runtime.transaction_version,
            "stateVersion": 1,
        }

    def rpc_state_getMetadata(self, connection: Connection, params: Params) -> str:
        return self.node.metadata_hex

    def rpc_state_getStorage(self, connection: Connection, params: Params) -> str | None:
        if not params:
            raise RpcError(-32602, "Invalid params", "expected [key, block_hash?]")
        state = self.node.blocks.at(params[1] if len(params) > 1 else None).state
        assert state is not None
        self.node.faults.check_storage([hex_bytes(params[0])])
        value = state.storage.get(hex_bytes(params[0]))
        return None if value is None else "0x" + value.hex()

    def rpc_state_queryStorageAt(
        self, connection: Connection, params: Params
    ) -> list[dict[str, Any]]:
        if not params or not isinstance(params[0], list):
            raise RpcError(-32602, "Invalid params", "expected [[keys], block_hash?]")
        block = self.node.blocks.at(params[1] if len(params) > 1 else None)
        assert block.state is not None
        self.node.faults.check_storage(hex_bytes(key) for key in params[0])
        changes = []
        for key in params[0]:
            value = block.state.storage.get(hex_bytes(key))
            changes.append([key, None if value is None else "0x" + value.hex()])
        return [{"block": block.hash, "changes": changes}]

    def rpc_state_getKeysPaged(self, connection: Connection, params: Params) -> list[str]:
        if len(params) < 2:
            raise RpcError(-32602, "Invalid params", "expected [prefix, count, start?, hash?]")
        prefix = hex_bytes(params[0] or "0x")
        count = int(params[1])
        if count > MAX_KEYS_PAGE:
            raise RpcError(
                -32602, f"count exceeds maximum value. value: {count}, max: {MAX_KEYS_PAGE}"
            )
        start = hex_bytes(params[2]) if len(params) > 2 and params[2] else None
        state = self.node.blocks.at(params[3] if len(params) > 3 else None).state
        assert state is not None
        return ["0x" + key.hex() for key in state.storage.keys_paged(prefix, count, start)]

    def rpc_state_getKeys(self, connection: Connection, params: Params) -> list[str]:
        state = self.node.blocks.at(params[1] if len(params) > 1 else None).state
        assert state is not None
        prefix = hex_bytes(params[0] if params else "0x")
        return ["0x" + key.hex() for key in state.storage.keys_with_prefix(prefix)]

    def rpc_state_call(self, connection: Connection, params: Params) -> str:
        if len(params) < 2:
            raise RpcError(-32602, "Invalid params", "expected [method, data, block_hash?]")
        name, data = str(params[0]), hex_bytes(params[1] or "0x")
        block = self.node.blocks.at(params[2] if len(params) > 2 else None)
        assert block.state is not None
        node, codec = self.node, self.node.codec
        if name == "Metadata_metadata_at_version":
            version = int.from_bytes(data[:4], "little") if data else 0
            if version == 15 and node.serve_v15:
                return node.metadata_v15_hex
            if version == codec.blobs.raw[4] and not node.serve_v15:
                return "0x01" + self._compact_len(codec.blobs.raw) + node.metadata_hex[2:]
            return "0x00"
        if name == "Metadata_metadata_versions":
            return "0x" + codec.encode("Vec<u32>", [14, 15] if node.serve_v15 else [14]).hex()
        if name == "Metadata_metadata":
            return "0x" + self._compact_len(codec.blobs.raw) + node.metadata_hex[2:]
        try:
            codec.runtime_api(name)
        except KeyError:
            raise RpcError(
                -32000,
                f"Client error: Execution failed: Other: Exported method {name} is not found",
            ) from None
        call_params = codec.decode_api_params(name, data)
        try:
            answer = node.runtime_apis.call(block.state, name, call_params)
        except LookupError:
            raise RpcError(-32601, f"devchain does not model runtime API {name}") from None
        return "0x" + codec.encode_api_result(name, answer).hex()

    def _compact_len(self, data: bytes) -> str:
        return self.node.codec.encode("Compact<u32>", len(data)).hex()
