"""The RPC namespaces a Subtensor node answers, and the method table built from them.

One module per namespace group: `system` (node identity, `rpc_methods`), `chain`
(blocks, headers, head subscriptions), `state` (runtime version, metadata, storage,
keys, `state_call`), `author` (the transaction pool, plus the account and payment
queries a client makes before submitting). The devchain's own `dev_*` control methods
are not here: they live in `tests.devchain.control`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.devchain.jsonrpc import Handler
from tests.devchain.rpc.author import AuthorRpc
from tests.devchain.rpc.chain import ChainRpc
from tests.devchain.rpc.state import StateRpc
from tests.devchain.rpc.system import SystemRpc

if TYPE_CHECKING:
    from tests.devchain.node import DevChain

# Other spellings a node (or an older SDK) uses for the same methods.
ALIASES = {
    "chain_getFinalisedHead": "chain_getFinalizedHead",
    "chain_getRuntimeVersion": "state_getRuntimeVersion",
    "state_getStorageAt": "state_getStorage",
    "system_accountNextIndex": "account_nextIndex",
    "chain_subscribeFinalisedHeads": "chain_subscribeFinalizedHeads",
    "chain_unsubscribeFinalisedHeads": "chain_unsubscribeFinalizedHeads",
}


def subtensor_handlers(node: DevChain) -> dict[str, Handler]:
    """method -> handler for every modelled Subtensor RPC method (aliases included)."""
    table: dict[str, Handler] = {}
    for namespace in (SystemRpc(node), ChainRpc(node), StateRpc(node), AuthorRpc(node)):
        handlers = namespace.handlers()
        assert not handlers.keys() & table.keys(), "an RPC method is answered twice"
        table.update(handlers)
    for alias, target in ALIASES.items():
        table[alias] = table[target]
    return table
