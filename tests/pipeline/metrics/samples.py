"""Reading what the pipeline exposes: a scrape of the real endpoint, or the global gauges'
collector directly. Per-process values are asserted as deltas (the registry is per process,
so other tests in this process may have counted before)."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics import SNAPSHOT

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; a missing series fails the test (it is not read as 0)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a per-process series grew (absent before: from 0)."""
    key = (name, tuple(sorted(labels.items())))
    return value(after, name, **labels) - before.get(key, 0.0)


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def parse_collector() -> Samples:
    samples: Samples = {}
    for family in SNAPSHOT.collect():
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
