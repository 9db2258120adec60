"""Prometheus metrics: base units, histograms (not summaries, so workers and replicas can be
aggregated) with buckets fine enough to read a P99 anywhere from 0.5 ms to 1 s.

No label takes a per-item or per-query value: every label below has a handful of values.
With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR must be set before this module is
imported (`python -m service` does it); each worker then writes its samples there and
`exposition()` sums them.
"""

from __future__ import annotations

import os
from functools import cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.0035, 0.004,
    0.005, 0.006, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
)  # fmt: skip
STAGES = ("parse", "embeddings", "query_encode", "inference", "respond")

REQUEST_DURATION = Histogram(
    "moerank_request_duration_seconds",
    "Time from request to response, by endpoint (route template) and status class (2xx.. 5xx, "
    "or disconnected: the client went away before its request was read whole).",
    ["endpoint", "status"],
    buckets=LATENCY_BUCKETS,
)
STAGE_DURATION = Histogram(
    "moerank_stage_duration_seconds",
    "Time spent in each stage of a ranking call (query_encode overlaps embeddings).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
EVENT_LOOP_LAG = Histogram(
    "moerank_event_loop_lag_seconds",
    "How late a worker's event loop runs a timer (sampled every 50 ms): the wait a request "
    "has before the app sees it, which the request histograms do not include.",
    buckets=LATENCY_BUCKETS,
)
ITEMS_PER_REQUEST = Histogram(
    "moerank_items_per_request",
    "Candidate items per ranking call.",
    buckets=(1, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000),
)
EMBEDDING_LOOKUPS = Counter(
    "moerank_embedding_lookups_total",
    "Item embedding lookups by tier (lru, redis or memory store, title_cache, encoder) and "
    "outcome (hit, miss, error, deferred, skipped). title_cache: cold titles encoded before, "
    "by (encoder, title); encoder/hit: the title was encoded during the request; "
    "encoder/deferred: answered with a zero vector, the title encoded after; encoder/skipped: "
    "over the call's cold-title limits, a zero vector; encoder/miss: no title, a zero vector.",
    ["tier", "outcome"],
)
QUERY_LOOKUPS = Counter(
    "moerank_query_embedding_lookups_total",
    "Query embeddings by outcome: hit (LRU) or miss (encoded).",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "moerank_batch_size",
    "Ranking calls per run of the model (MOERANK_BATCH_WAIT_MS > 0: calls waiting together "
    "run as one onnxruntime call; 1: the call ran alone).",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
EXPERT_SELECTED = Counter(
    "moerank_expert_selected_total", "Requests that ran each expert, by expert index.", ["expert"]
)
REJECTED = Counter(
    "moerank_requests_rejected_total", "Requests refused with a 4xx, by reason.", ["reason"]
)
REDIS_ERRORS = Counter(
    "moerank_redis_errors_total",
    "Failed Redis calls by operation and error (timeout, connection, other).",
    ["operation", "error"],
)
REDIS_SKIPPED = Counter(
    "moerank_redis_breaker_skipped_total",
    "Redis calls not made because the circuit breaker was open.",
    ["operation"],
)
BREAKER_STATE = Gauge(
    "moerank_redis_breaker_state",
    "Redis circuit breaker: 0 closed, 1 half-open, 2 open (the worst worker).",
    multiprocess_mode="livemax",
)
DEFERRED_ENCODES = Counter(
    "moerank_deferred_encodes_total",
    "Cold items' titles encoded after their answer, by outcome (ok, error, dropped: the "
    "queue was full, abandoned: still queued at shutdown).",
    ["outcome"],
)
WRITE_BACKS = Counter(
    "moerank_embedding_write_backs_total",
    "Cold titles' vectors offered to the store (MOERANK_STORE_COLD_TITLES), by outcome (ok: "
    "written; exists: a vector was stored already, left alone; error).",
    ["outcome"],
)
STORE_LOST = Gauge(
    "moerank_embedding_store_lost",
    "1 while the embedding store is known to have lost its contents (its generation marker "
    "is gone) and is not refilled yet.",
    multiprocess_mode="livemax",
)
STORE_REFILLS = Counter(
    "moerank_embedding_store_refills_total",
    "Refills of a lost embedding store from the file store, by outcome (ok, error).",
    ["outcome"],
)
RELOADS = Counter("moerank_reloads_total", "Bundle reloads by outcome (ok, rejected).", ["outcome"])
MODEL_INFO = Gauge(
    "moerank_model_info",
    "The model being served (value 1; 0 once replaced).",
    ["name", "version", "encoder_id"],
    multiprocess_mode="livemax",
)

# Online experiments. Label values are models-file names, experiment and variant names (a
# handful each), empty outside an experiment and "unknown" for an event's unknown request id.
SERVED = Counter(
    "moerank_served_total",
    "Ranking answers by model (models-file name), experiment and variant.",
    ["model", "experiment", "variant"],
)
EVENTS = Counter(
    "moerank_events_total",
    "Feedback events accepted, by the model, experiment and variant that served the request, "
    "and type (impression, click, add_to_cart, purchase).",
    ["model", "experiment", "variant", "type"],
)
SHADOW_AGREEMENT = Histogram(
    "moerank_shadow_agreement",
    "Agreement of a shadow model's ranking with the served one, per pair and measure: "
    "top10_overlap (shared items in the two top 10s / 10), kendall_tau (whole list).",
    ["primary", "shadow", "measure"],
    # No negative bound: prometheus-client then drops _sum, and the mean is what a dashboard
    # shows. A negative tau falls into le="0.0" and still counts in _sum.
    buckets=(0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.999, 1.0),
)
SHADOW_SCORED = Counter(
    "moerank_shadow_scored_total",
    "Shadow scorings done after the answer, by shadow model and outcome (ok, error).",
    ["shadow", "outcome"],
)
SHADOW_DROPPED = Counter(
    "moerank_shadow_dropped_total",
    "Shadow scorings dropped because the shadow queue was full (or shut down), by shadow.",
    ["shadow"],
)
SERVED_LOG_RECORDS = Counter(
    "moerank_served_log_records_total",
    "Served-log records by kind (served, event) and outcome (written; dropped: the writer's "
    "queue was full; error: the write failed).",
    ["kind", "outcome"],
)


@cache
def labelled(metric, *values: str):
    """metric.labels(*values), made once: labels() checks its arguments and takes a lock on
    every call, and a ranking call observes about ten series. Bounded like the labels."""
    return metric.labels(*values)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition() -> tuple[bytes, str]:
    """The text format for /metrics: this process's registry, or every worker's samples."""
    if not multiprocess_mode():
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exited() -> None:
    """Drop this worker's live gauges (multiprocess mode), as prometheus-client asks."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())
