"""Staking as the pipeline sees it: plain data and a Protocol (no bittensor import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shared.errors import ChainUnavailable

RAO_PER_TAO = 1_000_000_000
# bittensor's DEFAULT_PERIOD: a signed extrinsic not included within it can never be.
ERA_PERIOD_BLOCKS = 128

OrderDirection = Literal["add", "remove"]
# The `message` of a stake action whose signed extrinsic was never sent (a `failed` row that
# is no on-chain failure: its nonce is unused).
NOT_SENT_MESSAGE = "not sent"


class ChainNotConnected(ChainUnavailable):
    """No connection to the chain, known before anything was sent: raised by a call that
    never reached the node. From `submit` it proves the extrinsic was not sent (its nonce is
    unused); every other `ChainUnavailable` from `submit` may follow a send. To API callers
    it is the same `chain_unavailable` as any other outage."""


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the stake stage checks before submitting, read at one block."""

    coldkey: str
    free_rao: int  # free TAO balance of the coldkey, in rao
    stake_rao: int  # alpha (rao) staked by the coldkey on (hotkey, netuid)
    alpha_price_rao: int  # TAO rao per 1 alpha (10^9 alpha rao) on netuid; 10^9 on root
    nonce: int  # the coldkey's next nonce (System.Account at `block`)
    block: int
    existential_deposit_rao: int = 500


@dataclass(frozen=True, slots=True)
class StakeOrder:
    """One protected stake call (`add_stake_limit` / `remove_stake_limit`)."""

    direction: OrderDirection
    netuid: int
    hotkey: str
    amount_rao: int  # TAO rao to add, or alpha rao to remove
    limit_price_rao: int  # worst acceptable price, TAO rao per alpha
    allow_partial: bool = False


@dataclass(frozen=True, slots=True)
class SignedStake:
    """A signed, not yet sent extrinsic: what the stage stores before submitting.

    The extrinsic is valid in blocks [era_start_block, era_end_block); its hash is the
    only thing settlement may use to learn whether it was included.
    """

    order: StakeOrder
    extrinsic_hash: str
    nonce: int
    era_start_block: int
    era_end_block: int
    payload: Any = field(default=None, compare=False, repr=False)  # the client's own object


@dataclass(frozen=True, slots=True)
class StakeOutcome:
    """The chain's answer to one extrinsic, from its own events (or the pool's verdict)."""

    success: bool
    message: str
    error_name: str | None = None
    extrinsic_hash: str | None = None
    block_hash: str | None = None
    block: int | None = None
    fee_rao: int | None = None


@dataclass(frozen=True, slots=True)
class Inclusion:
    """The extrinsic is in a finalized block, but its outcome could not be read there:
    no ExtrinsicSuccess / ExtrinsicFailed event for its index, or the block's events
    unreadable (state pruned, an error reply)."""

    block: int
    block_hash: str
    index: int
    problem: str  # why the outcome is unreadable
    transient: bool = False  # an error reply that a later read may not meet (not pruned)


@dataclass(frozen=True, slots=True)
class ExtrinsicSearch:
    """One bounded look for an extrinsic hash in a range of finalized blocks."""

    outcome: StakeOutcome | None  # found: its ExtrinsicSuccess / ExtrinsicFailed outcome
    scanned_to: int  # every block up to here (inclusive) was looked at
    head: int  # the finalized head when the search ran
    included: Inclusion | None = None  # found, outcome unreadable (`outcome` is None)


def limit_price_rao(
    direction: OrderDirection, netuid: int, price_rao: int, tolerance: float
) -> int:
    """The limit price the SDK's safe staking sends: price × (1 ± tolerance), the root
    subnet's fixed price unchanged, converted the way `Balance.from_tao(...).rao` does."""
    if price_rao <= 0:
        raise ValueError(f"no usable price for netuid {netuid} (read {price_rao} rao)")
    if not 0 <= tolerance < 1:
        raise ValueError(f"slippage tolerance must be in [0, 1), got {tolerance}")
    price_tao = price_rao / RAO_PER_TAO
    if netuid != 0:
        price_tao *= 1 + tolerance if direction == "add" else 1 - tolerance
    return int(price_tao * RAO_PER_TAO)


class StakeClient(Protocol):
    """Stake operations of one wallet. Raise only `shared.errors.ChainError` subclasses.

    `sign` sends nothing. `submit` raises `ChainNotConnected` when nothing was sent, and
    `ChainTimeout` / `ChainUnavailable` when the outcome cannot be known (it may have been
    sent, or included with events that cannot be read); a pool refusal or a dispatch error
    is a known failure returned as an outcome. A read that meets an error reply raises
    `ChainUnavailable`: it never stands in for a zero balance or nonce.
    """

    @property
    def coldkey(self) -> str: ...

    async def account(self, netuid: int, hotkey: str) -> AccountState: ...

    async def sign(self, order: StakeOrder) -> SignedStake:
        """Sign with the nonce of System.Account at the head, mortal from the head."""
        ...

    async def submit(self, signed: SignedStake) -> StakeOutcome:
        """Send, wait for finality, read the outcome from the extrinsic's events."""
        ...

    async def find_extrinsic(
        self, extrinsic_hash: str, from_block: int, to_block: int
    ) -> ExtrinsicSearch:
        """Look for the hash in finalized blocks [from_block, to_block], bounded. Found with
        its ExtrinsicSuccess / ExtrinsicFailed event: `outcome`; found without a readable
        one: `included`."""
        ...
