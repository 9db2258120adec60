"""export.embed_items: a catalog's vectors into Redis or the file store, resumably."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis

from contract.embeddings import from_bytes, item_key, load_embedding_store
from export import embed_items
from export.embed_items import FileSink, RedisSink
from service.text_encoder import OnnxTextEncoder

REDIS_URL = "redis://127.0.0.1:6379/0"
BRANDS = ("Acme", "Bosch", "Lego", "Nike", "Sony", "Ikea", "Philips", "Canon")
THINGS = ("cordless drill", "running shoes", "noise cancelling headphones", "desk lamp",
          "building kit", "espresso machine", "mirrorless camera", "bookshelf")  # fmt: skip


def catalog(n: int, start: int = 0) -> pd.DataFrame:
    rows = range(start, start + n)
    titles = [
        f"{BRANDS[i % 8]} {THINGS[(i // 8) % 8]} model {i}" + " extra long" * (i % 5) for i in rows
    ]
    return pd.DataFrame({"item_id": [f"sku-{i}" for i in rows], "item_title": titles})


@pytest.fixture(scope="module")
def encoder(encoder_dir):
    return OnnxTextEncoder(encoder_dir, variant="fp32", threads=2)


def _expected(encoder, frame: pd.DataFrame, item_id: str) -> np.ndarray:
    title = frame.set_index("item_id").loc[item_id, "item_title"]
    return encoder.encode([title])[0]


def test_redis_store_is_written_once_and_resumed(encoder, redis_prefix, tmp_path):
    path = tmp_path / "catalog.parquet"
    frame = catalog(200)
    frame.to_parquet(path)

    def run():
        sink = RedisSink(REDIS_URL, redis_prefix, encoder.encoder_id, "float16")
        return embed_items.embed_items(path, encoder, sink, batch_size=64, progress=False)

    first = run()
    assert (first.catalog_items, first.already_stored, first.encoded) == (200, 0, 200)
    client = redis.Redis.from_url(REDIS_URL)
    keys = [item_key(redis_prefix, encoder.encoder_id, i) for i in frame["item_id"]]
    raw = client.mget(keys)
    assert all(len(value) == 2 * encoder.dim for value in raw)  # float16 bytes, every item
    stored = from_bytes(raw[123], encoder.dim)
    assert np.dot(stored, _expected(encoder, frame, "sku-123")) > 0.999

    assert run().encoded == 0  # resumed: everything is there already
    pd.concat([frame, catalog(20, start=200)]).to_parquet(path)
    grown = run()
    assert (grown.already_stored, grown.encoded) == (200, 20)
    assert client.exists(item_key(redis_prefix, encoder.encoder_id, "sku-219")) == 1
    client.close()


def test_file_store_survives_an_interruption(encoder, encoder_dir, tmp_path, monkeypatch):
    path = tmp_path / "catalog.csv"
    frame = catalog(200)
    frame.to_csv(path, index=False)
    out = tmp_path / "store" / "items.npz"

    write = FileSink.write
    calls = []

    def failing_write(self, item_ids, vectors):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the third batch never lands
        calls.append(len(item_ids))
        write(self, item_ids, vectors)

    monkeypatch.setattr(FileSink, "write", failing_write)
    sink = FileSink(out, encoder.encoder_id, encoder.dim, "float16")
    with pytest.raises(KeyboardInterrupt):
        embed_items.embed_items(path, encoder, sink, batch_size=50, progress=False)
    assert not out.exists() and len(list(out.parent.glob("items.npz.parts/part-*.npz"))) == 2
    monkeypatch.undo()

    sink = FileSink(out, encoder.encoder_id, encoder.dim, "float16")
    resumed = embed_items.embed_items(path, encoder, sink, batch_size=50, progress=False)
    assert (resumed.already_stored, resumed.encoded) == (100, 100)
    assert sorted(p.name for p in out.parent.iterdir()) == ["items.npz"]

    store = load_embedding_store(out)  # the service's own reader
    assert store.encoder_id == encoder.encoder_id and store.embeddings.dtype == np.float16
    assert sorted(store.item_ids.tolist()) == sorted(frame["item_id"])
    row = store.item_ids.tolist().index("sku-42")
    assert (
        np.dot(store.embeddings[row].astype(np.float32), _expected(encoder, frame, "sku-42"))
        > 0.999
    )

    argv = ["--catalog", str(path), "--encoder", str(encoder_dir), "--out", str(out)]
    embed_items.main(argv)  # the command line, a second time: nothing left to encode
    assert len(load_embedding_store(out).item_ids) == 200


def test_a_store_of_another_encoder_is_not_extended(encoder, tmp_path):
    out = tmp_path / "items.npz"
    FileSink(out, "other-encoder", encoder.dim, "float16").finish()  # an empty store
    with pytest.raises(ValueError, match="other-encoder"):
        FileSink(out, encoder.encoder_id, encoder.dim, "float16")


def test_a_data_spec_names_the_item_columns(encoder, tmp_path):
    """A shop's own file: latin-1, its own column names, one product on several rows (one per
    query), and a row without a title; the spec says which column is which."""
    rows = pd.DataFrame(
        {
            "search": ["drill", "drill", "café lamp", "lamp"],
            "sku": ["p1", "p2", "p1", "p3"],
            "name": ["Bosch drill", "Acme drill", "Bosch drill", ""],
            "grade": [3, 1, 2, 2],
        }
    )
    rows.to_csv(tmp_path / "judged.csv", index=False, encoding="latin-1")
    (tmp_path / "spec.toml").write_text(
        '[source]\npath = "judged.csv"\nencoding = "latin-1"\n\n'
        '[columns]\nquery = "search"\nitem_id = "sku"\nitem_text = "name"\n\n'
        '[labels.graded]\ncolumn = "grade"\nrange = [1, 3]\n'
    )
    out = tmp_path / "items.npz"
    sink = FileSink(out, encoder.encoder_id, encoder.dim, "float32")
    stats = embed_items.embed_items(tmp_path / "spec.toml", encoder, sink, progress=False)

    assert (stats.catalog_items, stats.encoded) == (2, 2)  # p1 once; p3 has no title
    store = load_embedding_store(out)
    assert sorted(store.item_ids.tolist()) == ["p1", "p2"]
    row = store.item_ids.tolist().index("p2")
    assert np.abs(store.embeddings[row] - encoder.encode(["Acme drill"])[0]).max() < 1e-6
