"""Periodic work the Worker supervises beside its stream stages (arq's `cron_jobs` model).

Chain sweeps and the metrics sampler used to run as bare tasks next to the worker: outside
its drain, its health key and its metrics. A `Job` is run by the worker instead:

* on its interval (`every_s`, counted from the start of one run to the start of the next;
  a run that takes longer is followed at once by the next, never overlapped by it);
* one run at a time: a run that would not stop even when cancelled is abandoned, and the
  job skips its ticks until that run has really ended;
* each run bounded by `timeout_s`; an error or a timeout is logged and counted and the job
  runs again at its next tick, the worker carries on;
* at stop no new run starts; a run in progress gets the worker's drain grace (a function
  that takes the stop event can use it to end early), then it is cancelled within a bound.

Its state goes into the worker's health key (`jobs`) and into the `taostake_job_*` metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from loguru import logger

if TYPE_CHECKING:
    from loguru import Logger

from pipeline.metrics import JobMetrics
from shared.ids import iso, utcnow
from shared.logging import mask
from shared.tasks import cancel_and_wait

__all__ = ["Job", "JobFunc", "JobState", "Jobs"]

JobFunc = Callable[..., Awaitable[object]]

_ERROR_MAX: Final = 500  # characters of a run's error kept for the health key


@dataclass(frozen=True, slots=True)
class Job:
    """`func` is a coroutine function called with no argument, or with the worker's stop
    event when it has one required positional parameter (to end a long run early)."""

    name: str
    func: JobFunc
    every_s: float
    timeout_s: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a job needs a name")
        for what, seconds in (("every_s", self.every_s), ("timeout_s", self.timeout_s)):
            if seconds <= 0:
                raise ValueError(f"job {self.name}: {what} must be > 0, got {seconds}")
        _takes_stop(self.func)  # refuses a signature it cannot call

    def call(self, stop: asyncio.Event) -> Awaitable[object]:
        return self.func(stop) if _takes_stop(self.func) else self.func()


def _takes_stop(func: JobFunc) -> bool:
    required = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if len(required) > 1 or any(p.kind is p.KEYWORD_ONLY for p in required):
        raise ValueError(f"a job function takes no argument or the stop event: {func!r}")
    return bool(required)


@dataclass(slots=True)
class JobState:
    """What the health key shows of one job."""

    runs: int = 0
    failures: int = 0  # errors and timeouts
    timeouts: int = 0
    running: bool = False
    last_started_at: str | None = None
    last_ended_at: str | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    last_success_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _Supervised:
    job: Job
    metrics: JobMetrics
    state: JobState = field(default_factory=JobState)
    run: asyncio.Future[object] | None = None  # the run in progress (or abandoned)
    loop: asyncio.Task[None] | None = None


class Jobs:
    """The worker's periodic jobs; `start()` with its stop event, `drain()` at stop."""

    def __init__(self, jobs: tuple[Job, ...], *, cancel_bound_s: float) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError("two jobs share one name")
        self._jobs = {job.name: _Supervised(job, JobMetrics(job.name)) for job in jobs}
        self._cancel_bound_s = cancel_bound_s
        self._log: Logger = logger
        self._stop = asyncio.Event()

    def bind_log(self, log: Logger) -> None:
        self._log = log

    def state(self) -> dict[str, dict[str, Any]]:
        return {name: item.state.as_dict() for name, item in self._jobs.items()}

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """One supervising loop per job; they return once `stop` is set and their run ended."""
        self._stop = stop
        tasks = []
        for name, item in self._jobs.items():
            item.loop = asyncio.create_task(self._loop(item), name=f"worker-job:{name}")
            tasks.append(item.loop)
        return tasks

    async def drain(self, grace_s: float, force: asyncio.Event) -> None:
        """Give runs in progress `grace_s` (less if `force` is set), then cancel them."""
        loops = [i.loop for i in self._jobs.values() if i.loop is not None and not i.loop.done()]
        if loops:
            running = [name for name, i in self._jobs.items() if i.state.running]
            if running:
                self._log.info("draining job runs", jobs=running)
            forced = asyncio.create_task(force.wait())
            deadline = time.monotonic() + grace_s
            try:
                while loops and not force.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    await asyncio.wait(
                        [*loops, forced], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    loops = [t for t in loops if not t.done()]
            finally:
                forced.cancel()
        await self.cancel()

    async def cancel(self) -> None:
        """Cancel every loop and run, within the bound (a run that swallows cancels is left)."""
        tasks: list[asyncio.Future[Any]] = []
        for item in self._jobs.values():
            if item.run is not None and not item.run.done():
                self._log.warning("job run cancelled at stop", job=item.job.name)
                tasks.append(item.run)
            if item.loop is not None:
                tasks.append(item.loop)
        await cancel_and_wait(tasks, timeout_s=self._cancel_bound_s)

    async def _loop(self, item: _Supervised) -> None:
        job = item.job
        while not self._stop.is_set():
            began = time.monotonic()
            if item.run is not None and not item.run.done():
                self._log.error("job run from an earlier tick still has not ended", job=job.name)
            else:
                await self._run_once(item)
            if self._stop.is_set():
                return
            delay = max(0.0, job.every_s - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _run_once(self, item: _Supervised) -> None:
        """One run in its own task, so a run that swallows its cancel cannot hold the loop."""
        job, state, metrics = item.job, item.state, item.metrics
        state.running = True
        state.last_started_at = iso(utcnow())
        began = time.monotonic()
        outcome, error = "ok", None
        try:
            run: asyncio.Future[object] = asyncio.ensure_future(job.call(self._stop))
        except Exception as exc:  # not a coroutine function after all: a bug, counted
            run = asyncio.get_running_loop().create_future()
            run.set_exception(exc)
        item.run = run
        try:
            await asyncio.wait({run}, timeout=job.timeout_s)
            if not run.done():
                outcome, error = "timeout", f"run timed out after {job.timeout_s:g} s"
                await cancel_and_wait([run], timeout_s=self._cancel_bound_s)
            elif run.cancelled():
                outcome, error = "cancelled", "run cancelled"
            elif (failure := run.exception()) is not None:
                outcome, error = "failed", f"{type(failure).__name__}: {failure}"
                self._log.opt(exception=failure).error("job run failed", job=job.name)
        except asyncio.CancelledError:
            outcome, error = "cancelled", "run cancelled at stop"
            await cancel_and_wait([run], timeout_s=self._cancel_bound_s)
            raise
        finally:
            elapsed = time.monotonic() - began
            state.running = False
            state.runs += 1
            state.last_ended_at = iso(utcnow())
            state.last_outcome = outcome
            metrics.finished(outcome, elapsed)
            if outcome == "ok":
                state.last_success_at = state.last_ended_at
                state.last_error = None
                self._log.debug("job run done", job=job.name, s=round(elapsed, 3))
            else:
                state.failures += 1
                state.timeouts += outcome == "timeout"
                state.last_error = mask(error or outcome)[:_ERROR_MAX]
                if outcome == "timeout":
                    self._log.error("job run timed out", job=job.name, timeout_s=job.timeout_s)
