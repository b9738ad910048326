"""All-subnets dividend read: `SubtensorChain.all_dividends()` vs a naive per-entry loop.

Starts the simulated node (tests/devchain) in a subprocess seeded with 64 subnets x
256 hotkeys, then measures, in the same run and against the same node:

* `SubtensorChain.all_dividends()`: NetworksAdded map + one paged map read per subnet
  (concurrent, pinned to one block);
* a naive loop of one `query_module` per (netuid, hotkey), sequential, pinned to the
  same kind of block. It is sampled for at most --naive-budget-s seconds and
  extrapolated linearly to every entry (the output says so).

Wall time is measured here; RPC round trips come from the node's own counters.
Run: `PYTHONPATH=. .venv/bin/python bench/chain.py [--latency-ms 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("BT_MEV_PROTECTION", "0")

from websockets.asyncio.client import connect  # noqa: E402

from shared.chain import SubtensorChain  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.devchain.fixtures import FIXTURES_HINT, fixtures_dir  # noqa: E402
from tests.devchain.seed import bulk_entries  # noqa: E402


@dataclass
class Result:
    name: str
    entries: int
    wall_s: float
    rpc_calls: int
    note: str = ""


async def dev_rpc(url: str, method: str, *params: Any) -> Any:
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        reply = json.loads(await ws.recv())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


async def start_node(
    spec: int, subnets: int, hotkeys: int
) -> tuple[asyncio.subprocess.Process, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.devchain",
        "--port",
        "0",
        "--spec",
        str(spec),
        "--seed-bulk",
        f"{subnets}x{hotkeys}",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 120)
    if not line.startswith(b"READY "):
        process.kill()
        raise RuntimeError(f"devchain did not start: {line!r}")
    return process, line.decode().split()[1]


async def measure_all(chain: SubtensorChain, url: str, rounds: int) -> tuple[Result, Any]:
    walls, calls, snapshot = [], [], None
    for _ in range(rounds):
        await dev_rpc(url, "dev_resetCounts")
        started = time.perf_counter()
        snapshot = await chain.all_dividends()
        walls.append(time.perf_counter() - started)
        calls.append((await dev_rpc(url, "dev_counts"))["total"])
    assert snapshot is not None
    wall = statistics.median(walls)
    note = f"median of {rounds}: " + ", ".join(f"{w:.2f}" for w in walls)
    return Result(
        "SubtensorChain.all_dividends()", len(snapshot.entries), wall, calls[-1], note
    ), snapshot


async def measure_naive(
    chain: SubtensorChain, url: str, entries: dict[int, dict[str, int]], budget_s: float
) -> Result:
    pairs = [
        (netuid, hotkey, amount)
        for netuid, row in entries.items()
        for hotkey, amount in row.items()
    ]

    async def loop(subtensor: Any) -> tuple[int, float]:
        block_hash = await subtensor.substrate.get_chain_head()
        runtime = await subtensor.substrate.init_runtime(block_hash=block_hash)
        pallet = runtime.metadata.get_metadata_pallet("SubtensorModule")
        storage = next(
            name
            for name in ("TaoDividendsPerSubnet", "RootAlphaDividendsPerSubnet")
            if pallet.get_storage_function(name) is not None
        )
        done, started = 0, time.perf_counter()
        for netuid, hotkey, amount in pairs:
            value = await subtensor.query_module(
                "SubtensorModule", storage, [netuid, hotkey], block_hash=block_hash
            )
            if int(getattr(value, "value", value)) != amount:
                raise AssertionError(f"naive read of ({netuid}, {hotkey}) returned {value}")
            done += 1
            if time.perf_counter() - started > budget_s:
                break
        return done, time.perf_counter() - started

    await dev_rpc(url, "dev_resetCounts")
    done, wall = await chain.call("naive loop", loop)
    counts = await dev_rpc(url, "dev_counts")
    setup_calls = counts["methods"].get("chain_getHead", 0)  # the one pin, not per entry
    per_entry = (counts["total"] - setup_calls) / done
    total = len(pairs)
    if done == total:
        return Result("naive query_module loop", total, wall, counts["total"])
    return Result(
        "naive query_module loop",
        total,
        wall / done * total,
        round(setup_calls + per_entry * total),
        f"sampled {done} entries in {wall:.1f}s, extrapolated to {total}",
    )


def report(spec: int, subnets: int, hotkeys: int, latency_ms: float, results: list[Result]) -> None:
    print(
        f"\nall-subnets dividend read: {subnets} subnets x {hotkeys} hotkeys, spec {spec}, "
        f"node in a subprocess, added latency {latency_ms:g} ms per RPC\n"
    )
    header = f"{'method':34} {'entries':>8} {'wall s':>9} {'RPC calls':>10} {'RPC/entry':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:34} {r.entries:>8} {r.wall_s:>9.2f} {r.rpc_calls:>10} "
            f"{r.rpc_calls / r.entries:>10.4f}"
        )
    for r in results:
        if r.note:
            print(f"  {r.name}: {r.note}")
    fast, naive = results
    print(
        f"\nratio naive / all_dividends: wall x{naive.wall_s / fast.wall_s:.1f}, "
        f"RPC round trips x{naive.rpc_calls / fast.rpc_calls:.1f}"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=int, default=393, choices=(315, 393))
    parser.add_argument("--subnets", type=int, default=64)
    parser.add_argument("--hotkeys", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--naive-budget-s", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="node delay per RPC")
    args = parser.parse_args()
    if fixtures_dir() is None:
        print(f"skipped: {FIXTURES_HINT}", file=sys.stderr)
        return 0

    started = time.perf_counter()
    process, url = await start_node(args.spec, args.subnets, args.hotkeys)
    print(f"node ready at {url} after {time.perf_counter() - started:.1f}s (seeding included)")
    chain = SubtensorChain(
        Settings(
            bittensor_network=url,
            chain_timeout_s=600,
            worker_handler_timeout_s=1500,  # must fit the long chain timeout (checked at start)
            chain_connect_timeout_s=60,
            dividends_storage="auto",
        )
    )
    try:
        await chain.start()
        if args.latency_ms:
            await dev_rpc(url, "dev_fault", "delay", args.latency_ms / 1000)
        expected = bulk_entries(args.subnets, args.hotkeys)
        fast, snapshot = await measure_all(chain, url, args.rounds)
        got = {(e.netuid, e.hotkey): e.dividend for e in snapshot.entries}
        want = {(n, h): a for n, row in expected.items() for h, a in row.items()}
        if got != want:
            raise AssertionError(f"all_dividends returned {len(got)} entries, expected {len(want)}")
        naive = await measure_naive(chain, url, expected, args.naive_budget_s)
    finally:
        await chain.close()
        process.terminate()
        await process.wait()
    report(args.spec, args.subnets, args.hotkeys, args.latency_ms, [fast, naive])
    print(f"\nbench total {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
