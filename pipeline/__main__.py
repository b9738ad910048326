"""`python -m pipeline run [--stages tweets,sentiment,stake] | wallet create|import|show`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from loguru import logger

from pipeline.runner import STAGE_NAMES, build_worker
from shared.logging import configure_logging
from shared.settings import Settings, get_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run stage workers (all stages by default)")
    run.add_argument(
        "--stages",
        default=",".join(STAGE_NAMES),
        help="comma-separated subset of: " + ", ".join(STAGE_NAMES),
    )
    wallet = sub.add_parser("wallet", help="the staking wallet (WALLET_PATH/NAME/HOTKEY)")
    wallet.add_argument("action", choices=["create", "import", "show"])
    return parser


async def _run(settings: Settings, stages: list[str]) -> int:
    async with build_worker(settings, stages) as worker:
        worker.install_signal_handlers()
        logger.info("pipeline started", stages=",".join(stages), consumer=worker.consumer)
        await worker.run()
    logger.info("pipeline stopped")
    return 0


def _wallet(settings: Settings, action: str) -> int:
    from shared.chain.wallet import WalletProblem, create_wallet, import_wallet, show_wallet

    try:
        if action == "create":
            info = create_wallet(settings)
        elif action == "import":
            info = import_wallet(settings)
        else:
            info = show_wallet(settings)
    except WalletProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, value in info.items():
        print(f"{key}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings)
    if args.command == "wallet":
        return _wallet(settings, args.action)
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = set(stages) - set(STAGE_NAMES)
    if unknown or not stages:
        print(f"error: --stages takes a subset of {', '.join(STAGE_NAMES)}", file=sys.stderr)
        return 2
    return asyncio.run(_run(settings, stages))


if __name__ == "__main__":
    sys.exit(main())
