"""The node's world state per block: raw key-value storage plus what lives behind runtime APIs.

Storage the SDK reads directly (dividends, NetworksAdded, System.Account, System.Events)
is kept as raw SCALE bytes under real storage keys, so a read is a dict lookup and a
map read pages over sorted keys like a node does. Stakes and prices are only visible
through runtime-API calls, so they stay plain Python values.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


class Storage:
    """Raw storage with sorted-key paging (sorted lazily, once per change burst)."""

    __slots__ = ("_data", "_sorted")

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self._data: dict[bytes, bytes] = dict(data or {})
        self._sorted: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        if key not in self._data:
            self._sorted = None
        self._data[key] = value

    def delete(self, key: bytes) -> None:
        if self._data.pop(key, None) is not None:
            self._sorted = None

    def copy(self) -> Storage:
        clone = Storage()
        clone._data = dict(self._data)
        clone._sorted = self._sorted  # lists are never mutated in place
        return clone

    def _keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self._data)
        return self._sorted

    def keys_paged(self, prefix: bytes, count: int, start_key: bytes | None) -> list[bytes]:
        """Up to `count` keys with `prefix`, strictly after `start_key` (state_getKeysPaged)."""
        keys = self._keys()
        if start_key is not None and start_key >= prefix:
            index = bisect.bisect_right(keys, start_key)
        else:
            index = bisect.bisect_left(keys, prefix)
        page: list[bytes] = []
        while index < len(keys) and len(page) < count:
            key = keys[index]
            if not key.startswith(prefix):
                break
            page.append(key)
            index += 1
        return page

    def keys_with_prefix(self, prefix: bytes) -> list[bytes]:
        keys = self._keys()
        index = bisect.bisect_left(keys, prefix)
        end = index
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return keys[index:end]


StakeKey = tuple[str, str, int]  # (coldkey ss58, hotkey ss58, netuid)


@dataclass(slots=True)
class WorldState:
    storage: Storage = field(default_factory=Storage)
    stakes: dict[StakeKey, int] = field(default_factory=dict)
    """Alpha in rao per (coldkey, hotkey, netuid); TAO rao on netuid 0."""
    prices: dict[int, int] = field(default_factory=dict)
    """Alpha price per subnet in rao of TAO per 1 alpha (10**9 = 1 TAO)."""

    def copy(self) -> WorldState:
        return WorldState(self.storage.copy(), dict(self.stakes), dict(self.prices))


@dataclass(slots=True)
class Block:
    number: int
    hash: str
    parent_hash: str
    extrinsics: list[str]
    state: WorldState | None
    """None once pruned: reads at this block then fail like on a pruned node."""

    def header(self) -> dict[str, object]:
        return {
            "parentHash": self.parent_hash,
            "number": hex(self.number),
            "stateRoot": "0x" + "00" * 32,
            "extrinsicsRoot": "0x" + "00" * 32,
            "digest": {"logs": []},
        }
