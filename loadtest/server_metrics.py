"""What the service says about a stretch of load, from two scrapes of its /metrics: request
latency quantiles from the histograms, time per stage, its CPU per call, cache hit ratios."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple], float]
RANK = {"endpoint": "/v1/rank", "status": "2xx"}


def scrape(url: str, timeout_s: float = 10) -> Samples:
    """Every sample of `url`/metrics: (name, sorted label pairs) -> value."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout_s) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the samples called `name` whose labels include `labels` grew in total
    between two scrapes."""

    def total(samples: Samples) -> float:
        return sum(
            value
            for (sample, pairs), value in samples.items()
            if sample == name and labels.items() <= dict(pairs).items()
        )

    return total(after) - total(before)


def label_values(samples: Samples, name: str, label: str) -> list[str]:
    """The values `label` takes on the samples called `name`, in the order they appear."""
    return list(dict.fromkeys(dict(pairs)[label] for sample, pairs in samples if sample == name))


def histogram_quantile(q: float, before: Samples, after: Samples, name: str, **labels) -> float:
    """Prometheus' histogram_quantile over the buckets' growth: linear within a bucket; nan
    when nothing was observed."""
    bounds = sorted(
        {
            dict(pairs)["le"]
            for sample, pairs in after
            if sample == f"{name}_bucket" and labels.items() <= dict(pairs).items()
        },
        key=float,
    )
    counts = [metric_delta(before, after, f"{name}_bucket", **labels, le=le) for le in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for le, count in zip(bounds, counts):
        bound = float(le)
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound is all we know
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def _ratio(hits: float, total: float) -> float | None:
    return round(hits / total, 4) if total else None


def breakdown(before: Samples, after: Samples) -> dict:
    """The server's view of the ranking calls made between two scrapes (times in ms)."""
    calls = metric_delta(before, after, "moerank_request_duration_seconds_count", **RANK)
    if not calls:
        return {"calls": 0}
    stage = "moerank_stage_duration_seconds"
    request = "moerank_request_duration_seconds"

    def lookups(name: str, **labels) -> float:
        return metric_delta(before, after, name, **labels)

    items = "moerank_embedding_lookups_total"
    stages = label_values(after, f"{stage}_count", "stage")  # the service's, as it reports them
    cpu = metric_delta(before, after, "process_cpu_seconds_total")  # one worker only
    return {
        "calls": int(calls),
        "p50_ms": round(histogram_quantile(0.5, before, after, request, **RANK) * 1e3, 3),
        "p99_ms": round(histogram_quantile(0.99, before, after, request, **RANK) * 1e3, 3),
        "mean_ms": round(metric_delta(before, after, f"{request}_sum", **RANK) / calls * 1e3, 3),
        "cpu_ms_per_call": round(cpu / calls * 1e3, 3) if cpu else None,
        "stage_mean_ms": {
            s: round(
                metric_delta(before, after, f"{stage}_sum", stage=s)
                / max(metric_delta(before, after, f"{stage}_count", stage=s), 1)
                * 1e3,
                3,
            )
            for s in stages
        },
        "stage_p99_ms": {
            s: round(histogram_quantile(0.99, before, after, stage, stage=s) * 1e3, 3)
            for s in stages
        },
        "item_lru_hit_ratio": _ratio(
            lookups(items, tier="lru", outcome="hit"), lookups(items, tier="lru")
        ),
        "online_encodes": int(lookups(items, tier="encoder", outcome="hit")),
        "deferred_encodes": int(lookups(items, tier="encoder", outcome="deferred")),
        "query_lru_hit_ratio": _ratio(
            lookups("moerank_query_embedding_lookups_total", outcome="hit"),
            lookups("moerank_query_embedding_lookups_total"),
        ),
        "rejected": int(lookups("moerank_requests_rejected_total")),
    }
