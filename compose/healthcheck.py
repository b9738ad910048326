"""Container health checks: `python compose/healthcheck.py gateway|pipeline|beat`.

Exit 0 when healthy, 1 when not (Docker's HEALTHCHECK contract), with one line saying
why; `docker inspect` keeps the last lines. Each check proves the process does its job
rather than only that a port is open:

- gateway:  GET /healthz on this container's PORT answers 200.
- pipeline: a worker process of this container holds a fresh `health:worker:<hostname>-*`
            key (refreshed every TTL/3, expires after 30 s), is not stopping, and its pid
            is alive here. Replicas are told apart by hostname, so each checks itself.
- beat:     Redis (the Celery broker) answers PING and a Celery process runs here.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from pathlib import Path

import redis

from shared.constants import KEY_WORKER_HEALTH

TIMEOUT_S = 3.0
SCAN_COUNT = 1000


def _redis() -> redis.Redis:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


def _cmdline(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _processes_matching(*markers: bytes) -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if all(m in _cmdline(pid) for m in markers)]


def _glob_escape(text: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


def check_gateway() -> str | None:
    port = int(os.environ.get("PORT", "8000"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
    except OSError as exc:
        return f"GET /healthz on port {port} failed: {exc}"
    finally:
        conn.close()
    return None if status == 200 else f"GET /healthz answered {status}"


def check_pipeline() -> str | None:
    prefix = f"{KEY_WORKER_HEALTH}{socket.gethostname()}-"
    client = _redis()
    try:
        for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=SCAN_COUNT):
            raw = client.get(key)
            if raw is None:
                continue
            payload = json.loads(raw)
            pid = payload.get("pid")
            if payload.get("stopping"):
                continue
            if isinstance(pid, int) and b"pipeline" in _cmdline(pid):
                return None
    except (redis.RedisError, OSError, ValueError) as exc:
        return f"cannot read worker health from Redis: {exc}"
    finally:
        client.close()
    return f"no live worker of this container holds a fresh {prefix}* key"


def check_beat() -> str | None:
    client = _redis()
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis (Celery broker) does not answer: {exc}"
    finally:
        client.close()
    if not _processes_matching(b"celery", b"pipeline.schedule"):
        return "no Celery process for pipeline.schedule is running"
    return None


CHECKS = {"gateway": check_gateway, "pipeline": check_pipeline, "beat": check_beat}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: healthcheck.py {'|'.join(CHECKS)}", file=sys.stderr)
        return 1  # Docker reserves 2; a misconfigured check is an unhealthy one
    problem = CHECKS[argv[0]]()
    if problem is not None:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
