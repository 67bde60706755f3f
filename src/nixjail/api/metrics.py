"""Prometheus metrics of one app, in a registry of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from nixjail.spool import Queue, Spool

# Long-polls hold requests for up to a minute; the default buckets stop at 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class SpoolCollector(Collector):
    """Jobs per queue, counted from the spool at scrape time."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def describe(self) -> list[Metric]:
        return []  # nothing to read from the spool at registration

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("nixjail_jobs", "Jobs in the spool by queue and state",
                                 labels=["queue", "state"])
        for queue in Queue:
            jobs.add_metric([queue.value, "queued"], len(self.spool.queued(queue)))
            jobs.add_metric([queue.value, "leased"], len(self.spool.leased(queue)))
        yield jobs


class ApiMetrics:
    def __init__(self, spool: Spool, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "nixjail_api_requests", "HTTP requests answered",
            ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram(
            "nixjail_api_request_duration_seconds", "Time to answer an HTTP request",
            ["route", "method"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.submissions_created = Counter(
            "nixjail_submissions_created", "Submissions accepted", registry=self.registry)
        self.registry.register(SpoolCollector(spool))


class MetricsMiddleware:
    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response,
                         resource: Any, req_succeeded: bool) -> None:
        # The route template, never the raw path: ids would explode the labels.
        route = req.uri_template or "unmatched"
        method = req.method if req.method in falcon.COMBINED_METHODS else "other"
        self.metrics.requests.labels(route, method, str(resp.status_code)).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            self.metrics.duration.labels(route, method).observe(time.perf_counter() - started)


class MetricsResource:
    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self.metrics.registry)
