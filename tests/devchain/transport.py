"""The node's wire: a websocket server speaking JSON-RPC 2.0 over a table of handlers.

It owns what happens between the socket and a handler: connections and their
subscriptions, parsing, batches, request counting (`dev_*` control calls are not
counted and never misbehave), the connection faults around each handler, error answers
(a handler's own bug is answered as -32603, the connection stays), work that follows a
response frame, and head notifications to subscribers. It knows nothing of Subtensor:
the RPC namespaces answer the methods, the node wires both together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.devchain.codec import blake2_256
from tests.devchain.faults import Faults
from tests.devchain.jsonrpc import After, Handler, Reply, RpcError
from tests.devchain.state import Block

logger = logging.getLogger("devchain")

CONTROL_PREFIX = "dev_"


@dataclass(slots=True, eq=False)
class Connection:
    ws: ServerConnection
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    extrinsic_subs: set[str] = field(default_factory=set)
    head_subs: dict[str, str] = field(default_factory=dict)  # id -> notification method

    async def send(self, payload: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(payload))

    async def notify(self, method: str, subscription: str, result: Any) -> None:
        params = {"subscription": subscription, "result": result}
        await self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def spawn(self, task: asyncio.Task[None]) -> None:
        """Keep `task` until it ends; cancelled when the connection goes away."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Transport:
    """The websocket server of one node, dispatching to `handlers` (method -> handler)."""

    def __init__(self, handlers: Mapping[str, Handler], faults: Faults, *, salt: bytes) -> None:
        self.handlers = dict(handlers)
        self.faults = faults
        self.rpc_counts: Counter[str] = Counter()
        self.state_call_counts: Counter[str] = Counter()
        self.connections: set[Connection] = set()
        self.connections_total = 0
        self._salt = salt
        self._sub_counter = 0
        self._server: Server | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (`port=0` picks a free one)."""
        self._server = await serve(self._serve, host, port, max_size=None, compression=None)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    # ------------------------------------------------------------------ connections
    async def drop_all(self) -> int:
        """Abort every client TCP connection now; returns how many were open."""
        connections = list(self.connections)
        for connection in connections:
            connection.ws.transport.abort()
        await asyncio.sleep(0)
        return len(connections)

    async def close_all(self, code: int = 1000) -> int:
        """Close every client connection cleanly with a close frame."""
        connections = list(self.connections)
        await asyncio.gather(*(c.ws.close(code=code) for c in connections), return_exceptions=True)
        return len(connections)

    # ------------------------------------------------------------------ subscriptions
    def subscription_id(self) -> str:
        self._sub_counter += 1
        return f"0x{blake2_256(self._salt + self._sub_counter.to_bytes(8, 'little')).hex()[:16]}"

    def announce(self, block: Block) -> None:
        """Notify every head subscriber of a new block (no-op outside an event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        header = block.header()
        for connection in list(self.connections):
            for sub, method in list(connection.head_subs.items()):
                connection.spawn(asyncio.create_task(connection.notify(method, sub, header)))

    # ------------------------------------------------------------------ requests
    async def _serve(self, ws: ServerConnection) -> None:
        connection = Connection(ws)
        self.connections.add(connection)
        self.connections_total += 1
        try:
            async for message in ws:
                connection.spawn(asyncio.create_task(self._on_message(connection, message)))
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(connection)
            for task in list(connection.tasks):
                task.cancel()

    async def _on_message(self, connection: Connection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
        except ValueError:
            error = RpcError(-32700, "Parse error").payload()
            await connection.send({"jsonrpc": "2.0", "id": None, "error": error})
            return
        if isinstance(request, list):
            replies = await asyncio.gather(*(self._handle(connection, r) for r in request))
            responses = [response for response, _ in replies if response is not None]
            if responses:
                await connection.send(responses)
            for _, after in replies:
                if after is not None:
                    await after()
            return
        response, after = await self._handle(connection, request)
        if response is not None:
            await connection.send(response)
        if after is not None:
            await after()

    async def _handle(
        self, connection: Connection, request: Any
    ) -> tuple[dict[str, Any] | None, After | None]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            error = RpcError(-32600, "Invalid Request").payload()
            return {"jsonrpc": "2.0", "id": None, "error": error}, None
        method: str = request["method"]
        request_id = request.get("id")
        params = request.get("params") or []
        if not method.startswith(CONTROL_PREFIX):
            self.rpc_counts[method] += 1
            if method == "state_call" and params:
                self.state_call_counts[str(params[0])] += 1
            if await self.faults.before(connection, method):
                return None, None
        base = {"jsonrpc": "2.0", "id": request_id}
        after: After | None = None
        try:
            handler = self.handlers.get(method)
            if handler is None:
                raise RpcError(-32601, "Method not found", method)
            if Faults.take(self.faults.error_on, method):
                raise RuntimeError(f"injected internal error in {method}")
            result = handler(connection, params if isinstance(params, list) else [params])
            if asyncio.iscoroutine(result):
                result = await result
            if Faults.take(self.faults.drop_after, method):
                connection.ws.transport.abort()
                return None, None
            if isinstance(result, Reply):
                result, after = result.result, result.after
            return {**base, "result": result}, after
        except RpcError as exc:
            return {**base, "error": exc.payload()}, None
        except Exception as exc:  # never drop the connection on our own bug: answer it
            logger.exception("devchain internal error in %s", method)
            internal = RpcError(-32603, "Internal error", f"{type(exc).__name__}: {exc}")
            return {**base, "error": internal.payload()}, None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for 'chain unreachable' scenarios)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
