"""The served log: the writer rotates by size, drops (counted) past its queue and leaves a
log a torn last line cannot spoil; end to end, answers served by a real uvicorn process and
the events posted for them round-trip into the dataset contract, with the exact feature
values the model saw, and a model trains on it."""

import json

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from contract import schema
from contract.served_log import EventRecord, ReadStats, ServedRecord, read_records, segments
from loadtest.service_process import ServiceProcess
from service.served_log import ServedLogWriter
from training.served_log import to_impressions, write_training_set

TOKEN = "served-log-events"
STAGES = (("click", "click"), ("add_to_cart", "atc"), ("purchase", "purchase"))  # event, label


def event(i: int, kind: str = "click") -> EventRecord:
    return EventRecord(
        type=kind, request_id=f"r{i}", item_id=f"i{i}", position=0, timestamp=1.0,
        received_ts=2.0, known=False,
    )  # fmt: skip


def test_segments_rotate_by_size_and_keep_every_record_in_order(tmp_path):
    writer = ServedLogWriter(tmp_path, capacity=1000, segment_bytes=2048, fsync_s=0.05)
    for i in range(100):
        writer.write(event(i), "event")
    writer.close()
    assert len(segments(tmp_path)) > 3
    assert all(path.stat().st_size < 2048 + 1024 for path in segments(tmp_path))
    stats = ReadStats()
    assert [r.request_id for r in read_records(tmp_path, stats)] == [f"r{i}" for i in range(100)]
    assert stats.unreadable_lines == 0


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    writer = ServedLogWriter(tmp_path, capacity=100, segment_bytes=1 << 20, fsync_s=0.05)
    for i in range(3):
        writer.write(event(i), "event")
    writer.close()
    with segments(tmp_path)[-1].open("ab") as segment:
        segment.write(event(3).model_dump_json().encode()[:40])  # killed mid-write
    stats = ReadStats()
    assert len(list(read_records(tmp_path, stats))) == 3
    assert stats.unreadable_lines == 1


def test_a_full_queue_drops_and_counts(tmp_path):
    def dropped() -> float:
        labels = {"kind": "event", "outcome": "dropped"}
        return REGISTRY.get_sample_value("moerank_served_log_records_total", labels) or 0.0

    before = dropped()
    writer = ServedLogWriter(tmp_path, capacity=0, segment_bytes=1 << 20, fsync_s=0.05)
    for i in range(5):
        writer.write(event(i), "event")
    writer.close()
    assert dropped() - before == 5
    assert list(read_records(tmp_path)) == []


def session_requests(log_dir, count: int) -> list[tuple[dict, pd.DataFrame]]:
    """(a /v1/rank body, its rows) for `count` sessions of the generated log; every third
    session's items omit `rating`, so the service imputes it."""
    frame = pd.read_parquet(log_dir / "impressions.parquet")
    out = []
    for n, (_, rows) in enumerate(frame.groupby(schema.SESSION_ID, sort=False)):
        if len(out) == count:
            break
        rows = rows.head(12)
        first = rows.iloc[0]
        items = []
        for _, row in rows.iterrows():
            features = {f: float(row[f]) for f in schema.NUMERIC_FEATURES}
            if n % 3 == 0:
                features.pop("rating")
            items.append({
                "id": str(row[schema.ITEM_ID]),
                "features": features,
                "categorical": {c: str(row[c]) for c in schema.CATEGORICAL_FEATURES},
            })  # fmt: skip
        query = {
            "text": str(first[schema.QUERY_TEXT]),
            "category": str(first[schema.QUERY_CATEGORY]),
            "top_category": str(first[schema.TOP_CATEGORY]),
            "scenario": str(first[schema.SCENARIO]),
            "platform": str(first[schema.PLATFORM]),
        }
        out.append(({"query": query, "items": items, "user_id": f"u{n}"}, rows))
    return out


@pytest.fixture(scope="module")
def served_log(service_env, small_log_dir, tmp_path_factory):
    """Serve 240 sessions, post the log's own clicks (add-to-carts, purchases) for the items
    the service returned, stop the service; returns (log dir, requests, answers, events)."""
    log_dir = tmp_path_factory.mktemp("served-log")
    env = {
        **service_env,
        "MOERANK_SERVED_LOG_DIR": str(log_dir),
        "MOERANK_SERVED_LOG_SEGMENT_BYTES": str(256 * 1024),  # several segments
        "MOERANK_EVENTS_TOKENS": TOKEN,
    }
    requests = session_requests(small_log_dir, 240)
    answers, events = [], []
    with ServiceProcess(env) as service, httpx.Client(base_url=service.url, timeout=30) as client:
        for body, rows in requests:
            answer = client.post("/v1/rank", json=body).json()
            answers.append(answer)
            labels = rows.set_index(rows[schema.ITEM_ID].astype(str))
            for position, item in enumerate(answer["items"]):
                row = labels.loc[item["id"]]
                kinds = ["impression"] + [kind for kind, task in STAGES if row[task]]
                events += [
                    {"type": kind, "request_id": answer["request_id"], "item_id": item["id"],
                     "position": position, "timestamp": 1.7e9}
                    for kind in kinds
                ]  # fmt: skip
        for start in range(0, len(events), 500):
            posted = client.post(
                "/v1/events",
                json={"events": events[start : start + 500]},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert posted.json()["unknown_request_ids"] == 0
    return log_dir, requests, answers, events


def test_every_answer_and_event_is_in_the_log_as_the_model_saw_it(served_log, small_bundle):
    log_dir, requests, answers, events = served_log
    assert len(segments(log_dir)) > 1
    stats = ReadStats()
    records = list(read_records(log_dir, stats))
    assert stats.unreadable_lines == 0
    served = {r.request_id: r for r in records if isinstance(r, ServedRecord)}
    assert len([r for r in records if isinstance(r, EventRecord)]) == len(events)
    assert set(served) == {a["request_id"] for a in answers}
    means = {
        f["name"]: f["mean"]
        for f in json.loads((small_bundle[0] / "manifest.json").read_text())["features"]["numeric"]
    }
    for (body, _), answer in zip(requests, answers):
        record = served[answer["request_id"]]
        assert [i.id for i in record.items] == [i["id"] for i in answer["items"]]
        assert record.model == "default" and record.model_version == answer["model"]["version"]
        assert record.query.text == body["query"]["text"] and record.user_id == body["user_id"]
        sent = {item["id"]: item for item in body["items"]}
        for item, returned in zip(record.items, answer["items"]):
            assert item.score == pytest.approx(returned["score"])
            features = sent[item.id]["features"]
            expected = {n: features.get(n, means[n]) for n in schema.NUMERIC_FEATURES}
            np.testing.assert_allclose(  # float32, as the model had them
                [item.numeric[n] for n in expected], np.float32(list(expected.values()))
            )
            assert item.imputed == [n for n in schema.NUMERIC_FEATURES if n not in features]
            assert item.categorical == sent[item.id]["categorical"]
            assert item.embedding in ("vector", "zero")


def test_the_log_becomes_a_training_set_a_model_trains_on(served_log, tmp_path):
    from training.fitting import fit, prepare
    from training.trainer import TrainConfig

    log_dir, requests, answers, events = served_log
    conversion = write_training_set(log_dir, tmp_path)
    frame = conversion.frame
    assert len(frame) == sum(len(a["items"]) for a in answers)
    assert conversion.events_without_answer == 0
    clicks = {(e["request_id"], e["item_id"]) for e in events if e["type"] == "click"}
    labelled = frame[frame["click"] == 1]
    assert set(zip(labelled[schema.SESSION_ID], labelled[schema.ITEM_ID])) == clicks
    assert frame["click"].sum() > 0 and (frame["atc"] <= frame["click"]).all()
    assert frame.equals(to_impressions(log_dir).frame)

    prepared = prepare(tmp_path, progress=False)
    _, metrics = fit(prepared, "dnn", {"hidden": (16,)}, TrainConfig(epochs=1, lr=1e-2),
                     progress=False)  # fmt: skip
    assert 0.0 <= metrics["test"]["session_auc"] <= 1.0
