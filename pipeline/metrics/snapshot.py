"""The global gauges' families, and the collector that exposes the sampler's latest read.

Global: every pipeline process reports the same values (take `max()`, never sum). A source
that fails to read is dropped whole, so a scrape shows no stale value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.metrics.constants import EXTRINSIC_OUTCOMES, SKIP_REASON_LABELS, STAKE_STATUSES


class _Snapshot(Collector):
    """The sampler's latest families per source, swapped whole: a series that is gone from
    Redis or the database disappears here too, and a failed read leaves no stale value."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[Metric, ...]] = {}

    def replace(self, source: str, families: Iterable[Metric]) -> None:
        self._parts = {**self._parts, source: tuple(families)}

    def drop(self, source: str) -> None:
        self._parts = {k: v for k, v in self._parts.items() if k != source}

    def collect(self) -> Iterator[Metric]:
        for families in self._parts.values():
            yield from families

    def describe(self) -> Iterator[Metric]:
        yield from stream_families({}, [])
        yield from stake_families({}, {}, 0.0)
        yield from schedule_families(None, None, None)


@dataclass(frozen=True, slots=True)
class GroupState:
    stream: str
    group: str
    consumers: int
    pending: int
    lag: int | None  # None when Redis cannot tell (Redis < 7, or after XSETID/deletions)
    oldest_pending_age_s: float


def stream_families(lengths: Mapping[str, int], groups: Iterable[GroupState]) -> list[Metric]:
    length = GaugeMetricFamily(
        "taostake_stream_length", "Entries in the stream (XLEN); global", labels=["stream"]
    )
    lag = GaugeMetricFamily(
        "taostake_stream_group_lag",
        "Entries of the stream not yet delivered to the group (XINFO GROUPS lag); global",
        labels=["stream", "group"],
    )
    pending = GaugeMetricFamily(
        "taostake_stream_group_pending",
        "Entries delivered to the group and not acked yet; global",
        labels=["stream", "group"],
    )
    consumers = GaugeMetricFamily(
        "taostake_stream_group_consumers",
        "Consumers known to the group (dead ones stay until removed); global",
        labels=["stream", "group"],
    )
    oldest = GaugeMetricFamily(
        "taostake_stream_group_oldest_pending_age_seconds",
        "Age (since it entered the stream) of the oldest entry pending in the group, "
        "0 when none; global",
        labels=["stream", "group"],
    )
    for stream, value in lengths.items():
        length.add_metric([stream], value)
    for state in groups:
        labels = [state.stream, state.group]
        pending.add_metric(labels, state.pending)
        consumers.add_metric(labels, state.consumers)
        oldest.add_metric(labels, state.oldest_pending_age_s)
        if state.lag is not None:
            lag.add_metric(labels, state.lag)
    return [length, lag, pending, consumers, oldest]


def stake_families(
    by_status: Mapping[str, int],
    skips: Mapping[str, int],
    oldest_unsettled_s: float,
    not_sent: int = 0,
) -> list[Metric]:
    """`not_sent`: the `failed` rows whose extrinsic was never sent (no on-chain failure)."""
    actions = GaugeMetricFamily(
        "taostake_stake_actions",
        "Stored stake decisions (stake_actions rows) by status; global, from the database",
        labels=["status"],
    )
    extrinsics = GaugeMetricFamily(
        "taostake_stake_extrinsics",
        "Submitted stake extrinsics by outcome (submitting/unknown: not settled yet; "
        "failed leaves out the rows never sent); global",
        labels=["outcome"],
    )
    skipped = GaugeMetricFamily(
        "taostake_stake_skips",
        "Stake decisions skipped without submitting, by reason; global",
        labels=["reason"],
    )
    oldest = GaugeMetricFamily(
        "taostake_stake_oldest_unsettled_age_seconds",
        "Age of the oldest submitted extrinsic whose outcome is not known yet, 0 when none "
        "(its coldkey submits nothing else meanwhile); global",
    )
    if by_status or skips:
        statuses = dict.fromkeys(STAKE_STATUSES, 0) | dict(by_status)
        for status, count in statuses.items():
            actions.add_metric([status], count)
        for outcome in EXTRINSIC_OUTCOMES:
            count = statuses.get(outcome, 0) - (not_sent if outcome == "failed" else 0)
            extrinsics.add_metric([outcome], max(0, count))
        for reason, count in (dict.fromkeys(SKIP_REASON_LABELS, 0) | dict(skips)).items():
            skipped.add_metric([reason], count)
        oldest.add_metric([], oldest_unsettled_s)
    return [actions, extrinsics, skipped, oldest]


def schedule_families(
    runs: int | None, errors: int | None, last: Mapping[str, Any] | None
) -> list[Metric]:
    runs_total = CounterMetricFamily(
        "taostake_schedule_runs",
        "Completed beat re-scoring runs (kept in Redis by beat); global",
    )
    errors_total = CounterMetricFamily(
        "taostake_schedule_errors",
        "Beat re-scoring runs that failed (kept in Redis by beat); global",
    )
    last_at = GaugeMetricFamily(
        "taostake_schedule_last_run_timestamp_seconds",
        "Unix time of the last completed beat run; global",
    )
    duration = GaugeMetricFamily(
        "taostake_schedule_last_run_duration_seconds", "Duration of the last beat run; global"
    )
    tracked = GaugeMetricFamily(
        "taostake_schedule_last_run_tracked_pairs",
        "(netuid, hotkey) pairs the last beat run looked at; global",
    )
    enqueued = GaugeMetricFamily(
        "taostake_schedule_last_run_enqueued_trades",
        "Trades the last beat run enqueued (the others were inside their cooldown); global",
    )
    interval = GaugeMetricFamily(
        "taostake_schedule_interval_seconds",
        "RESCORE_INTERVAL_S of the beat that ran last; global",
    )
    if runs is not None:
        runs_total.add_metric([], runs)
    if errors is not None:
        errors_total.add_metric([], errors)
    if last:
        at = last.get("at_unix")
        if isinstance(at, int | float):
            last_at.add_metric([], float(at))
        for family, key in (
            (duration, "duration_s"),
            (tracked, "tracked"),
            (interval, "interval_s"),
        ):
            value = last.get(key)
            if isinstance(value, int | float):
                family.add_metric([], float(value))
        if isinstance(last.get("enqueued"), list):
            enqueued.add_metric([], len(last["enqueued"]))
    return [runs_total, errors_total, last_at, duration, tracked, enqueued, interval]


SNAPSHOT = _Snapshot()
REGISTRY.register(SNAPSHOT)
