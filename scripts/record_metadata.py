"""Record a Subtensor node's runtime metadata for the simulated node (tests/devchain).

    .venv/bin/python scripts/record_metadata.py [--network test] [--out data/chain-fixtures]

Asks the node behind `--network` (default: BITTENSOR_NETWORK from the environment or
.env; a name such as finney, test, local, or a ws:// or wss:// URL) for, at its finalized
head: `state_getRuntimeVersion`, `state_call Metadata_metadata_at_version 0x0f000000` and
`state_getMetadata`. It writes the answers in the format of the reference kit
(../shared/chain-fixtures), keyed by the spec_version the node reports:

    spec{N}_v15_metadata_at_version.hex   exact JSON-RPC result (Option<OpaqueMetadata>)
    spec{N}_v{V}_state_getMetadata.hex    exact JSON-RPC result (V = metadata version, 14)
    spec{N}_recorded.json                 where and when it was recorded

Each file is written atomically (temporary file, then rename), the V15 file last: a
directory never holds half a recording under a name the simulated node would pick up.
Every network step has a bounded timeout. Exit status 0 on success, 1 when the node could
not be reached or answered something unusable (the reason is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.devchain.fixtures import METADATA_FILE, V15_FILE  # noqa: E402

DEFAULT_OUT = ROOT / "data" / "chain-fixtures"
DEFAULT_TIMEOUT_S = 30.0
V15_REQUEST = "0x0f000000"  # u32 15, little endian
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # metadata is ~0.6 MB of hex today


class RecordError(Exception):
    """The node could not be reached, or its answers cannot be recorded."""


@dataclass(frozen=True, slots=True)
class Answers:
    """What the node answered, checked; the strings exactly as received."""

    network: str
    endpoint: str
    block_hash: str
    runtime_version: dict[str, Any]
    spec: int
    v15: str
    metadata: str
    metadata_version: int


@dataclass(frozen=True, slots=True)
class Recording:
    spec: int
    directory: Path
    files: tuple[Path, ...]
    endpoint: str
    block_hash: str


def resolve_network(network: str) -> str:
    """The websocket URL for a network name or URL, resolved the way bittensor (and so
    shared/chain) resolves `BITTENSOR_NETWORK`."""
    from bittensor.utils import determine_chain_endpoint_and_network

    _, endpoint = determine_chain_endpoint_and_network(network)
    if not endpoint or not endpoint.startswith(("ws://", "wss://")):
        raise RecordError(
            f"{network!r} is neither a network name (finney, test, archive, local) "
            "nor a ws:// or wss:// URL"
        )
    return endpoint


def redact(url: str) -> str:
    """The endpoint without credentials or query (a provider key can live in either)."""
    from shared.chain.subtensor import redact_url

    return redact_url(url)


class _Client:
    """The few JSON-RPC calls the recording needs, each bounded by `timeout_s`."""

    def __init__(self, ws: Any, timeout_s: float) -> None:
        self._ws = ws
        self._timeout_s = timeout_s
        self._next_id = 0

    async def call(self, method: str, *params: Any) -> Any:
        self._next_id += 1
        request_id = self._next_id
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        await asyncio.wait_for(self._ws.send(json.dumps(request)), self._timeout_s)
        deadline = time.monotonic() + self._timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer within {self._timeout_s:g}s")
            try:
                message = await asyncio.wait_for(self._ws.recv(), left)
            except TimeoutError:
                raise TimeoutError(f"{method}: no answer within {self._timeout_s:g}s") from None
            reply = json.loads(message)
            if not isinstance(reply, dict) or reply.get("id") != request_id:
                continue  # a notification or a late answer
            if reply.get("error") is not None:
                error = reply["error"]
                detail = error.get("message", error) if isinstance(error, dict) else error
                raise RecordError(f"{method} answered an error: {detail}")
            return reply.get("result")


async def fetch(endpoint: str, timeout_s: float) -> tuple[dict[str, Any], str, str, str]:
    """(runtime version, V15 answer, state_getMetadata answer, block hash) from the node."""
    from websockets.asyncio.client import connect

    async with connect(
        endpoint,
        open_timeout=timeout_s,
        close_timeout=2,
        max_size=MAX_MESSAGE_BYTES,
        ping_interval=None,
    ) as ws:
        client = _Client(ws, timeout_s)
        block_hash = await client.call("chain_getFinalizedHead")
        if not isinstance(block_hash, str):
            raise RecordError(f"chain_getFinalizedHead answered {block_hash!r}")
        version = await client.call("state_getRuntimeVersion", block_hash)
        v15 = await client.call(
            "state_call", "Metadata_metadata_at_version", V15_REQUEST, block_hash
        )
        metadata = await client.call("state_getMetadata", block_hash)
    if not isinstance(version, dict):
        raise RecordError(f"state_getRuntimeVersion answered {version!r}")
    return version, v15, metadata, block_hash


def _hex_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RecordError(f"{what} is not a 0x hex string")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RecordError(f"{what} is not a 0x hex string") from None


def check_answers(version: dict[str, Any], v15: Any, metadata: Any) -> tuple[int, int]:
    """(spec_version, state_getMetadata's metadata version) when the answers are usable."""
    spec = version.get("specVersion")
    if not isinstance(spec, int) or isinstance(spec, bool) or spec < 0:
        raise RecordError(f"state_getRuntimeVersion has no usable specVersion: {spec!r}")
    option = _hex_bytes(v15, "the Metadata_metadata_at_version answer")
    if option == b"\x00":
        raise RecordError(
            "the node does not serve V15 metadata (Metadata_metadata_at_version(15) "
            "answered None); the simulated node needs V15 for the staking runtime APIs"
        )
    # Some(Vec<u8>): 0x01, a compact length, then the metadata (`meta` magic, version 15).
    if option[:1] != b"\x01" or b"meta\x0f" not in option[:16]:
        raise RecordError("the Metadata_metadata_at_version answer is not Some(V15 metadata)")
    raw = _hex_bytes(metadata, "the state_getMetadata answer")
    if not raw.startswith(b"meta") or len(raw) < 5:
        raise RecordError("the state_getMetadata answer is not runtime metadata")
    return spec, raw[4]


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the whole new one."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes it 0600; nothing here is secret
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def fetch_answers(network: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Answers:
    """Ask the node behind `network`; every step bounded by `timeout_s`."""
    endpoint = resolve_network(network)
    try:
        version, v15, metadata, block_hash = await asyncio.wait_for(
            fetch(endpoint, timeout_s), timeout_s * 5
        )
    except RecordError:
        raise
    except TimeoutError as exc:
        raise RecordError(f"TimeoutError: {exc or f'no answer within {timeout_s:g}s'}") from None
    except Exception as exc:  # DNS, refused connection, TLS, handshake, closed connection...
        raise RecordError(f"{type(exc).__name__}: {exc}") from None
    spec, metadata_version = check_answers(version, v15, metadata)
    return Answers(network, endpoint, block_hash, version, spec, v15, metadata, metadata_version)


def save(answers: Answers, directory: Path) -> Recording:
    """Write the answers in the kit's format, each file atomically, the V15 file last."""
    spec = answers.spec
    directory.mkdir(parents=True, exist_ok=True)
    v15_path = directory / V15_FILE.format(spec=spec)
    metadata_path = directory / METADATA_FILE.format(spec=spec, version=answers.metadata_version)
    info_path = directory / f"spec{spec}_recorded.json"
    info = {
        "network": redact(answers.network),
        "endpoint": redact(answers.endpoint),
        "block_hash": answers.block_hash,
        "runtime_version": answers.runtime_version,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomically(metadata_path, answers.metadata)
    write_atomically(info_path, json.dumps(info, indent=2) + "\n")
    write_atomically(v15_path, answers.v15)  # last: its presence is what makes spec N known
    return Recording(
        spec, directory, (v15_path, metadata_path, info_path), answers.endpoint, answers.block_hash
    )


def record(network: str, directory: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Recording:
    """Record the runtime of the node behind `network` into `directory` (not from a running
    event loop). Raises RecordError (node) or OSError (directory)."""
    return save(asyncio.run(fetch_answers(network, timeout_s=timeout_s)), directory)


def default_network() -> str:
    from shared.settings import Settings

    return Settings().bittensor_network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/record_metadata.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--network", help="network name or ws(s):// URL (default: BITTENSOR_NETWORK)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"directory (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per network step"
    )
    args = parser.parse_args(argv)
    network = args.network or default_network()
    try:
        done = record(network, args.out, timeout_s=args.timeout)
    except RecordError as exc:
        print(f"record_metadata: cannot record from {redact(network)}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"record_metadata: cannot write into {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"recorded runtime spec {done.spec} from {redact(done.endpoint)} into {done.directory}")
    for path in done.files:
        print(f"  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
