"""Offline demo: every Procfile process against a SIMULATED Bittensor chain on this machine.

    .venv/bin/python scripts/demo.py [--port 9944] [--http-port 8000] [--spec N]

1. finds the runtime metadata the simulated node serves: in CHAIN_FIXTURES_DIR when set,
   else in ./data/chain-fixtures (recorded by an earlier run), else in the reference kit
   ../shared/chain-fixtures; else it records it once, from BITTENSOR_NETWORK, into
   ./data/chain-fixtures (scripts/record_metadata.py; the only network use of the demo);
2. creates (if missing) an unencrypted demo wallet in ./data/demo-wallet;
3. starts the simulated node (`python -m tests.devchain --seed-demo`, that metadata,
   subnets 0, 1, 3 and 18 with made-up dividends) and funds the demo coldkey;
4. does what `make run` does first: Redis reachable, migrations applied, a first token;
5. prints the settings it uses and runs the Procfile with honcho, pointed at the node.

No real TAO is involved and no process talks to a real chain. Ctrl-C stops everything,
node included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.record_metadata import RecordError, record, redact, resolve_network  # noqa: E402
from scripts.signing_key import ensure_signing_key  # noqa: E402
from shared.chain.wallet import WalletProblem, create_wallet, show_wallet  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.devchain.fixtures import DEFAULT_DIR, ENV_VAR, V15_FILE, recorded_specs  # noqa: E402

WALLET_NAME = "demo-simulated-chain-only"
WALLET_HOTKEY = "default"
NODE_READY_TIMEOUT_S = 60
STOP_WAIT_S = 20
RECORD_TIMEOUT_S = 20
RECORDED_DIR = ROOT / "data" / "chain-fixtures"
KIT_DIR = DEFAULT_DIR
V15_PATTERN = V15_FILE.format(spec="<N>")
BANNER = "=" * 78


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9944, help="simulated node port (9944)")
    parser.add_argument(
        "--http-port", type=int, default=int(os.environ.get("PORT", "8000")), help="gateway"
    )
    parser.add_argument(
        "--spec", type=int, help="runtime spec_version to serve (default: the highest found)"
    )
    parser.add_argument("--wallet-path", type=Path, default=ROOT / "data" / "demo-wallet")
    parser.add_argument("--fund-tao", type=float, default=1000.0, help="simulated TAO")
    parser.add_argument("--block-time", type=float, default=12.0, help="seconds; 0: none")
    return parser.parse_args(argv)


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True, slots=True)
class Metadata:
    """The recorded runtime the simulated node serves."""

    directory: Path
    spec: int
    origin: str


class MetadataMissing(Exception):
    """No usable metadata; the message says what was looked for and how to fix it."""


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return f"./{path.relative_to(ROOT)}"
    return str(path)


def _looked_in(directory: Path) -> str:
    if not directory.is_dir():
        return "no such directory"
    specs = recorded_specs(directory)
    return f"specs {', '.join(map(str, specs))}" if specs else f"no {V15_PATTERN}"


def _provenance(directory: Path, spec: int) -> str:
    """Where scripts/record_metadata.py recorded spec N from, when it says so."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        info = json.loads((directory / f"spec{spec}_recorded.json").read_text())
        return f" from {info['network']} at {info['recorded_at']}"
    return ""


def _pick(directory: Path, spec: int | None) -> int | None:
    specs = recorded_specs(directory)
    if spec is None:
        return specs[-1] if specs else None
    return spec if spec in specs else None


def find_metadata(spec: int | None, network: str) -> Metadata:
    """The runtime to serve: CHAIN_FIXTURES_DIR when set (it wins, nothing else is tried),
    else ./data/chain-fixtures, else the kit beside the checkout, else a new recording from
    `network` into ./data/chain-fixtures. Raises MetadataMissing saying what is missing."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        directory = Path(configured).expanduser().resolve()
        found = _pick(directory, spec)
        if found is None:
            wanted = V15_FILE.format(spec=spec) if spec is not None else V15_PATTERN
            raise MetadataMissing(
                f"{ENV_VAR}={configured} has no {wanted} ({_looked_in(directory)}).\n"
                f"Point {ENV_VAR} at a directory with recorded runtime metadata, or unset it\n"
                f"to let the demo record it from BITTENSOR_NETWORK into {_shown(RECORDED_DIR)}."
            )
        return Metadata(directory, found, f"{ENV_VAR} ({directory})")
    for directory, origin in (
        (RECORDED_DIR, f"recorded earlier into {_shown(RECORDED_DIR)}"),
        (KIT_DIR, f"the reference kit {KIT_DIR}"),
    ):
        found = _pick(directory, spec)
        if found is not None:
            return Metadata(directory, found, origin + _provenance(directory, found))
    looked = [
        f"    {ENV_VAR}: not set",
        *(f"    {_shown(d)}: {_looked_in(d)}" for d in (RECORDED_DIR, KIT_DIR)),
    ]
    wanted = V15_FILE.format(spec=spec) if spec is not None else V15_PATTERN
    target = f"BITTENSOR_NETWORK={redact(network)}"
    with contextlib.suppress(RecordError):  # an unusable value is reported by record()
        endpoint = redact(resolve_network(network))
        target += f" ({endpoint})" if endpoint != redact(network) else ""
    say(f"demo: no recorded runtime metadata yet; recording it once from {target}")
    say(f"      into {_shown(RECORDED_DIR)} (timeout {RECORD_TIMEOUT_S}s per step)")
    try:
        done = record(network, RECORDED_DIR, timeout_s=RECORD_TIMEOUT_S)
    except (RecordError, OSError) as exc:
        raise MetadataMissing(
            "the simulated node needs recorded runtime metadata, and there is none here.\n"
            f"  Looked for {wanted} in:\n" + "\n".join(looked) + "\n"
            f"  Tried to record it from {target}:\n"
            f"    {exc}\n"
            "  Fix it either way:\n"
            "    1. with internet access (or BITTENSOR_NETWORK set to a node you can reach:\n"
            "       finney, test, local or a ws:// / wss:// URL), run `make demo` again: it\n"
            f"       records the metadata once into {_shown(RECORDED_DIR)}\n"
            "       (or record it alone: .venv/bin/python scripts/record_metadata.py);\n"
            f"    2. or set {ENV_VAR} to a directory holding {V15_PATTERN}\n"
            "       (for example a copy of the reference kit chain-fixtures) and run it again."
        ) from None
    say(f"demo: recorded runtime spec {done.spec} into {_shown(RECORDED_DIR)}")
    if spec is not None and done.spec != spec:
        raise MetadataMissing(
            f"--spec {spec} asked for, but {target} runs spec {done.spec} (now recorded in "
            f"{_shown(RECORDED_DIR)}); run without --spec to use it"
        )
    return Metadata(RECORDED_DIR, done.spec, f"recorded just now from {target}")


def port_free(port: int) -> bool:
    """Whether a server can listen on the port (TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_wallet(path: Path) -> str:
    """The demo wallet's coldkey address; created unencrypted on first use."""
    settings = Settings(
        _env_file=None,
        wallet_path=str(path),
        wallet_name=WALLET_NAME,
        wallet_hotkey=WALLET_HOTKEY,
        wallet_password=None,
    )
    try:
        info = show_wallet(settings)
    except WalletProblem:
        path.mkdir(parents=True, exist_ok=True)
        info = create_wallet(settings)
        (path / "README.txt").write_text(
            "DEMO wallet for the SIMULATED chain of scripts/demo.py. Its coldkey is NOT\n"
            "encrypted and its mnemonic was never shown: never send real TAO to it.\n"
        )
        say(f"demo: created the demo wallet {path / WALLET_NAME} (unencrypted, demo only)")
    if info.get("coldkey_encrypted") != "false":
        raise SystemExit(f"demo: {path / WALLET_NAME} has no unencrypted coldkey; remove it")
    return info["coldkey"]


def start_node(
    args: argparse.Namespace,
    metadata: Metadata,
    coldkey: str,
    env: dict[str, str],
    stopping: list[int],
) -> tuple[subprocess.Popen[str], str | None]:
    """Start the simulated node; returns it and its ws URL once it prints READY
    (None when it failed to start or the user stopped the demo meanwhile)."""
    command = [
        sys.executable,
        "-m",
        "tests.devchain",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--spec",
        str(metadata.spec),
        "--fixtures",
        str(metadata.directory),
        "--seed-demo",
        "--fund",
        f"{coldkey}={args.fund_tao:g}",
    ]
    if args.block_time > 0:
        command += ["--block-time", str(args.block_time)]
    node = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # our signal handling decides when it stops
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:  # keep draining stdout so the node never blocks on it
        assert node.stdout is not None
        for line in node.stdout:
            lines.append(line.strip())
            if line.startswith("READY "):
                ready.set()

    threading.Thread(target=read, name="devchain-stdout", daemon=True).start()
    deadline = time.monotonic() + NODE_READY_TIMEOUT_S
    while not ready.wait(0.1):
        if stopping:
            return node, None
        if node.poll() is not None or time.monotonic() > deadline:
            say(f"demo: the simulated node did not start (exit {node.poll()})")
            if node.poll() == 2:  # the metadata: its message is above
                say(
                    f"      it read {metadata.directory}; serve another recording with"
                    f" {ENV_VAR}=DIR or --spec N"
                )
            return node, None
    url = next(line for line in lines if line.startswith("READY ")).split()[1]
    return node, url


def stop(proc: subprocess.Popen[Any], name: str, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        say(f"demo: {name} did not stop in {STOP_WAIT_S}s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def run_step(command: list[str], env: dict[str, str]) -> bool:
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        say(f"demo: `{' '.join(command[1:])}` failed (exit {result.returncode})")
    return result.returncode == 0


def honcho_command(http_port: int) -> list[str]:
    honcho = Path(sys.executable).with_name("honcho")
    found = str(honcho) if honcho.exists() else shutil.which("honcho")
    base = [found] if found else [sys.executable, "-m", "honcho"]
    return [*base, "start", "-f", "Procfile", "-p", str(http_port)]


def banner(
    args: argparse.Namespace, metadata: Metadata, coldkey: str, demo_env: dict[str, str]
) -> None:
    say(BANNER)
    say(" SIMULATED CHAIN. Every chain answer comes from a local simulated node")
    say(f" (tests/devchain, runtime spec {metadata.spec}), NOT from Bittensor: its balances,")
    say(" prices and dividends are made up and no real TAO is involved.")
    say(f" Runtime metadata: {metadata.origin}.")
    say("")
    say(" The processes run with:")
    for name, value in demo_env.items():
        say(f"   {name}={value}")
    say("")
    say(f" demo coldkey {coldkey} holds {args.fund_tao:g} simulated TAO.")
    say(" Subnets 0, 1, 3 and 18 have made-up dividends: try the curl above with the")
    say(" token. A trade (trade=true) stakes on the simulated node only when tweets and")
    say(" a sentiment score come back (DATURA_API_KEY / CHUTES_API_KEY and internet).")
    say(" Ctrl-C stops everything, the simulated node included.")
    say(BANNER)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not port_free(args.port):
        say(f"demo: port {args.port} is taken (another node?); choose one with --port")
        return 1
    try:
        metadata = find_metadata(args.spec, Settings().bittensor_network)
    except MetadataMissing as exc:
        say(f"demo: {exc}")
        return 2
    wallet_path = args.wallet_path.resolve()
    coldkey = ensure_wallet(wallet_path)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "BT_MEV_PROTECTION": "0",
        # The processes share one event signing key, like `make run` (./data unless configured).
        "EVENT_SIGNING_KEY": ensure_signing_key(Settings())[0],
    }
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node: subprocess.Popen[str] | None = None
    procs: subprocess.Popen[bytes] | None = None
    code = 1
    try:
        node, url = start_node(args, metadata, coldkey, env, stopping)
        if url is None:
            return 130 if stopping else 1
        demo_env = {
            "BITTENSOR_NETWORK": url,
            "WALLET_PATH": str(wallet_path),
            "WALLET_NAME": WALLET_NAME,
            "WALLET_HOTKEY": WALLET_HOTKEY,
            "WALLET_PASSWORD": "",
            "STAKE_DRY_RUN": "false",
            "STAKING_ENABLED": "true",
            "DIVIDENDS_STORAGE": "auto",
        }
        env.update(demo_env)
        env["PORT"] = str(args.http_port)
        # What `make run` does before it starts the processes.
        for step in (["scripts/services.py", "redis"], ["-m", "shared.db.migrate"]):
            if stopping or not run_step([sys.executable, *step], env):
                return 130 if stopping else 1
        if stopping or not run_step([sys.executable, "scripts/welcome.py"], env) or stopping:
            return 130 if stopping else 1
        banner(args, metadata, coldkey, demo_env)
        procs = subprocess.Popen(
            honcho_command(args.http_port), cwd=ROOT, env=env, start_new_session=True
        )
        while not stopping:
            if procs.poll() is not None:
                say(f"demo: the processes stopped (honcho exit {procs.returncode})")
                code = procs.returncode or 1
                break
            if node.poll() is not None:
                say(f"demo: the simulated node stopped unexpectedly (exit {node.returncode})")
                break
            time.sleep(0.2)
        else:
            code = 130
    finally:
        if procs is not None:
            stop(procs, "the Procfile processes", signal.SIGINT)
        if node is not None:
            stop(node, "the simulated node")
            say("demo: stopped, the simulated node included")
    return code


if __name__ == "__main__":
    sys.exit(main())
