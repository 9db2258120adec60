"""The text encoder: PyTorch side, ONNX export and the torch-free serving side."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer

import export.text_encoder as exporter
from contract.embeddings import load_embedding_store
from service.text_encoder import OnnxTextEncoder
from training.text_encoder import ENCODER_ID, TextEncoder, encoder_id_for, precompute_catalog

LONG_TEXT = " ".join(["stainless steel kitchen knife set with wooden block and sharpener"] * 40)
# Not the exporter's PARITY_TEXTS: the export is checked on texts it did not see.
TEXTS = [
    "laptop",
    "gaming mouse wireless",
    "queen size bed frame with storage drawers",
    "Sony WH-1000XM5 Wireless Noise Canceling Headphones, Black",
    "dog food grain free 30 lb",
    "Le Creuset enamelled cast iron casserole, 24 cm, Volcanic",
    "phone",
    "Ergonomic office chair — lumbar support, adjustable armrests & headrest",
    LONG_TEXT,
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


@pytest.fixture(scope="module")
def reference(encoder) -> np.ndarray:
    return encoder.encode(TEXTS, progress=False)


def test_torch_encoder_equals_sentence_transformers(encoder, reference):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(encoder.model_dir), device="cpu")
    expected = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert reference.dtype == np.float32 and reference.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(reference, expected, atol=1e-5)


def test_torch_encoder_is_semantic(encoder):
    laptop, notebook, banana = encoder.encode(
        ["laptop", "notebook computer", "banana"], progress=False
    )
    assert laptop @ notebook > laptop @ banana + 0.2


def test_torch_encoder_batching_does_not_change_vectors(encoder, reference):
    # batch_size 2 sorts and pads differently from one batch of all texts.
    np.testing.assert_allclose(
        encoder.encode(TEXTS, batch_size=2, progress=False), reference, atol=1e-5
    )


def test_encoder_id_names_the_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert ENCODER_ID.startswith("all-minilm-l6-v2-t256-")
    assert encoder_id_for(tmp_path) != ENCODER_ID
    assert encoder_id_for(tmp_path, max_length=128) != encoder_id_for(tmp_path)


def test_encoder_json_records_parity(encoder_dir):
    config = json.loads((encoder_dir / "encoder.json").read_text())
    assert config["encoder_id"] == ENCODER_ID
    assert (config["dim"], config["max_length"], config["tokenizer"]) == (
        384,
        256,
        "tokenizer.json",
    )
    for variant, floor in exporter.COSINE_FLOORS.items():
        assert config["variants"][variant]["cosine"] >= floor
        assert (encoder_dir / config["variants"][variant]["file"]).is_file()


def test_onnx_fp32_matches_torch(encoder_dir, reference):
    vectors = OnnxTextEncoder(encoder_dir, variant="fp32").encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    assert cosines(vectors, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_onnx_int8_stays_close(encoder_dir, reference):
    # Measured: worst 0.985 on the exporter's PARITY_TEXTS, 0.990 on 1,080 real queries and titles.
    found = cosines(OnnxTextEncoder(encoder_dir, variant="int8").encode(TEXTS), reference)
    assert found.min() >= 0.98 and found.mean() >= 0.99


def test_onnx_fp16_stays_close(encoder_dir, reference):
    found = cosines(OnnxTextEncoder(encoder_dir, variant="fp16").encode(TEXTS), reference)
    assert found.min() >= 0.999


def test_onnx_padding_is_masked(encoder_dir):
    onnx_encoder = OnnxTextEncoder(encoder_dir, variant="fp32")
    alone = onnx_encoder.encode(["laptop"])[0]
    beside_long, _ = onnx_encoder.encode(["laptop", LONG_TEXT])
    np.testing.assert_allclose(beside_long, alone, atol=1e-5)


def test_onnx_keeps_input_order_across_batches(encoder_dir):
    onnx_encoder = OnnxTextEncoder(encoder_dir, variant="fp32")
    one_batch = onnx_encoder.encode(TEXTS)
    np.testing.assert_allclose(onnx_encoder.encode(TEXTS, batch_size=2), one_batch, atol=1e-5)
    assert onnx_encoder.encode([]).shape == (0, 384)


def test_service_tokenizer_pads_to_the_batch_not_to_128(encoder_dir):
    served = OnnxTextEncoder(encoder_dir, variant="fp32").tokenizer
    saved = Tokenizer.from_file(str(encoder_dir / "tokenizer.json"))  # the file alone, too
    for tokenizer in (served, saved):
        assert len(tokenizer.encode("red running shoes").ids) < 10
        assert len(tokenizer.encode(LONG_TEXT).ids) == 256
        short, long = tokenizer.encode_batch(["red running shoes", "red running shoes for men"])
        assert len(short.ids) == len(long.ids) < 10


def test_service_module_does_not_import_torch():
    code = (
        "import sys, service.text_encoder; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_refuses_to_write_below_floor(encoder_dir, tmp_path, monkeypatch):
    def copy_exported(_encoder, path):  # skip the 15 s re-export: the graph is not the point
        shutil.copy(encoder_dir / "text_encoder.onnx", path)

    monkeypatch.setattr(exporter, "_export_fp32", copy_exported)
    monkeypatch.setitem(exporter.COSINE_FLOORS, "fp32", 1.001)
    out = tmp_path / "encoder"
    with pytest.raises(RuntimeError, match="parity failed"):
        exporter.export_text_encoder(out, variants=["fp32"])
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left behind either


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_precompute_catalog_round_trip(encoder, tmp_path, suffix):
    catalog = pd.DataFrame(
        {
            "item_id": ["A1", "B2", "C3", "B2", "D4"],
            "item_title": ["usb c cable", "desk lamp", None, "repeated id", "ワイヤレスイヤホン"],
            "price": [5.0, 20.0, 1.0, 2.0, 30.0],
        }
    )
    path = tmp_path / f"catalog{suffix}"
    if suffix == ".csv":
        catalog.to_csv(path, index=False)
    else:
        catalog.to_parquet(path, index=False)
    written = precompute_catalog(path, tmp_path / "items.npz", encoder=encoder, progress=False)
    store = load_embedding_store(tmp_path / "items.npz")
    assert written == 3
    assert store.encoder_id == ENCODER_ID
    assert store.item_ids.tolist() == ["A1", "B2", "D4"]
    assert store.embeddings.dtype == np.float16 and store.embeddings.shape == (3, 384)
    expected = encoder.encode(["usb c cable", "desk lamp", "ワイヤレスイヤホン"], progress=False)
    np.testing.assert_allclose(store.embeddings.astype(np.float32), expected, atol=1e-3)
