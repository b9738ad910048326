"""The console in a real browser: Debian's Chromium driven by Selenium through chromedriver.

One event loop runs the whole stack: the gateway served by uvicorn over HTTP on a free port,
the pipeline's stage worker (tweets, sentiment, stake) with fake Datura and Chutes servers,
and — where the recorded runtime metadata is present — the simulated Subtensor node, which
the gateway reads (dividends, stakes) and the stake stage signs and submits to through the
wallet's real `SubtensorStaker`. Without the metadata the stake stage uses the FakeStaker
and the gateway the fake chain. Selenium's blocking calls run in a thread meanwhile.

In the browser: a bad token is refused with a visible message; a read-only token signs in;
an operator token (read+admin) signs in, a trade posted by a trading client appears and
settles, its trace opens (hostile tweet text shown as text, extrinsic hash, block, fee,
score and backend), the position shows the stake moved (and the node's current stake),
the score chart draws one point per score, and the streams panel reports the backlog.

Skipped only where no Chromium/chromedriver is installed (`.ci/run` installs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.scopes import static_owner
from pipeline.runner import open_staker
from shared.chain.staking import SubtensorStaker
from shared.chain.staking_types import StakeClient
from shared.db.models import StakeAction
from shared.settings import Settings
from tests.conftest import make_settings
from tests.devchain import DevChain, fixtures_dir
from tests.devchain.seed import DEMO_HOTKEY
from tests.fakes.chain import FakeChain
from tests.fakes.chutes import FakeChutes
from tests.fakes.datura import FakeDatura, sample_tweets
from tests.fakes.staker import FakeStaker
from tests.gateway.console.seed import seed_trade
from tests.pipeline.conftest import running_worker
from tests.shared.chain.test_staking_devchain import make_unencrypted_wallet

os.environ["BT_MEV_PROTECTION"] = "0"

BAD = "not-a-token-of-this-gateway-000"
READ_ONLY = "console-read-only-token-111"  # scope read: what the console needs
OPS = "console-operator-token-222"  # read+admin: sees every caller's trades, cannot trade
TRADING = "console-trading-client-333"  # read+trade: the client that trades
DATURA_KEY = "dt_console_test_key_0001"
CHUTES_KEY = "cpk_console_test_key_0002"
RAO = 10**9
HOSTILE = '<img src=x onerror="window.__pwned=1">Netuid 18 <b>ships</b> & "quotes"'
SEEDED_SCORES = [(-30, "llm"), (15, "vader"), (None, "none"), (45, "llm"), (5, "vader")]
PHASE_WAIT_S = 45.0


# ====================================================================== browser
def chromium() -> tuple[str, str] | None:
    """(browser binary, chromedriver) from PATH, or None."""
    names = ("chromium", "chromium-browser", "google-chrome")
    binary = next((path for name in names if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


pytestmark = [
    pytest.mark.skipif(
        chromium() is None,
        reason="no Chromium and chromedriver on PATH; install them as root with "
        "`apt-get install -y chromium chromium-driver` (.ci/run does)",
    ),
    pytest.mark.timeout(240),
]


def open_browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = chromium()
    assert found is not None
    binary, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


class Page:
    """The console as a user sees it, through Selenium (blocking calls)."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def text(self, selector: str) -> str:
        found = self.all(selector)
        return str(found[0].get_attribute("textContent")) if found else ""

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):  # an element replaced by the next poll
                value = check()
                if value:
                    return value
            if time.monotonic() > deadline:
                pytest.fail(f"the console did not show {what} within {timeout:g}s")
            time.sleep(0.1)

    def visible(self, element_id: str) -> bool:
        """Shown on screen (rendered), not only without the `hidden` attribute."""
        return bool(self.css(f"#{element_id}").is_displayed())

    def sign_in(self, token: str) -> None:
        field = self.css("#token")
        field.clear()
        field.send_keys(token)
        self.css("#signin-button").click()

    def sign_out(self) -> None:
        self.css("#signout").click()
        self.wait("the sign-in form", lambda: self.visible("signin"))


# ====================================================================== the stack
@dataclass
class Stack:
    url: str
    settings: Settings
    node: DevChain | None
    coldkey: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """The app over real HTTP on a free port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            pytest.fail("the gateway did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@contextlib.asynccontextmanager
async def staker_for(settings: Settings, node: DevChain | None) -> AsyncIterator[StakeClient]:
    if node is None:
        fake = FakeStaker(free_tao=10.0, price_tao=0.05)
        fake.stakes[(18, DEMO_HOTKEY)] = 20 * RAO  # what the seeded past add left on "chain"
        yield fake
        return
    async with open_staker(settings) as setup:
        assert isinstance(setup.staker, SubtensorStaker), setup.problem
        yield setup.staker


@contextlib.asynccontextmanager
async def console_stack(redis_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    on_node = fixtures_dir() is not None
    wallets = tmp_path / "wallets"
    coldkey = make_unencrypted_wallet(wallets, "console") if on_node else FakeStaker().coldkey
    datura = FakeDatura(api_key=DATURA_KEY)
    datura.set_tweets(
        [
            {
                "user": {"id": "9", "username": "<script>window.__pwned=2</script>"},
                "id": "1900000000000000001",
                "text": HOSTILE,
                "like_count": 3,
                "created_at": "Thu Feb 20 10:51:44 +0000 2025",
            },
            *sample_tweets(),
        ]
    )
    chutes = FakeChutes(api_key=CHUTES_KEY, content='{"score": 60, "reason": "upbeat"}')
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(datura)
        await stack.enter_async_context(chutes)
        node = await stack.enter_async_context(DevChain(spec=393)) if on_node else None
        values: dict[str, Any] = {
            "api_tokens": SecretStr(f"{READ_ONLY}:read,{OPS}:read+admin,{TRADING}:read+trade"),
            "datura_api_key": SecretStr(DATURA_KEY),
            "datura_base_url": datura.base_url,
            "chutes_api_key": SecretStr(CHUTES_KEY),
            "chutes_base_url": chutes.base_url,
            "tweet_cache_ttl_s": 0,
            "worker_claim_idle_s": 1.0,
            "worker_handler_timeout_s": 20.0,
            "stake_submit_timeout_s": 10.0,
            "stake_reconcile_every_s": 0.5,
            "stake_amount_tao": 1.0,
            "stake_max_tao": 1.0,
            "staking_enabled": True,
            "stake_dry_run": False,
            "trade_by_default": False,
        }
        if node is not None:
            node.add_subnet(18, price_tao=0.05)
            node.fund(coldkey, 10)
            node.set_stake(coldkey, DEMO_HOTKEY, 18, 20 * RAO)  # the seeded past add
            node.seal_block()
            values |= {
                "bittensor_network": node.url,
                "chain_timeout_s": 3.0,
                "chain_connect_timeout_s": 10.0,
                "chain_retry_max_s": 0.3,
                "wallet_path": str(wallets),
                "wallet_name": "console",
                "wallet_hotkey": "default",
                "wallet_password": None,
            }
        settings = make_settings(redis_url, database_url, **values)
        app = create_app(settings) if node is not None else create_app(settings, chain=FakeChain())
        url = await stack.enter_async_context(serve(app))
        staker = await stack.enter_async_context(staker_for(settings, node))
        await stack.enter_async_context(running_worker(settings, staker))
        yield Stack(url, settings, node, coldkey)


async def seed_history(coldkey: str) -> int:
    """Past trades of the trading client on subnet 18: five scores (one trade found nothing
    to score) and, two days ago, one add of 1 TAO. Returns how many scores have a value."""
    now = datetime.now(UTC)
    owner = static_owner(TRADING)
    for hours, (score, backend) in enumerate(SEEDED_SCORES, start=1):
        await seed_trade(
            owner,
            18,
            DEMO_HOTKEY,
            score=score,
            backend=backend,
            at=now - timedelta(hours=6 - hours),
        )
    await seed_trade(
        owner,
        18,
        DEMO_HOTKEY,
        score=70,
        action={
            "coldkey": coldkey,
            "amount_tao": Decimal("1"),
            "block": 1,
            "fee_rao": 1000,
            "extrinsic_hash": "0x" + "ab" * 32,
            "stake_before_rao": 0,
        },
        at=now - timedelta(days=2),
    )
    return sum(score is not None for score, _ in SEEDED_SCORES) + 1


# ====================================================================== the test
async def test_the_console_in_a_real_browser(
    redis_url: str, clean_db: str, redis: Redis, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with console_stack(redis_url, clean_db, tmp_path) as stack:
        scored = await seed_history(stack.coldkey)
        result = await asyncio.to_thread(browse, stack, scored + 1)  # + the live trade's score
        action = await StakeAction.get(trade_id=result["trade_id"])
    assert action.status == "succeeded" and action.extrinsic_hash == result["hash"]
    if stack.node is not None:
        (applied,) = stack.node.applied
        assert (applied.call, applied.signer, applied.success) == (
            "add_stake_limit",
            stack.coldkey,
            True,
        )
        assert applied.hash == action.extrinsic_hash
    print(
        f"\nconsole browser test: {time.monotonic() - started:.1f}s, node={stack.node is not None}"
    )


def browse(stack: Stack, expected_points: int) -> dict[str, str]:
    driver = open_browser()
    try:
        return scenario(Page(driver, stack.url), stack, expected_points)
    finally:
        driver.quit()


def scenario(page: Page, stack: Stack, expected_points: int) -> dict[str, str]:
    driver = page.driver
    driver.get(f"{stack.url}/console")
    page.wait("the sign-in form", lambda: page.visible("signin"))

    # A bad token is refused, visibly, and not kept.
    page.sign_in(BAD)
    message = page.wait("the refusal", lambda: page.text("#signin-error"))
    assert message.startswith("Token refused"), message
    assert not page.visible("app")
    assert driver.execute_script("return sessionStorage.length") == 0

    # The read scope is enough to sign in (this token requested no trade: nothing to list).
    page.sign_in(READ_ONLY)
    page.wait("the console", lambda: page.visible("app"))
    page.wait("the empty trade list", lambda: page.visible("trades-empty"))
    page.sign_out()

    # The operator token: every caller's trades, read only.
    page.sign_in(OPS)
    page.wait("the console", lambda: page.visible("app"))
    assert driver.execute_script("return sessionStorage.getItem('taostake.console.token')") == OPS
    assert OPS not in driver.current_url and driver.execute_script("return document.cookie") == ""
    page.wait("the seeded trades", lambda: len(page.all("#trades tbody tr.trade")) == 6)
    driver.refresh()  # the tab keeps its session: no second sign-in
    page.wait("the console after a reload", lambda: page.visible("app"))
    page.wait("the trades after a reload", lambda: len(page.all("#trades tbody tr.trade")) == 6)

    # A trading client posts a trade; the console shows it appear and settle.
    posted = httpx.post(
        f"{stack.url}/api/v1/trades",
        json={"netuid": 18, "hotkey": DEMO_HOTKEY},
        headers={"Authorization": f"Bearer {TRADING}"},
        timeout=10,
    )
    assert posted.status_code == 202, posted.text
    trade_id = posted.json()["trade_id"]
    row = f'#trades tbody tr[data-trade-id="{trade_id}"]'
    page.wait("the new trade", lambda: page.all(row))
    statuses: list[str] = []

    def settled() -> bool:
        status = page.text(f"{row} .status")
        if status and (not statuses or statuses[-1] != status):
            statuses.append(status)
        return page.text(f"{row} .phase") == "settled"

    page.wait("the trade settled", settled, timeout=PHASE_WAIT_S)
    assert statuses[-1] == "succeeded", statuses

    # Its trace: tweets (hostile text shown as text), score and backend, decision, extrinsic.
    trace = httpx.get(
        f"{stack.url}/api/v1/trades/{trade_id}",
        headers={"Authorization": f"Bearer {OPS}"},
        timeout=10,
    ).json()
    action = trace["stake_action"]
    assert action["extrinsic_hash"], trace
    page.css(row).click()
    page.wait("the trace", lambda: page.text("#trace .extrinsic-hash") == action["extrinsic_hash"])
    assert page.text("#trace .trace-id") == trade_id
    assert page.text("#trace .trace-score") == "60"
    assert page.text("#trace .trace-backend") == "llm"
    assert page.text("#trace .trace-direction") == "add"
    assert page.text("#trace .trace-block") == str(action["block"])
    assert page.text("#trace .trace-fee") == str(action["fee_rao"])
    assert page.text("#trace .settlement").startswith("Settled: succeeded in block")
    tweets = [t.get_attribute("textContent") for t in page.all("#trace .tweet-text")]
    assert HOSTILE in tweets, tweets
    assert "@<script>window.__pwned=2</script>" in page.text("#trace .tweets")
    assert driver.execute_script(
        "return window.__pwned === undefined"
        " && document.querySelectorAll('#trace img, #trace script, #trace b').length === 0"
    )

    # The position: records (the seeded add + this one) and, on the node, the stake held now.
    position = f'#positions tbody tr[data-netuid="18"][data-hotkey="{DEMO_HOTKEY}"]'
    page.wait("the position", lambda: page.text(f"{position} .net-staked") == "2.000000000")
    page.wait("the position's history", lambda: "2 moves" in page.text(f"{position} summary"))
    if stack.node is not None:
        held = Decimal(stack.node.stake(stack.coldkey, DEMO_HOTKEY, 18)) / RAO
        assert held == 40  # 20 alpha before, + 1 TAO at 0.05 TAO per alpha
        page.wait("the chain stake", lambda: Decimal(page.text(f"{position} .chain-stake")) == held)
        assert page.text("#chain-status").startswith("Chain stake read at block")
    else:
        assert page.text(f"{position} .chain-stake") == "—"
        assert "unsupported" in page.text("#chain-status")

    # The score chart: one point per scored trade of subnet 18, the live one included.
    page.wait(
        "the chart's points",
        lambda: len(page.all("#score-chart circle.point")) == expected_points,
    )
    assert page.css("#score-chart").get_attribute("data-points") == str(expected_points)
    assert len(page.all("#score-chart polyline.line")) == 1
    # Left to right in time: the add two days ago (70), the seeded hours, the live trade (60).
    dots = sorted(page.all("#score-chart circle"), key=lambda c: float(c.get_attribute("cx")))
    in_time = [70, *(s for s, _ in SEEDED_SCORES if s is not None), 60]
    assert [int(c.get_attribute("data-score")) for c in dots] == in_time
    assert "1 trade without a score" in page.text("#scores-summary")

    # Stream backlog and dead letters.
    page.wait("the stream rows", lambda: len(page.all("#streams tbody tr")) == 5)
    assert page.text("#dead-letters") == "Dead letters: 0"

    # Nothing the policy had to block, no script error.
    logs = driver.get_log("browser")
    assert not [e for e in logs if "Content Security Policy" in e["message"]], logs
    assert not [e for e in logs if "Uncaught" in e["message"]], logs

    # Signing out forgets the token.
    page.sign_out()
    assert driver.execute_script("return sessionStorage.length") == 0
    return {"trade_id": trade_id, "hash": action["extrinsic_hash"]}
