"""The JSON-RPC 2.0 vocabulary shared by the transport and the RPC namespaces.

A handler is `handler(connection, params) -> result`; it raises `RpcError` for an error
answer and returns a `Reply` when work must follow the response frame (a subscription's
first notification). A `Namespace` groups handlers: each `rpc_<method>` attribute answers
`<method>`. Kept apart so the namespaces need not import the websocket plumbing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.devchain.node import DevChain
    from tests.devchain.transport import Connection

Params = list[Any]
After = Callable[[], Awaitable[None]]
Handler = Callable[["Connection", Params], Any]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def payload(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(slots=True)
class Reply:
    """A handler's result plus work to run after the response frame has been sent."""

    result: Any
    after: After | None = None


class Namespace:
    """A group of RPC methods over one node: every `rpc_<method>` attribute answers `<method>`."""

    PREFIX = "rpc_"

    def __init__(self, node: DevChain) -> None:
        self.node = node

    def handlers(self) -> dict[str, Handler]:
        return {
            name.removeprefix(self.PREFIX): getattr(self, name)
            for name in dir(self)
            if name.startswith(self.PREFIX)
        }


def hex_bytes(value: Any) -> bytes:
    """A `0x` hex parameter as bytes; anything else is an invalid-params error."""
    text = str(value)
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise RpcError(-32602, "Invalid params", f"not hex: {text[:80]}") from None
