"""A simulated Subtensor node for tests, benchmarks and the offline demo (see README.md)."""

from tests.devchain.fixtures import FIXTURES_HINT, SPECS, FixturesNotFound, fixtures_dir
from tests.devchain.jsonrpc import RpcError
from tests.devchain.node import DevChain
from tests.devchain.transport import free_port

__all__ = [
    "FIXTURES_HINT",
    "SPECS",
    "DevChain",
    "FixturesNotFound",
    "RpcError",
    "fixtures_dir",
    "free_port",
]
