"""The runtime APIs the SDK calls through `state_call`, answered from a block's state.

Each `_api_<Name>` method answers the runtime API `<Name>` with the decoded value; the
state namespace decodes its parameters and encodes the answer with the runtime's own
types, starting from the zero value of the output type so fields the model does not
track are well-formed zeros. Stake, swap and price answers come from `SubtensorLogic`.
Kept apart from the model so what the runtime does and how it is queried read apart.
"""

from __future__ import annotations

from typing import Any

from tests.devchain.codec import to_ss58
from tests.devchain.logic import CALL_WEIGHT, RAO, SubtensorLogic
from tests.devchain.state import WorldState


class RuntimeApis:
    """The modelled runtime-API calls over one runtime's logic."""

    def __init__(self, logic: SubtensorLogic) -> None:
        self.logic = logic
        self.codec = logic.codec

    def call(self, state: WorldState, name: str, params: dict[str, Any]) -> Any:
        """The decoded answer of one modelled runtime API call (None encodes Option::None).

        Raises LookupError for a runtime API the model does not answer."""
        handler = getattr(self, f"_api_{name}", None)
        if handler is None:
            raise LookupError(name)
        return handler(state, name, **params)

    def _stake_info(
        self, state: WorldState, name: str, coldkey: str, hotkey: str, netuid: int
    ) -> dict[str, Any]:
        info = dict(self.codec.api_output_zero(name))
        info.update(
            hotkey=to_ss58(hotkey),
            coldkey=to_ss58(coldkey),
            netuid=netuid,
            stake=self.logic.stake(state, coldkey, hotkey, netuid),
        )
        return info

    def _api_StakeInfoRuntimeApi_get_stake_info_for_hotkey_coldkey_netuid(
        self, state: WorldState, name: str, hotkey_account: Any, coldkey_account: Any, netuid: int
    ) -> dict[str, Any]:
        return self._stake_info(state, name, str(coldkey_account), str(hotkey_account), netuid)

    def _api_StakeInfoRuntimeApi_get_stake_info_for_coldkey(
        self, state: WorldState, name: str, coldkey_account: Any
    ) -> list[dict[str, Any]]:
        coldkey = to_ss58(str(coldkey_account))
        template = dict(self.codec.api_output_zero(name))
        return [
            {**template, "hotkey": hot, "coldkey": cold, "netuid": netuid, "stake": alpha}
            for (cold, hot, netuid), alpha in sorted(state.stakes.items())
            if cold == coldkey
        ]

    def _sim_swap(self, name: str, tao: int, alpha: int) -> dict[str, Any]:
        result = dict(self.codec.api_output_zero(name))
        result.update(tao_amount=tao, alpha_amount=alpha)
        return result

    def _api_SwapRuntimeApi_sim_swap_tao_for_alpha(
        self, state: WorldState, name: str, netuid: int, tao: int
    ) -> dict[str, Any]:
        return self._sim_swap(name, tao, self.logic.tao_to_alpha(state, netuid, tao))

    def _api_SwapRuntimeApi_sim_swap_alpha_for_tao(
        self, state: WorldState, name: str, netuid: int, alpha: int
    ) -> dict[str, Any]:
        return self._sim_swap(name, self.logic.alpha_to_tao(state, netuid, alpha), alpha)

    def _api_SwapRuntimeApi_current_alpha_price(
        self, state: WorldState, name: str, netuid: int
    ) -> int:
        return self.logic.price(state, netuid)

    def _api_SubnetInfoRuntimeApi_get_dynamic_info(
        self, state: WorldState, name: str, netuid: int
    ) -> dict[str, Any] | None:
        if not self.logic.subnet_exists(state, netuid):
            return None
        price = self.logic.price(state, netuid)
        alpha_in = 1_000_000 * RAO
        info = dict(self.codec.api_output_zero(name))
        values: dict[str, Any] = {
            "netuid": netuid,
            "subnet_name": list(f"devchain-{netuid}".encode()),
            "token_symbol": list(("τ" if netuid == 0 else "α").encode()),
            "tempo": 360,
            "alpha_in": alpha_in,
            "alpha_out": alpha_in,
            "tao_in": alpha_in * price // RAO,
            "moving_price": {"bits": price * 2**32 // RAO},
        }
        info.update({k: v for k, v in values.items() if k in info})
        return info

    def _api_AccountNonceApi_account_nonce(self, state: WorldState, name: str, account: Any) -> int:
        return self.logic.nonce(state, to_ss58(str(account)))

    def _api_TransactionPaymentApi_query_info(
        self, state: WorldState, name: str, uxt: Any, len: int
    ) -> dict[str, Any]:
        info = dict(self.codec.api_output_zero(name))
        info.update(weight=CALL_WEIGHT, partial_fee=self.logic.fee_rao)
        return info
