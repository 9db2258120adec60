"""Prometheus metrics (base units, histograms fine enough to read P99 from 0.5 ms to 1 s)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.0075,
    0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0,
)  # fmt: skip

REQUEST_DURATION = Histogram(
    "moerank_request_duration_seconds",
    "Time from request to response, by endpoint and status class.",
    ["endpoint", "status"],
    buckets=LATENCY_BUCKETS,
)
STAGE_DURATION = Histogram(
    "moerank_stage_duration_seconds",
    "Time spent in each stage of a ranking call.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
ITEMS_PER_REQUEST = Histogram(
    "moerank_items_per_request",
    "Candidate items per ranking call.",
    buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000),
)
EMBEDDING_LOOKUPS = Counter(
    "moerank_embedding_lookups_total",
    "Item embedding lookups by tier (lru, store, encoded, missing).",
    ["tier"],
)
EXPERT_SELECTED = Counter(
    "moerank_expert_selected_total", "Times each expert was used for a request.", ["expert"]
)
REJECTED = Counter("moerank_requests_rejected_total", "Rejected requests by reason.", ["reason"])
STORE_ERRORS = Counter("moerank_embedding_store_errors_total", "Embedding store errors.")
MODEL_INFO = Gauge("moerank_model_info", "The loaded model (value 1).", ["name", "version"])
