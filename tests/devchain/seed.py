"""Seed data: a small demo world and a bulk world for the benchmark.

Hotkeys other than the design's default one are synthetic SS58 addresses derived
from a label (no private keys exist for them); amounts are deterministic so a test
or benchmark can recompute what it expects.
"""

from __future__ import annotations

import hashlib

from tests.devchain.codec import to_ss58
from tests.devchain.logic import RAO
from tests.devchain.node import DevChain

DEMO_HOTKEY = "5FFApaS75bv5pJHfAp2FVLBj9ZaXuFDjEypsaBNc1wCfe52v"
# netuid -> alpha price in TAO (root is always 1)
DEMO_SUBNETS: dict[int, float] = {0: 1.0, 1: 0.02, 3: 0.015, 18: 0.05}
DEMO_HOTKEYS_PER_SUBNET = 4


def synthetic_hotkey(label: str) -> str:
    return to_ss58(hashlib.sha256(f"devchain-hotkey:{label}".encode()).digest())


def synthetic_amount(netuid: int, hotkey: str, *, scale: int = RAO) -> int:
    """A deterministic dividend between 0.001 and ~4 units of `scale`."""
    digest = hashlib.sha256(f"{netuid}:{hotkey}".encode()).digest()
    return scale // 1000 + int.from_bytes(digest[:4], "little") % (4 * scale)


def demo_entries() -> dict[int, dict[str, int]]:
    """netuid -> {hotkey: dividend} of the demo world."""
    entries: dict[int, dict[str, int]] = {}
    for netuid in DEMO_SUBNETS:
        hotkeys = [synthetic_hotkey(f"demo-{netuid}-{i}") for i in range(DEMO_HOTKEYS_PER_SUBNET)]
        if netuid == 18:
            hotkeys[0] = DEMO_HOTKEY
        entries[netuid] = {hotkey: synthetic_amount(netuid, hotkey) for hotkey in hotkeys}
    return entries


def seed_demo(node: DevChain) -> dict[int, dict[str, int]]:
    """Subnets 0, 1, 3 and 18 with prices, four hotkeys each (DEMO_HOTKEY on 18).

    Dividends go to the runtime's own item (TaoDividendsPerSubnet on 315,
    RootAlphaDividendsPerSubnet on 393) and mirrored into AlphaDividendsPerSubnet
    where the runtime has it.
    """
    entries = demo_entries()
    for netuid, price in DEMO_SUBNETS.items():
        node.add_subnet(netuid, price_tao=price)
        node.set_dividends(netuid, entries[netuid])
        alpha = "AlphaDividendsPerSubnet"
        if node.dividend_storage != alpha and alpha in node.logic.dividend_storages:
            node.set_dividends(netuid, entries[netuid], storage=alpha)
    return entries


def bulk_hotkeys(count: int) -> list[str]:
    return [synthetic_hotkey(f"bulk-{i}") for i in range(count)]


def bulk_entries(subnets: int, hotkeys: int) -> dict[int, dict[str, int]]:
    keys = bulk_hotkeys(hotkeys)
    return {
        netuid: {hotkey: synthetic_amount(netuid, hotkey) for hotkey in keys}
        for netuid in range(subnets)
    }


def seed_bulk(node: DevChain, subnets: int, hotkeys: int) -> int:
    """Netuids 0..subnets-1, each with the same `hotkeys` synthetic hotkeys; returns entries."""
    total = 0
    for netuid, amounts in bulk_entries(subnets, hotkeys).items():
        node.add_subnet(netuid)
        node.set_dividends(netuid, amounts)
        total += len(amounts)
    return total
