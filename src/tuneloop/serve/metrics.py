"""Prometheus metrics of one server, on a registry of its own (several servers in one process,
as in the tests, do not collide). Scraped at `/metrics`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneloop_requests",
            "Requests answered, by endpoint, model and HTTP status.",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tuneloop_request_seconds",
            "Time from a request's arrival to its last token.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "tuneloop_time_to_first_token_seconds",
            "Time from arrival to the first new token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tuneloop_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "tuneloop_completion_tokens", "Tokens generated.", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "tuneloop_batch_size",
            "Rows decoded together when requests join a running batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_models = Histogram(
            "tuneloop_batch_models",
            "Distinct models (adapters or the base) in one batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("tuneloop_queue_depth", "Requests waiting.", registry=r)
        self.running = Gauge(
            "tuneloop_running_requests", "Requests being generated (rows decoded).", registry=r
        )
        self.adapters_loaded = Gauge(
            "tuneloop_adapters_loaded", "Adapters in the cache.", registry=r
        )
        self.adapter_loads = Counter(
            "tuneloop_adapter_loads", "Adapter loads into the cache.", ["model"], registry=r
        )
        self.adapter_evictions = Counter(
            "tuneloop_adapter_evictions", "Adapters evicted from the cache.", ["model"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
