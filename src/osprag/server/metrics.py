"""Prometheus metrics of one app: a registry per app, so two apps in one process (tests, or
several servers) never share or double-register collectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _CacheCollector(Collector):
    """Reads the query cache's counters at scrape time instead of mirroring them."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            data = self._stats()
        except Exception:  # a scrape must not fail because the store is down
            return
        for key in ("hits", "misses", "size"):
            if isinstance(data.get(key), int | float):
                yield GaugeMetricFamily(
                    f"osp_query_cache_{key}", f"query result cache {key}", value=data[key]
                )
        hits, misses = data.get("hits", 0), data.get("misses", 0)
        if isinstance(hits, int | float) and isinstance(misses, int | float) and hits + misses:
            yield GaugeMetricFamily(
                "osp_query_cache_hit_ratio", "hits / lookups", value=hits / (hits + misses)
            )


class Metrics:
    def __init__(self, cache_stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "osp_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.query_seconds = Histogram(
            "osp_query_seconds",
            "query handling time by mode (server side, per query)",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "osp_errors", "error responses by error code", ["code"], registry=self.registry
        )
        self.ingest_files = Counter(
            "osp_ingest_files", "uploaded files by outcome", ["status"], registry=self.registry
        )
        self.ingest_chunks = Counter(
            "osp_ingest_chunks", "chunks written by uploads", registry=self.registry
        )
        if cache_stats is not None:
            self.registry.register(_CacheCollector(cache_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
