"""Prometheus' view of a test API: scrape /metrics and read samples (sums over matching series)."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from tests.support.api_harness import ApiServer

Samples = Counter[tuple[str, frozenset[tuple[str, str]]]]


async def scrape(api: ApiServer) -> Samples:
    resp = await api.client.get("/metrics", headers={"Authorization": ""})  # no key needed
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples: Samples = Counter()
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] += s.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)
