"""The pipeline's command line (`python -m pipeline COMMAND --help` for each).

python -m pipeline run [--stages tweets,sentiment,stake]
python -m pipeline wallet create | import | show
python -m pipeline streams [--watch SECONDS] [--json]
python -m pipeline replay (--trade ID | --stream NAME --from ID [--to ID])
                          [--as-new-trade] [--dry-run] [--json]
python -m pipeline dead-letter list [--json] | show ID [--json] | requeue ID | purge --older-than 7d
python -m pipeline settle TRADE_ID --status succeeded|failed --reason TEXT [--by NAME] [--force]
python -m pipeline --version
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

import uvloop
from loguru import logger
from redis.exceptions import RedisError

from pipeline.ops import deadletters, replay, streams
from pipeline.runner import STAGE_NAMES, build_worker
from shared.cli import (
    HelpFormatter,
    add_command_group,
    command_parser,
    json_help,
    positive_int,
    print_json,
)
from shared.heap import freeze_startup_heap
from shared.logging import configure_logging, printable
from shared.redis import create_redis
from shared.settings import Settings, get_settings
from shared.signing import SigningKeyMissing, configure_signing


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m pipeline",
        "The staking pipeline: stage workers on Redis Streams and the operator "
        "tools around them. Settings come from the environment and .env.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run stage workers (all stages by default)",
        description="Consume the stage streams until SIGTERM/SIGINT, then drain.",
    )
    run.add_argument(
        "--stages",
        default=",".join(STAGE_NAMES),
        help="comma-separated subset of: " + ", ".join(STAGE_NAMES),
    )
    wallet = sub.add_parser(
        "wallet",
        help="the staking wallet (WALLET_PATH/NAME/HOTKEY)",
        description="Create, import (from WALLET_MNEMONIC) or show the staking wallet; "
        "addresses only are printed, never a secret.",
    )
    wallet.add_argument(
        "action",
        choices=["create", "import", "show"],
        help="create a new coldkey and hotkey, import one from WALLET_MNEMONIC, "
        "or show the addresses",
    )
    streams_cmd = sub.add_parser(
        "streams",
        help="stream and consumer-group state",
        description="Length, last id, consumer groups, pending entries, lag and the "
        "oldest pending entry's idle time per stream, and the dead-letter count.",
        epilog=json_help(
            '{"streams": [one object per stream and group], "dead_letters": int}; each object has',
            streams.JSON_KEYS,
        ),
        formatter_class=HelpFormatter,
    )
    streams_cmd.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until interrupted"
    )
    streams_cmd.add_argument(
        "--json",
        action="store_true",
        help="print JSON (keys below); with --watch, one JSON line per refresh",
    )
    replay_cmd = sub.add_parser(
        "replay",
        help="publish a trade's entries again (source=replay)",
        description="Publish entries again under the same trade_id (the stages answer from "
        "what they stored: no second extrinsic), or as a new trade with --as-new-trade.",
        epilog=json_help(
            '{"dry_run": bool, "entries": [one object per entry], "published": [entry ids]}; '
            "each entry has",
            replay.JSON_KEYS,
        ),
        formatter_class=HelpFormatter,
    )
    target = replay_cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--trade", metavar="TRADE_ID", help="replay this trade's original request")
    target.add_argument(
        "--stream", metavar="NAME", help="replay the entries of this event stream (with --from)"
    )
    replay_cmd.add_argument(
        "--from",
        dest="start",
        default="-",
        metavar="ID",
        help="first entry id of --stream (default: the oldest)",
    )
    replay_cmd.add_argument(
        "--to",
        dest="end",
        default="+",
        metavar="ID",
        help="last entry id of --stream (default: the newest)",
    )
    replay_cmd.add_argument(
        "--as-new-trade", action="store_true", help="run it again for real under a new trade_id"
    )
    replay_cmd.add_argument(
        "--dry-run", action="store_true", help="show what would be published, publish nothing"
    )
    replay_cmd.add_argument("--json", action="store_true", help="print JSON (keys below)")
    dsub = add_command_group(
        sub,
        "dead-letter",
        help="entries that failed MAX_DELIVERIES times",
        description="Inspect, requeue or purge stream:dead_letter.",
    )
    letter_epilog = json_help("one object", deadletters.JSON_KEYS)
    dlist = dsub.add_parser(
        "list",
        help="the newest dead letters",
        description="The newest dead letters first, and how many there are in total.",
        epilog=json_help(
            '{"letters": [objects as below, without "original"], "shown": int, "total": int}',
            deadletters.JSON_KEYS,
        ),
        formatter_class=HelpFormatter,
    )
    dlist.add_argument(
        "--count", type=positive_int, default=50, help="how many to show (default: %(default)s)"
    )
    dlist.add_argument("--json", action="store_true", help="print JSON (keys below)")
    dshow = dsub.add_parser(
        "show",
        help="one dead letter with its original entry",
        description="Every field of one dead letter.",
        epilog=letter_epilog,
        formatter_class=HelpFormatter,
    )
    dshow.add_argument("entry_id", help="the dead letter's id (from `list`)")
    dshow.add_argument("--json", action="store_true", help="print one JSON object (keys below)")
    requeue = dsub.add_parser(
        "requeue",
        help="put a dead letter's entry back on its stream",
        description="Put the original (signed) entry back on its stream, untouched, and "
        "remove the dead letter, atomically.",
    )
    requeue.add_argument("entry_id", help="the dead letter's id (from `list`)")
    dpurge = dsub.add_parser(
        "purge",
        help="delete old dead letters",
        description="Delete dead letters older than a duration.",
    )
    dpurge.add_argument(
        "--older-than", required=True, metavar="DURATION", help="e.g. 90s, 30m, 12h, 7d"
    )
    settle = sub.add_parser(
        "settle",
        help="record the outcome of a stake action the chain cannot prove (included, or an "
        "unsettled row without an extrinsic hash)",
        description="Record by hand the outcome of a stake action the settlement sweep "
        "cannot prove from the chain; who and why go into its reason.",
    )
    settle.add_argument("trade_id", metavar="TRADE_ID", help="the trade whose stake action")
    settle.add_argument(
        "--status", required=True, choices=["succeeded", "failed"], help="the outcome to record"
    )
    settle.add_argument("--reason", required=True, help="why (what the block explorer shows)")
    settle.add_argument("--by", default=None, help="who settles it (default: the OS user)")
    settle.add_argument(
        "--force",
        action="store_true",
        help="also settle an unsettled row that has its hash and window (the sweep's job)",
    )
    return parser


async def _run(settings: Settings, stages: list[str]) -> int:
    from shared.db.schema import SchemaOutdated

    try:
        async with build_worker(settings, stages) as worker:
            worker.install_signal_handlers()
            logger.info("pipeline started", stages=",".join(stages), consumer=worker.consumer)
            logger.info("start-up heap frozen", objects=freeze_startup_heap())
            await worker.run()
    except SchemaOutdated as exc:
        logger.error("pipeline not started: {}", exc.message)
        return 2
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


async def _streams(settings: Settings, watch: float | None, as_json: bool) -> int:
    redis = create_redis(settings)
    try:
        while True:
            if as_json:
                print_json(await streams.report_json(redis))
            else:
                text = await streams.report(redis)
                if watch is None:
                    print(text)
                else:
                    print("\033[2J\033[H" + text, flush=True)
            if watch is None:
                return 0
            await asyncio.sleep(watch)
    finally:
        await redis.aclose()


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from tortoise import Tortoise

    from shared.db.config import tortoise_config

    redis = create_redis(settings)
    await Tortoise.init(config=tortoise_config(settings))
    try:
        if args.trade:
            plan = await replay.plan_trade(redis, args.trade, new_trade=args.as_new_trade)
        else:
            plan = await replay.plan_range(
                redis, args.stream, args.start, args.end, new_trade=args.as_new_trade
            )
        if not args.json:
            for stream, fields in plan:
                print(
                    f"{'would publish' if args.dry_run else 'publish'} {stream} "
                    f"trade={fields['trade_id']} type={fields.get('type')}"
                )
        ids: list[str] = []
        if not args.dry_run:
            ids = await replay.publish_plan(
                redis, plan, maxlen=settings.stream_maxlen, cooldown_s=settings.trade_cooldown_s
            )
            if not args.json:
                print(f"published {len(ids)} entries: {', '.join(ids)}")
        if args.json:
            print_json(
                {"dry_run": args.dry_run, "entries": replay.plan_json(plan), "published": ids}
            )
    except replay.ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
        await Tortoise.close_connections()
    return 0


async def _dead_letter(settings: Settings, args: argparse.Namespace) -> int:
    dl = deadletters
    redis = create_redis(settings)
    try:
        if args.action == "list":
            letters = await dl.list_letters(redis, args.count)
            total = await dl.count(redis)
            if args.json:
                print_json(
                    {
                        "letters": [dl.letter_json(letter, original=False) for letter in letters],
                        "shown": len(letters),
                        "total": total,
                    }
                )
            else:
                for letter in letters:
                    print(dl.describe(letter))
                print(f"{len(letters)} shown, {total} in total")
        elif args.action == "show":
            letter = await dl.get_letter(redis, args.entry_id)
            if args.json:
                print_json(dl.letter_json(letter, original=True))
            else:
                print("\n".join(dl.show_lines(letter)))
        elif args.action == "requeue":
            new_id = await dl.requeue(redis, args.entry_id, maxlen=settings.stream_maxlen)
            print(f"requeued {args.entry_id} as {new_id}")
        else:
            removed = await dl.purge(redis, dl.parse_duration(args.older_than))
            print(f"purged {removed} dead letters older than {args.older_than}")
    except dl.DeadLetterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"error: Redis: {printable(str(exc), limit=200)}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    return 0


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


async def _settle(settings: Settings, args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError
    from tortoise import Tortoise

    from pipeline.ops.settle import SettleError, settle
    from pipeline.stages.settlement import settled_event
    from shared.bus import publish
    from shared.db.config import tortoise_config

    await Tortoise.init(config=tortoise_config(settings))
    try:
        try:
            action = await settle(
                args.trade_id, args.status, args.reason, args.by or _operator(), force=args.force
            )
        except SettleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"trade {action.trade_id}: stake action {action.status}: {action.reason}")
        event = await settled_event(action)
        redis = create_redis(settings)
        try:
            await publish(redis, event, maxlen=settings.stream_maxlen)
        except RedisError as exc:
            print(f"warning: recorded, but stake_executed not published: {exc}", file=sys.stderr)
        finally:
            await redis.aclose()
    finally:
        await Tortoise.close_connections()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings)
    if args.command == "wallet":
        return _wallet(settings, args.action)
    if args.command == "streams":
        return asyncio.run(_streams(settings, args.watch, args.json))
    try:  # every other command publishes or consumes signed events
        configure_signing(settings)
    except SigningKeyMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "replay":
        return asyncio.run(_replay(settings, args))
    if args.command == "dead-letter":
        return asyncio.run(_dead_letter(settings, args))
    if args.command == "settle":
        return asyncio.run(_settle(settings, args))
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = set(stages) - set(STAGE_NAMES)
    if unknown or not stages:
        print(f"error: --stages takes a subset of {', '.join(STAGE_NAMES)}", file=sys.stderr)
        return 2
    # uvloop: the stage workers are I/O bound on Redis, PostgreSQL and HTTP.
    return uvloop.run(_run(settings, stages))


if __name__ == "__main__":
    sys.exit(main())
