"""Gateway benchmark: the real app vs a bare FastAPI endpoint, same machine, same run.

Runs each server as uvicorn with one worker and drives it with wrk at 1000
connections. Prints req/s, p50, p99, errors and the ratio to the bare anchor.
Needs `wrk` (Debian: apt-get install wrk) and Redis at REDIS_URL.

    PYTHONPATH=. .venv/bin/python bench/gateway.py [--seconds 10] [--connections 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
TOKEN = "bench-token-0123456789"
ROTATE_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local netuid = (counter * 7919 + math.random(0, 1000000)) % 65536
  return wrk.format("GET", "/api/v1/tao_dividends?trade=false&netuid=" .. netuid ..
    "&hotkey=HOTKEY", {["Authorization"] = "Bearer TOKEN"})
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(factory: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        factory,
        "--factory",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--log-level",
        "warning",
        "--no-access-log",
        "--backlog",
        "4096",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{factory} did not start; see {log}")


def wrk(
    url: str, seconds: int, connections: int, header: str | None = None, script: Path | None = None
) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if header:
        cmd += ["-H", header]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return {
        "rps": rps,
        "p50": _ms(out, "50%"),
        "p99": _ms(out, "99%"),
        "errors": errors,
        "total": total,
    }


def _ms(out: str, pct: str) -> float:
    m = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)\b", out)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    tmp = Path(tempfile.mkdtemp(prefix="taostake-bench-"))
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite://{tmp}/bench.sqlite3",
        "API_TOKENS": TOKEN,
        "EVENT_SIGNING_KEY": "bench-event-signing-key-0123456789",
        "LOG_LEVEL": "INFO",
        "BITTENSOR_NETWORK": "local",
        "RATE_LIMIT_PER_MIN": "100000000",
        "TRADE_RATE_LIMIT_PER_MIN": "100000000",
        "TRADE_COOLDOWN_S": "3600",
        "CACHE_TTL_S": "120",
    }
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import redis,sys; redis.Redis.from_url(sys.argv[1]).flushdb()",
            redis_url,
        ],
        check=True,
        env=env,
    )
    subprocess.run(
        [sys.executable, "-m", "shared.db.migrate"], check=True, env=env, capture_output=True
    )
    script = tmp / "rotate.lua"
    script.write_text(ROTATE_LUA.replace("HOTKEY", HOTKEY).replace("TOKEN", TOKEN))
    auth = f"Authorization: Bearer {TOKEN}"
    results: list[tuple[str, dict[str, float]]] = []

    bare_port, app_port = free_port(), free_port()
    bare = start("bench.apps:bare", bare_port, env, tmp / "bare.log")
    try:
        results.append(
            (
                "anchor: bare FastAPI",
                wrk(f"http://127.0.0.1:{bare_port}/bare", args.seconds, args.connections),
            )
        )
        results.append(
            (
                "naive: one Redis GET/request",
                wrk(f"http://127.0.0.1:{bare_port}/naive", args.seconds, args.connections),
            )
        )
    finally:
        bare.terminate()
        bare.wait()

    app = start("bench.apps:product", app_port, env, tmp / "gateway.log")
    base = f"http://127.0.0.1:{app_port}/api/v1/tao_dividends"
    try:
        one = f"{base}?netuid=3&hotkey={HOTKEY}&trade=false"
        req = urllib.request.Request(one, headers={"Authorization": f"Bearer {TOKEN}"})
        urllib.request.urlopen(req, timeout=10).read()  # warm the cache
        results.append(("gateway: cached hits", wrk(one, args.seconds, args.connections, auth)))
        results.append(
            (
                "gateway: cold misses (rotating keys)",
                wrk(base, args.seconds, args.connections, auth, script),
            )
        )
        trade = f"{base}?netuid=3&hotkey={HOTKEY}&trade=true"
        results.append(
            ("gateway: trade=true (one pair)", wrk(trade, args.seconds, args.connections, auth))
        )
        stream_len = asyncio.run(_xlen(redis_url))
    finally:
        app.terminate()
        app.wait()

    anchor = results[0][1]["rps"]
    print(
        f"\nmachine: {os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}; "
        f"wrk -t2 -c{args.connections} -d{args.seconds}s; uvicorn 1 worker each\n"
    )
    print(
        f"| {'scenario':38} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} "
        f"| {'× anchor':>8} |"
    )
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 10}|")
    for name, r in results:
        print(
            f"| {name:38} | {r['rps']:9.0f} | {r['p50']:7.1f} | {r['p99']:7.1f} | "
            f"{int(r['errors']):6d} | {r['rps'] / anchor:8.2f} |"
        )
    print(
        f"\ntrade=true burst put {stream_len} entry on stream:dividend_requested "
        "(expected 1: one pair, one cooldown)"
    )


async def _xlen(url: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        return int(await client.xlen("stream:dividend_requested"))
    finally:
        await client.aclose()


if __name__ == "__main__":
    main()
