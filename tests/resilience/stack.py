"""The whole service as real processes, for the resilience suite.

A `Stack` owns everything a scenario may stop or kill, so stopping it harms no one
else: a private redis-server (append-only, fsync every second), a private PostgreSQL
cluster in a temp dir, the simulated chain node, the Datura/Chutes fakes, the gateway
and N `python -m pipeline run` processes consuming the same consumer groups (what
`docker compose up --scale pipeline=3` runs). Every process is started with its own
pid recorded and is killed by that pid on the way out, whatever happened.

Trades are enqueued the way the gateway does it (`shared.trades.TradeTrigger`, signed
events) or through the gateway over HTTP; their fate is read from PostgreSQL, the
streams and the node's own list of executed extrinsics (`dev_applied`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from shared.constants import (
    GROUP_SENTIMENT,
    GROUP_STAKE,
    GROUP_TWEETS,
    STREAM_DEAD_LETTER,
    STREAM_DIVIDEND_REQUESTED,
    STREAM_SENTIMENT_SCORED,
    STREAM_STAKE_EXECUTED,
    STREAM_TWEETS_FETCHED,
)
from shared.events import DividendRequested, text
from shared.ids import new_id
from shared.trades import TradeTrigger
from tests.conftest import TEST_SIGNING_KEY, free_port
from tests.devchain.seed import synthetic_hotkey
from tests.resilience.fake_apis import CHUTES_KEY, DATURA_KEY

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
API_TOKEN = "resilience-token-0123456789abcdef"
WALLET = "resilience"
NETUID = 18  # seeded by --seed-demo with a price, so price protection has a price to use
TERMINAL = frozenset({"succeeded", "failed", "skipped", "dry_run", "rejected"})
STAGES = (
    ("tweets", STREAM_DIVIDEND_REQUESTED, GROUP_TWEETS),
    ("sentiment", STREAM_TWEETS_FETCHED, GROUP_SENTIMENT),
    ("stake", STREAM_SENTIMENT_SCORED, GROUP_STAKE),
)


class StackError(RuntimeError):
    """A service of the stack could not be started (the message says which and why)."""


# ====================================================================== processes
class Proc:
    """One child process with its output in a log file; stopped by its own pid only."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: dict[str, str],
        log_dir: Path,
        *,
        ready_line: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.popen = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE if ready_line else self._log,
            stderr=self._log,
            start_new_session=True,  # a Ctrl-C of pytest does not hit it before we do
        )
        if ready_line:
            threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").strip()
            self.lines.append(line)
            if line.startswith("READY "):
                self._ready.set()

    def ready(self, timeout: float) -> list[str]:
        """The words after READY on the process's stdout (StackError if it never says it)."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"{self.name} did not become ready:\n{self.tail()}")
        line = next(line for line in self.lines if line.startswith("READY "))
        return line.split()[1:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
        self._log.close()

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError, ValueError):  # ValueError: already closed
            self._log.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:] + "\n".join(self.lines[-20:])


def _wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what} not ready after {timeout:g} s")
        time.sleep(0.05)


# ====================================================================== Redis
class PrivateRedis:
    """A redis-server of the scenario's own, append-only with fsync every second (what
    compose runs), restartable on the same port with its data."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed")
        self._binary = binary
        self.dir = base / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log_dir = base
        self.proc: Proc | None = None

    def start(self) -> None:
        args = [
            self._binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ]
        self.proc = Proc("redis", args, dict(os.environ), self._log_dir)
        _wait_until(self._ping, 10, "private redis-server")

    def _ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM: the server writes its append-only file and exits)."""
        if self.proc is not None:
            self.proc.stop(timeout=10)


# ====================================================================== PostgreSQL
class PrivatePostgres:
    """A PostgreSQL cluster in a temp dir on a free port: stopping it harms no one.

    initdb refuses to run as root, so as root the cluster belongs to the `postgres` user
    (runuser); the temp dir is made traversable for it.
    """

    def __init__(self, base: Path) -> None:
        if not (PG_BIN / "initdb").exists():
            raise StackError(f"PostgreSQL server binaries not found in {PG_BIN} (set PG_BIN)")
        # Outside pytest's tmp dir: that one is 0700 and the postgres user could not enter.
        self.base = Path(tempfile.mkdtemp(prefix="taostake-resilience-pg-"))
        self.base.chmod(0o755)
        self.data = self.base / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/taostake"
        self._log = base / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise StackError("running as root and there is no `postgres` user") from exc
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise StackError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.start()
        asyncio.run(self._create_db())

    async def _create_db(self) -> None:
        conn = await asyncpg.connect(self.url.rsplit("/", 1)[0] + "/postgres")
        try:
            await conn.execute("CREATE DATABASE taostake")
        finally:
            await conn.close()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c fsync=off -c synchronous_commit=off"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.base / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(StackError, subprocess.TimeoutExpired):
            self.stop()
        with contextlib.suppress(OSError):
            shutil.copyfile(self.base / "server.log", self._log)
        shutil.rmtree(self.base, ignore_errors=True)


# ====================================================================== wallet
def make_wallet(path: Path) -> str:
    """A throwaway unencrypted coldkey + hotkey for the simulated node; its coldkey address."""
    from bittensor_wallet import Keypair, Wallet

    wallet = Wallet(name=WALLET, hotkey="default", path=str(path))
    coldkey = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
    wallet.set_coldkey(coldkey, encrypt=False, overwrite=True)
    wallet.set_coldkeypub(coldkey, overwrite=True)
    wallet.set_hotkey(Keypair.create_from_mnemonic(Keypair.generate_mnemonic()), encrypt=False)
    return str(coldkey.ss58_address)


async def dev_rpc(url: str, method: str, *params: Any) -> Any:
    """One `dev_*` control call to the simulated node."""
    async with connect(url, max_size=None, open_timeout=5) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


# ====================================================================== the stack
@dataclass
class Fate:
    """What became of a set of trades, from PostgreSQL, the streams and the node."""

    total: int
    final: int
    statuses: Counter[str]
    lost: list[str]
    stake_rows_per_trade_max: int
    dead_letters: list[dict[str, str]]
    applied: int = 0
    decided_to_submit: int = 0
    applied_twice: int = 0  # trades (distinct netuid, hotkey pairs) with > 1 extrinsic

    @property
    def run_twice(self) -> int:
        return self.applied_twice + max(0, self.stake_rows_per_trade_max - 1)


@dataclass
class Stack:
    """See the module docstring. Use as a context manager; everything stops on exit."""

    base: Path
    pipelines: int = 3
    dry_run: bool = True
    gateway: bool = False
    node_args: tuple[str, ...] = ()
    api_delay_s: float = 0.0  # latency of every Datura/Chutes answer
    extra_env: dict[str, str] = field(default_factory=dict)

    redis: PrivateRedis = field(init=False)
    postgres: PrivatePostgres | None = field(init=False, default=None)
    database_url: str = field(init=False, default="")
    node_url: str = field(init=False, default="")
    datura_url: str = field(init=False, default="")
    chutes_url: str = field(init=False, default="")
    gateway_url: str = field(init=False, default="")
    coldkey: str = field(init=False, default="")
    workers: list[Proc] = field(init=False, default_factory=list)
    _procs: list[Proc] = field(init=False, default_factory=list)
    _seq: int = field(init=False, default=0)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.redis = PrivateRedis(self.base)
        self.redis.start()
        self.postgres = PrivatePostgres(self.base)
        self.postgres.init()
        self.database_url = self.postgres.url
        self.coldkey = make_wallet(self.base / "wallets")
        node = self.spawn(
            "devchain",
            [PY, "-m", "tests.devchain", "--port", "0", "--spec", "393", "--seed-demo",
             "--fund", f"{self.coldkey}=1000000", *self.node_args],
            ready_line=True,
        )  # fmt: skip
        fakes = self.spawn(
            "fake-apis",
            [PY, "-m", "tests.resilience.fake_apis", "--delay", str(self.api_delay_s)],
            ready_line=True,
        )
        (self.node_url,) = node.ready(60)
        self.datura_url, self.chutes_url = fakes.ready(30)
        migrate = subprocess.run(
            [PY, "-m", "shared.db.migrate"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if migrate.returncode != 0:
            raise StackError(f"migration failed: {migrate.stdout}{migrate.stderr}")
        for _ in range(self.pipelines):
            self.start_worker()
        if self.gateway:
            self.start_gateway()
        self.wait_workers_ready()

    def close(self) -> None:
        """Stop every process this stack started, by pid; remove the PostgreSQL temp dir."""
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.kill()
        with contextlib.suppress(Exception):
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.destroy()

    # ------------------------------------------------------------------ processes
    def env(self, **overrides: str) -> dict[str, str]:
        """The settings every service process gets (no .env: processes run with cwd ROOT,
        so the checkout's .env is shadowed by these explicit values where it matters)."""
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.database_url,
            "BITTENSOR_NETWORK": self.node_url or "ws://127.0.0.1:1",
            "WALLET_PATH": str(self.base / "wallets"),
            "WALLET_NAME": WALLET,
            "WALLET_HOTKEY": "default",
            "WALLET_PASSWORD": "",
            "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
            "METRICS_PORT": "0",  # several pipeline processes on one host
            "API_TOKENS": API_TOKEN,
            "DATURA_API_KEY": DATURA_KEY,
            "DATURA_BASE_URL": self.datura_url,
            "CHUTES_API_KEY": CHUTES_KEY,
            "CHUTES_BASE_URL": self.chutes_url,
            "TWEET_CACHE_TTL_S": "0",  # every trade asks the fakes: an API outage is felt
            "HTTP_MAX_RETRIES": "1",
            "DATURA_TIMEOUT_S": "5",
            "CHUTES_TIMEOUT_S": "5",
            "WORKER_CLAIM_IDLE_S": "3",
            "WORKER_OUTAGE_BACKOFF_S": "0.2",
            "WORKER_OUTAGE_BACKOFF_MAX_S": "2",
            "WORKER_HANDLER_TIMEOUT_S": "60",
            "MAX_DELIVERIES": "3",
            "MIN_ABS_SCORE": "1",
            "MAX_EVENT_AGE_S": "3600",
            "MAX_POSITION_TAO": "1000000",
            "DAILY_TRADE_LIMIT_TAO": "1000000",
            "TRADE_COOLDOWN_S": "1",
            "STAKE_AMOUNT_TAO": "0.01",
            "STAKE_MAX_TAO": "1",
            "STAKING_ENABLED": "true",
            "STAKE_DRY_RUN": "true" if self.dry_run else "false",
            "CHAIN_TIMEOUT_S": "3",
            "CHAIN_CONNECT_TIMEOUT_S": "10",
            "CHAIN_RETRY_MAX_S": "1",
            "STAKE_SUBMIT_TIMEOUT_S": "5",
            "STAKE_SETTLE_MARGIN_S": "1",
            "STAKE_RECONCILE_EVERY_S": "1",
            "RATE_LIMIT_PER_MIN": "10000000",
            "TRADE_RATE_LIMIT_PER_MIN": "10000000",
            "AUTH_FAILURES_PER_MIN": "10000000",
            "BT_MEV_PROTECTION": "0",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "text",
        }
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def spawn(self, name: str, args: Sequence[str], *, ready_line: bool = False) -> Proc:
        proc = Proc(name, args, self.env(), self.base, ready_line=ready_line)
        self._procs.append(proc)
        return proc

    def start_worker(self) -> Proc:
        self._seq += 1
        proc = self.spawn(f"pipeline-{self._seq}", [PY, "-m", "pipeline", "run"])
        self.workers.append(proc)
        return proc

    def start_gateway(self) -> None:
        port = free_port()
        proc = Proc(
            "gateway",
            [PY, "-m", "gateway", "serve"],
            self.env(HOST="127.0.0.1", PORT=str(port)),
            self.base,
        )
        self._procs.append(proc)
        self.gateway_url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not proc.alive():
                raise StackError(f"gateway exited:\n{proc.tail()}")
            try:
                return httpx.get(f"{self.gateway_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until(up, 60, "gateway")

    def wait_workers_ready(self, timeout: float = 60) -> None:
        """Until every live worker has a fresh health key (its groups exist, it consumes)."""

        def ready() -> bool:
            for proc in self.workers:
                if not proc.alive():
                    raise StackError(f"{proc.name} exited:\n{proc.tail()}")
            pids = asyncio.run(self.health_pids())
            return {p.pid for p in self.workers if p.alive()} <= pids

        _wait_until(ready, timeout, "pipeline workers")

    async def health_pids(self) -> set[int]:
        redis = self.client()
        try:
            pids = set()
            async for key in redis.scan_iter("health:worker:*"):
                raw = await redis.get(key)
                if raw:
                    pids.add(int(json.loads(raw)["pid"]))
            return pids
        finally:
            await redis.aclose()

    def client(self) -> Redis:
        return Redis.from_url(self.redis.url, socket_timeout=5)

    # ------------------------------------------------------------------ load
    async def enqueue(self, count: int, *, label: str) -> list[str]:
        """`count` trades on distinct (netuid, hotkey) pairs, enqueued as the gateway does."""
        redis = self.client()
        trigger = TradeTrigger(redis, cooldown_s=1, maxlen=100_000)
        ids = []
        try:
            for i in range(count):
                event = DividendRequested(
                    trade_id=new_id(),
                    netuid=NETUID,
                    hotkey=synthetic_hotkey(f"{label}-{i}"),
                    source="api",
                )
                result = await trigger.trigger(event)
                assert result.enqueued
                ids.append(result.trade_id)
        finally:
            await redis.aclose()
        return ids

    # ------------------------------------------------------------------ observation
    async def fate(self, trade_ids: Sequence[str]) -> Fate:
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT t.trade_id, t.status AS trade_status, s.status AS stake_status "
                "FROM trades t LEFT JOIN stake_actions s ON s.trade_id = t.trade_id "
                "WHERE t.trade_id = ANY($1::text[])",
                list(trade_ids),
            )
            per_trade = await conn.fetchval(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM stake_actions "
                "GROUP BY trade_id) c"
            )
            submitted = await conn.fetchval(
                "SELECT count(*) FROM stake_actions WHERE extrinsic_hash IS NOT NULL "
                "AND trade_id = ANY($1::text[])",
                list(trade_ids),
            )
        finally:
            await conn.close()
        statuses: Counter[str] = Counter()
        final: set[str] = set()
        for row in rows:
            status = row["stake_status"] or f"trade:{row['trade_status']}"
            statuses[status] += 1
            if row["stake_status"] in TERMINAL or row["trade_status"] == "ended":
                final.add(row["trade_id"])
        return Fate(
            total=len(trade_ids),
            final=len(final),
            statuses=statuses,
            lost=[t for t in trade_ids if t not in final],
            stake_rows_per_trade_max=int(per_trade),
            dead_letters=await self.dead_letters(),
            decided_to_submit=int(submitted),
        )

    async def dead_letters(self) -> list[dict[str, str]]:
        redis = self.client()
        try:
            entries = await redis.xrange(STREAM_DEAD_LETTER)
        finally:
            await redis.aclose()
        return [
            {text(k): _lenient(v) for k, v in (fields or {}).items()} for _, fields in entries or []
        ]

    async def applied(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await dev_rpc(self.node_url, "dev_applied")
        return result

    async def with_chain(self, fate: Fate) -> Fate:
        """`fate` plus the node's word: extrinsics executed, and pairs that got more than one."""
        applied = await self.applied()
        pairs = Counter((a["args"].get("netuid"), a["args"].get("hotkey")) for a in applied)
        fate.applied = len(applied)
        fate.applied_twice = sum(1 for n in pairs.values() if n > 1)
        return fate

    async def wait_final(
        self, trade_ids: Sequence[str], timeout: float, *, poll_s: float = 0.5
    ) -> tuple[Fate, float]:
        """Poll until every trade is final or `timeout`; the fate and the seconds it took."""
        began = time.monotonic()
        while True:
            fate = await self.fate(trade_ids)
            if not fate.lost or time.monotonic() - began > timeout:
                return fate, time.monotonic() - began
            await asyncio.sleep(poll_s)

    async def pending_by_consumer(self) -> dict[str, dict[str, int]]:
        """stage -> consumer -> entries it holds (XPENDING summary)."""
        redis = self.client()
        out: dict[str, dict[str, int]] = {}
        try:
            for stage, stream, group in STAGES:
                with contextlib.suppress(Exception):
                    info = await redis.xpending(stream, group)
                    out[stage] = {
                        c["name"].decode(): int(c["pending"]) for c in info.get("consumers") or []
                    }
        finally:
            await redis.aclose()
        return out

    async def stream_lengths(self) -> dict[str, int]:
        redis = self.client()
        try:
            return {
                name: int(await redis.xlen(name))
                for name in (*(s for _, s, _ in STAGES), STREAM_STAKE_EXECUTED)
            }
        finally:
            await redis.aclose()

    def outage_waits(self) -> int:
        """How many times the workers waited out a dependency in place (from their logs)."""
        return sum(
            p.log_path.read_text(errors="replace").count("dependency unavailable")
            for p in self.workers
            if p.log_path.exists()
        )

    def worker_logs(self) -> Iterator[tuple[str, str]]:
        for proc in self.workers:
            yield proc.name, proc.tail()


def _lenient(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def consumer_pid(consumer: str) -> int | None:
    """The pid in a default consumer name (`host-pid-hex`)."""
    parts = consumer.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


async def finished(database_url: str) -> int:
    """Stake actions in a final state so far (progress of the run)."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM stake_actions WHERE status = ANY($1::text[])",
                sorted(TERMINAL),
            )
        )
    finally:
        await conn.close()


async def wait_finished(database_url: str, at_least: int, timeout: float) -> None:
    """Until `at_least` stake actions are final (StackError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while await finished(database_url) < at_least:
        if time.monotonic() > deadline:
            raise StackError(f"fewer than {at_least} trades final after {timeout:g} s")
        await asyncio.sleep(0.2)


def set_api_status(base_url: str, status: int) -> None:
    """Make a fake API (tests/resilience/fake_apis.py) answer `status` from now on."""
    httpx.post(f"{base_url}/_control/status", json={"status": status}, timeout=5).raise_for_status()
