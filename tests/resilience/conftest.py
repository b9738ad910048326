"""Resilience suite: every test here starts the whole service as processes of its own.

Selected only with `-m resilience` (`make test-resilience`); pyproject's addopts keeps it
out of `make test`. Needs redis-server, PostgreSQL server binaries and the recorded chain
metadata; without them a test skips and says which is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.devchain import FIXTURES_HINT, fixtures_dir
from tests.resilience import results
from tests.resilience.stack import Stack, StackError


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = {k: v for k, v in results.load().items() if k in results.RECORDED}
    if rows:
        terminalreporter.write_sep("=", f"resilience results ({results.results_path()})")
        terminalreporter.write_line(results.table(rows))


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Stack]]:
    """Starts a Stack under the test's tmp dir (`stack(pipelines=3, dry_run=True, ...)`),
    skipping when a binary or the chain metadata is missing; stops it whatever happens
    and prints the tail of every service log when the test failed."""
    if fixtures_dir() is None:
        pytest.skip(FIXTURES_HINT)
    started: list[Stack] = []

    def start(**options: Any) -> Stack:
        built = Stack(tmp_path / f"stack{len(started)}", **options)
        built.base.mkdir()
        started.append(built)
        try:
            return built.__enter__()
        except StackError as exc:
            if "not installed" in str(exc) or "not found" in str(exc):
                pytest.skip(str(exc))
            raise

    yield start
    for built in started:
        built.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for name, tail in built.worker_logs():
                print(f"----- {name} -----\n{tail}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keeps each phase's report on the item, so the fixture above knows a test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
