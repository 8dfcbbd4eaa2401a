"""Prometheus metrics, read from the running parts when scraped (nothing on the hot paths
but plain counters and one histogram observation per store batch)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..runtime import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One registry per app, so that several apps in one process do not collide."""

    def __init__(self, runtime: Runtime, connections: Callable[[], list[Any]]) -> None:
        self.registry = CollectorRegistry()
        self.errors = Counter(
            "runcast_errors", "Error frames and responses sent, by code", ["code"], registry=self.registry
        )
        self.batch_size = Histogram(
            "runcast_store_batch_ops",
            "Operations per store transaction (group commit)",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "runcast_store_commit_seconds",
            "Time to write and commit one store batch",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        runtime.store.add_batch_observer(self._observe_batch)
        self.registry.register(_LiveCollector(runtime, connections))

    def _observe_batch(self, ops: int, seconds: float) -> None:
        self.batch_size.observe(ops)
        self.commit_seconds.observe(seconds)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    def __init__(self, runtime: Runtime, connections: Callable[[], list[Any]]) -> None:
        self.runtime = runtime
        self.connections = connections

    def collect(self) -> Iterator[Any]:
        store, broker, engine = self.runtime.store, self.runtime.broker, self.runtime.engine
        conns = self.connections()
        yield GaugeMetricFamily("runcast_connections", "Open WebSocket connections", value=len(conns))
        yield GaugeMetricFamily("runcast_subscriptions", "Live subscriptions", value=broker.subscription_count)
        yield GaugeMetricFamily("runcast_runs_active", "Runs in memory (pending or running)", value=engine.active_count)
        by_status = GaugeMetricFamily("runcast_runs_running_by_status", "Active runs by status", labels=["status"])
        for status, count in engine.status_counts().items():
            by_status.add_metric([status], count)
        yield by_status
        yield CounterMetricFamily("runcast_events_written", "Events committed to the store", value=store.stats.events)
        yield CounterMetricFamily("runcast_events_delivered", "Events sent to subscribers", value=broker.delivered)
        yield CounterMetricFamily("runcast_store_batches", "Store transactions committed", value=store.stats.batches)
        yield GaugeMetricFamily("runcast_store_queue_depth", "Operations waiting for the writer", value=store.queued)
        yield GaugeMetricFamily(
            "runcast_outbox_depth", "Frames waiting in connections' queues", value=sum(c.queued for c in conns)
        )
        feed = self.runtime.runs_feed
        yield GaugeMetricFamily("runcast_runs_feed_watchers", "Connections with a runs feed", value=feed.watcher_count)
        yield GaugeMetricFamily(
            "runcast_runs_feed_pending", "Runs with a change waiting for runs feed readers", value=feed.pending
        )
        yield CounterMetricFamily("runcast_runs_feed_frames", "run_changed frames built", value=feed.frames)
