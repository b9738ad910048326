"""Run the simulated node: `python -m tests.devchain --port 9944 [--spec N] [--seed-demo]`.

Serves one recorded runtime from the metadata directory (`--fixtures`, else
`CHAIN_FIXTURES_DIR`, else ../shared/chain-fixtures): spec N, or the highest recorded.
Prints one `READY <url>` line on stdout once it listens (scripts wait for it), then
serves until SIGINT/SIGTERM. Other processes steer it with the `dev_*` RPC methods.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from tests.devchain.codec import to_ss58
from tests.devchain.fixtures import (
    FIXTURES_HINT,
    FixturesNotFound,
    metadata_dir,
    recorded_specs,
)
from tests.devchain.node import DEFAULT_FEE_RAO, DevChain
from tests.devchain.seed import seed_bulk, seed_demo


def _funding(text: str) -> tuple[str, float]:
    address, sep, amount = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected SS58=TAO, e.g. 5F...=100")
    try:
        return to_ss58(address.strip()), float(amount)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grid(text: str) -> tuple[int, int]:
    subnets, sep, hotkeys = text.lower().partition("x")
    if not sep:
        raise argparse.ArgumentTypeError("expected SUBNETSxHOTKEYS, e.g. 64x256")
    return int(subnets), int(hotkeys)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.devchain", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9944, help="0 picks a free port")
    parser.add_argument(
        "--spec", type=int, help="runtime spec_version to serve (default: the highest recorded)"
    )
    parser.add_argument("--fixtures", type=Path, help="metadata directory (CHAIN_FIXTURES_DIR)")
    parser.add_argument("--seed-demo", action="store_true", help="subnets 0,1,3,18 + dividends")
    parser.add_argument("--seed-bulk", type=_grid, metavar="NxM", help="N subnets x M hotkeys")
    parser.add_argument("--fund", type=_funding, action="append", default=[], metavar="SS58=TAO")
    parser.add_argument("--block-time", type=float, help="also seal empty blocks every S seconds")
    parser.add_argument("--fee-rao", type=int, default=DEFAULT_FEE_RAO)
    parser.add_argument("--existential-deposit", type=int, help="rao (recorded runtimes: 500)")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


class UnsupportedRuntime(RuntimeError):
    """The recorded runtime lacks something the simulated node models."""


def choose_spec(directory: Path | None, spec: int | None) -> tuple[Path, int]:
    """The metadata directory and the runtime to serve from it."""
    directory = directory or metadata_dir()
    if directory is None:
        raise FixturesNotFound(FIXTURES_HINT)
    specs = recorded_specs(directory)
    if not specs:
        raise FixturesNotFound(
            f"no spec<N>_v15_metadata_at_version.hex in {directory} (see tests/devchain/README.md)"
        )
    if spec is None:
        return directory, specs[-1]
    if spec not in specs:
        raise FixturesNotFound(
            f"spec {spec} is not recorded in {directory} (recorded: {', '.join(map(str, specs))})"
        )
    return directory, spec


def build_node(args: argparse.Namespace) -> DevChain:
    """The node, seeded and funded as asked."""
    directory, spec = choose_spec(args.fixtures, args.spec)
    try:
        node = DevChain(
            spec,
            host=args.host,
            port=args.port,
            fixtures_dir=directory,
            existential_deposit=args.existential_deposit,
            fee_rao=args.fee_rao,
            block_time_s=args.block_time,
        )
        if args.seed_demo:
            seed_demo(node)
        if args.seed_bulk:
            seed_bulk(node, *args.seed_bulk)
        for address, tao in args.fund:
            node.fund(address, tao)
        return node
    except FixturesNotFound:
        raise
    except OSError as exc:  # nothing listens yet: this is reading the files
        raise FixturesNotFound(f"cannot read the metadata in {directory}: {exc}") from exc
    except Exception as exc:  # a runtime without an item the model reads or writes
        raise UnsupportedRuntime(
            f"runtime spec {spec} from {directory} cannot be simulated: {type(exc).__name__}: {exc}"
        ) from exc


async def serve(args: argparse.Namespace) -> None:
    node = build_node(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with node:
        subnets = node.subnets()
        shown = ", ".join(map(str, subnets[:8])) + (", ..." if len(subnets) > 8 else "")
        print(
            f"devchain spec {node.spec}: dividends in SubtensorModule.{node.dividend_storage}; "
            f"{len(subnets)} subnet(s) [{shown}]; funded {len(args.fund)} account(s)",
            file=sys.stderr,
        )
        print(f"READY {node.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args))
    except (FixturesNotFound, UnsupportedRuntime) as exc:
        print(f"devchain: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"devchain: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
