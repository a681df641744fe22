"""Prometheus helpers: a registry per app and the buckets that fit Watus' latencies.

Each FastAPI app gets its own `CollectorRegistry` (not the global one) so that several apps can live in
one test process and `/metrics` of one service never shows another's series.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: Seconds, from 1 ms to 60 s: covers a token, a TTS chunk and a whole slow turn.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75,
                   1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Tokens per second (CPU small models to GPU prefill).
RATE_BUCKETS = (1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10000, 50000)


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def latency_histogram(name: str, doc: str, registry: CollectorRegistry,
                      labels: tuple[str, ...] = ()) -> Histogram:
    return Histogram(name, doc, labelnames=labels, buckets=LATENCY_BUCKETS, registry=registry)


def rate_histogram(name: str, doc: str, registry: CollectorRegistry,
                   labels: tuple[str, ...] = ()) -> Histogram:
    return Histogram(name, doc, labelnames=labels, buckets=RATE_BUCKETS, registry=registry)


def counter(name: str, doc: str, registry: CollectorRegistry, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(name, doc, labelnames=labels, registry=registry)


def gauge(name: str, doc: str, registry: CollectorRegistry, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(name, doc, labelnames=labels, registry=registry)


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and content type of a `/metrics` response."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
