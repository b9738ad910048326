"""What the simulated runtime does: accounts, subnets, dividends, stakes, staking, events.

Everything operates on one `WorldState` (a block's state) and reads or writes storage
through `RuntimeCodec`, so the bytes are exactly what the SDK expects for the runtime
that is served. Staking is modelled at a fixed price per subnet (no AMM, no slippage):
alpha = tao * 10**9 // price and tao = alpha * price // 10**9. The runtime-API answers
built on this model live in `runtime_api`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.devchain.codec import DecodedExtrinsic, RuntimeCodec, to_ss58
from tests.devchain.state import WorldState

RAO = 10**9
PALLET = "SubtensorModule"
DIVIDEND_STORAGES = (
    "TaoDividendsPerSubnet",
    "RootAlphaDividendsPerSubnet",
    "AlphaDividendsPerSubnet",
)
STAKING_CALLS = frozenset({"add_stake", "remove_stake", "add_stake_limit", "remove_stake_limit"})
# The weight reported in DispatchInfo; any plausible value works for the SDK.
CALL_WEIGHT = {"ref_time": 1_000_000_000, "proof_size": 10_000}


class Rejected(Exception):
    """The transaction pool refuses the extrinsic: answered as a JSON-RPC error."""

    def __init__(self, data: str, *, code: int = 1010, message: str = "Invalid Transaction"):
        super().__init__(f"{message}: {data}")
        self.code = code
        self.message = message
        self.data = data


class DispatchFailed(Exception):
    """The extrinsic is included but its call fails with a module error."""

    def __init__(self, error: str, pallet: str = PALLET) -> None:
        super().__init__(f"{pallet}.{error}")
        self.error = error
        self.pallet = pallet


@dataclass(slots=True)
class Applied:
    """One extrinsic as executed in a block (kept by the node for tests to inspect)."""

    block: int
    index: int
    hash: str
    signer: str | None
    pallet: str
    call: str
    args: dict[str, Any]
    success: bool
    error: str | None = None
    fee: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


class SubtensorLogic:
    """The subset of Subtensor the project touches, over raw storage."""

    def __init__(self, codec: RuntimeCodec, *, fee_rao: int) -> None:
        self.codec = codec
        self.fee_rao = fee_rao
        self.dividend_storages = tuple(
            name for name in DIVIDEND_STORAGES if codec.has_storage(PALLET, name)
        )
        # What SubtensorChain reads in "auto" mode: Tao... where present, else RootAlpha...
        self.default_dividend_storage = self.dividend_storages[0]
        self._account_type = int(codec.value_type("System", "Account").split("::")[1])
        self._events_key = codec.storage_key("System", "Events")
        self._fee_event = codec.has_event("TransactionPayment", "TransactionFeePaid")
        self._withdraw_event = codec.has_event("Balances", "Withdraw")
        networks = codec.storage_function(PALLET, "NetworksAdded")
        self._netuid_type = str(networks.get_params_type_string()[0])
        self._networks_prefix = codec.storage_key(PALLET, "NetworksAdded")

    # ------------------------------------------------------------------ accounts
    def account(self, state: WorldState, address: str) -> dict[str, Any]:
        key = self.codec.storage_key("System", "Account", [to_ss58(address)])
        raw = state.storage.get(key)
        if raw is None:
            return dict(self.codec.zero(self._account_type))
        return dict(self.codec.decode_value("System", "Account", raw))

    def _put_account(self, state: WorldState, address: str, info: dict[str, Any]) -> None:
        key = self.codec.storage_key("System", "Account", [to_ss58(address)])
        state.storage.set(key, self.codec.encode_value("System", "Account", info))

    def free(self, state: WorldState, address: str) -> int:
        return int(self.account(state, address)["data"]["free"])

    def set_free(self, state: WorldState, address: str, rao: int) -> None:
        if rao < 0:
            raise ValueError("balance cannot be negative")
        info = self.account(state, address)
        info["data"] = {**info["data"], "free": rao}
        info["providers"] = max(int(info.get("providers", 0)), 1)
        self._put_account(state, address, info)

    def nonce(self, state: WorldState, address: str) -> int:
        return int(self.account(state, address)["nonce"])

    def set_nonce(self, state: WorldState, address: str, nonce: int) -> None:
        info = self.account(state, address)
        info["nonce"] = nonce
        self._put_account(state, address, info)

    # ------------------------------------------------------------------ subnets, prices
    def subnets(self, state: WorldState) -> list[int]:
        found = []
        for key in state.storage.keys_with_prefix(self._networks_prefix):
            netuid = int(self.codec.decode(self._netuid_type, key[len(self._networks_prefix) :]))
            if self.codec.decode_value(PALLET, "NetworksAdded", state.storage.get(key)):
                found.append(netuid)
        return sorted(found)

    def subnet_exists(self, state: WorldState, netuid: int) -> bool:
        key = self.codec.storage_key(PALLET, "NetworksAdded", [netuid])
        return bool(self.codec.decode_value(PALLET, "NetworksAdded", state.storage.get(key)))

    def set_subnet(self, state: WorldState, netuid: int, added: bool, price_rao: int) -> None:
        key = self.codec.storage_key(PALLET, "NetworksAdded", [netuid])
        if added:
            state.storage.set(key, self.codec.encode_value(PALLET, "NetworksAdded", True))
            state.prices.setdefault(netuid, RAO if netuid == 0 else price_rao)
        else:
            state.storage.delete(key)

    def price(self, state: WorldState, netuid: int) -> int:
        """Rao of TAO per one alpha; root (netuid 0) is always 1 TAO."""
        if netuid == 0:
            return RAO
        return state.prices.get(netuid, RAO)

    def tao_to_alpha(self, state: WorldState, netuid: int, tao: int) -> int:
        return tao * RAO // self.price(state, netuid)

    def alpha_to_tao(self, state: WorldState, netuid: int, alpha: int) -> int:
        return alpha * self.price(state, netuid) // RAO

    # ------------------------------------------------------------------ dividends
    def storage_name(self, storage: str | None) -> str:
        name = storage or self.default_dividend_storage
        if name not in self.dividend_storages:
            raise KeyError(
                f"{PALLET}.{name} is not in spec {self.codec.spec}; "
                f"this runtime has {', '.join(self.dividend_storages)}"
            )
        return name

    def set_dividend(
        self, state: WorldState, netuid: int, hotkey: str, amount: int | None, storage: str | None
    ) -> None:
        name = self.storage_name(storage)
        key = self.codec.storage_key(PALLET, name, [netuid, to_ss58(hotkey)])
        if amount is None:
            state.storage.delete(key)
        else:
            state.storage.set(key, self.codec.encode_value(PALLET, name, amount))

    def dividend(self, state: WorldState, netuid: int, hotkey: str, storage: str | None) -> int:
        name = self.storage_name(storage)
        key = self.codec.storage_key(PALLET, name, [netuid, to_ss58(hotkey)])
        return int(self.codec.decode_value(PALLET, name, state.storage.get(key)) or 0)

    def dividends(self, state: WorldState, netuid: int, storage: str | None) -> dict[str, int]:
        """Every stored (hotkey -> amount) of one subnet, decoded from the raw keys."""
        name = self.storage_name(storage)
        prefix = self.codec.storage_key(PALLET, name, [netuid])
        found: dict[str, int] = {}
        for key in state.storage.keys_with_prefix(prefix):
            hotkey = to_ss58(key[len(prefix) + 16 :])  # Blake2_128Concat: 16-byte hash, then key
            found[hotkey] = int(self.codec.decode_value(PALLET, name, state.storage.get(key)))
        return found

    # ------------------------------------------------------------------ stakes
    def stake(self, state: WorldState, coldkey: str, hotkey: str, netuid: int) -> int:
        return state.stakes.get((to_ss58(coldkey), to_ss58(hotkey), netuid), 0)

    def set_stake(
        self, state: WorldState, coldkey: str, hotkey: str, netuid: int, alpha: int
    ) -> None:
        key = (to_ss58(coldkey), to_ss58(hotkey), netuid)
        if alpha:
            state.stakes[key] = alpha
        else:
            state.stakes.pop(key, None)

    # ------------------------------------------------------------------ extrinsics
    def check(self, state: WorldState, ext: DecodedExtrinsic) -> None:
        """Pool validation; raises `Rejected` for what a real pool refuses."""
        if not ext.signed or ext.signer is None:
            raise Rejected("devchain accepts signed extrinsics only", code=1002)
        if ext.pallet != PALLET or ext.call not in STAKING_CALLS:
            raise Rejected(
                f"devchain does not model {ext.pallet}.{ext.call}; "
                f"modelled: {', '.join(sorted(STAKING_CALLS))}"
            )
        nonce = self.nonce(state, ext.signer)
        if ext.nonce < nonce:
            raise Rejected("Transaction is outdated")
        if ext.nonce > nonce:
            raise Rejected(f"Transaction is future (nonce {ext.nonce}, account nonce {nonce})")
        if self.free(state, ext.signer) < self.fee_rao + ext.tip:
            raise Rejected("Inability to pay some fees (e.g. account balance too low)")
        if ext.call in ("add_stake_limit", "remove_stake_limit"):
            netuid = int(ext.args["netuid"])
            price = self.price(state, netuid)
            limit = int(ext.args["limit_price"])
            over = price > limit if ext.call == "add_stake_limit" else price < limit
            if over and self.subnet_exists(state, netuid):
                # Subtensor's transaction extension rejects a price beyond the limit.
                raise Rejected("Custom error: 8")

    def apply(
        self,
        state: WorldState,
        ext: DecodedExtrinsic,
        index: int,
        block: int,
        forced_error: DispatchFailed | None = None,
    ) -> Applied:
        """Execute an admitted extrinsic: nonce and fee always, the call only if it succeeds."""
        assert ext.signer is not None
        signer = ext.signer
        fee = self.fee_rao + ext.tip
        info = self.account(state, signer)
        info["nonce"] = int(info["nonce"]) + 1
        info["data"] = {**info["data"], "free": int(info["data"]["free"]) - fee}
        self._put_account(state, signer, info)

        phase = {"ApplyExtrinsic": index}
        records: list[dict[str, Any]] = []
        if self._withdraw_event and fee:
            records.append(
                self._event(phase, "Balances", "Withdraw", {"who": signer, "amount": fee})
            )
        error: DispatchFailed | None = forced_error
        if error is None:
            try:
                records.extend(self._dispatch(state, signer, ext, phase))
            except DispatchFailed as failed:
                error = failed
        if self._fee_event:
            records.append(
                self._event(
                    phase,
                    "TransactionPayment",
                    "TransactionFeePaid",
                    {"who": signer, "actual_fee": fee, "tip": ext.tip},
                )
            )
        dispatch_info = {"weight": CALL_WEIGHT, "class": "Normal", "pays_fee": "Yes"}
        if error is None:
            records.append(
                self._event(phase, "System", "ExtrinsicSuccess", {"dispatch_info": dispatch_info})
            )
        else:
            pallet_index, error_index, _ = self.codec.module_error(error.error, error.pallet)
            dispatch_error = {
                "Module": {"index": pallet_index, "error": f"0x{error_index:02x}000000"}
            }
            records.append(
                self._event(
                    phase,
                    "System",
                    "ExtrinsicFailed",
                    {"dispatch_error": dispatch_error, "dispatch_info": dispatch_info},
                )
            )
        return Applied(
            block=block,
            index=index,
            hash=ext.hash,
            signer=signer,
            pallet=ext.pallet,
            call=ext.call,
            args=dict(ext.args),
            success=error is None,
            error=None if error is None else error.error,
            fee=fee,
            events=records,
        )

    def _dispatch(
        self, state: WorldState, coldkey: str, ext: DecodedExtrinsic, phase: dict[str, int]
    ) -> list[dict[str, Any]]:
        args = ext.args
        hotkey = to_ss58(args["hotkey"])
        netuid = int(args["netuid"])
        if not self.subnet_exists(state, netuid):
            raise DispatchFailed("SubnetNotExists")
        if ext.call in ("add_stake_limit", "remove_stake_limit"):
            price, limit = self.price(state, netuid), int(args["limit_price"])
            beyond = price > limit if ext.call == "add_stake_limit" else price < limit
            if beyond and netuid != 0 and not args.get("allow_partial"):
                # The price moved past the limit after the pool admitted the extrinsic.
                raise DispatchFailed("SlippageTooHigh")
        if ext.call in ("add_stake", "add_stake_limit"):
            tao = int(args["amount_staked"])
            if tao == 0:
                raise DispatchFailed("AmountTooLow")
            free = self.free(state, coldkey)
            if free < tao:
                raise DispatchFailed("NotEnoughBalanceToStake")
            alpha = self.tao_to_alpha(state, netuid, tao)
            self.set_free(state, coldkey, free - tao)
            self.set_stake(
                state, coldkey, hotkey, netuid, self.stake(state, coldkey, hotkey, netuid) + alpha
            )
            event = "StakeAdded"
        else:
            alpha = int(args["amount_unstaked"])
            if alpha == 0:
                raise DispatchFailed("AmountTooLow")
            held = self.stake(state, coldkey, hotkey, netuid)
            if held < alpha:
                raise DispatchFailed("NotEnoughStakeToWithdraw")
            tao = self.alpha_to_tao(state, netuid, alpha)
            self.set_stake(state, coldkey, hotkey, netuid, held - alpha)
            self.set_free(state, coldkey, self.free(state, coldkey) + tao)
            event = "StakeRemoved"
        # (coldkey, hotkey, tao, alpha, netuid, fee) as in Subtensor's event.
        fields = [coldkey, hotkey, tao, alpha, netuid, 0]
        return [self._event(phase, PALLET, event, fields)]

    @staticmethod
    def _event(phase: dict[str, int], pallet: str, name: str, fields: Any) -> dict[str, Any]:
        return {"phase": phase, "event": {pallet: {name: fields}}, "topics": []}

    def write_events(self, state: WorldState, records: list[dict[str, Any]]) -> None:
        state.storage.set(self._events_key, self.codec.encode_value("System", "Events", records))

    def events(self, state: WorldState) -> list[dict[str, Any]]:
        return list(
            self.codec.decode_value("System", "Events", state.storage.get(self._events_key))
        )
