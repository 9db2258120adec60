"""The text encoder on the serving side: the exported ONNX graph + a `tokenizers` tokenizer.

Only numpy, tokenizers and onnxruntime: the service never imports torch or transformers.
An encoder directory is what `python -m export.text_encoder --out DIR` writes: the graph
variants, `tokenizer.json` and `encoder.json`, which names the encoder (`encoder_id`, the id
in the item-embedding keys), its dimension, its token limit and each variant's measured cosine
against the PyTorch encoder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

VARIANTS = ("fp32", "int8", "fp16")


class OnnxTextEncoder:
    """Encodes texts into L2-normalised float32 vectors [n, dim] with onnxruntime.

    `variant`: "int8" (dynamically quantised MatMuls, the CPU default), "fp32", or "fp16"
    (meant for a GPU; runs on CUDA when onnxruntime-gpu provides it, else on the CPU).
    `threads`: onnxruntime intra-op threads. One by default: a server runs one request per
    core, and more threads per request buy little for a single query and cost tail latency.
    """

    def __init__(self, directory: str | Path, variant: str = "int8", threads: int = 1) -> None:
        self.directory = Path(directory)
        self.config = json.loads((self.directory / "encoder.json").read_text())
        variants = self.config["variants"]
        if variant not in variants:
            raise ValueError(
                f"{self.directory} has no {variant!r} text encoder; it has {sorted(variants)}"
            )
        self.variant = variant
        self.encoder_id: str = self.config["encoder_id"]
        self.dim: int = int(self.config["dim"])
        self.max_length: int = int(self.config["max_length"])

        self.tokenizer = Tokenizer.from_file(str(self.directory / self.config["tokenizer"]))
        # Whatever the file says (the upstream one pads every text to 128 tokens): pad only to
        # the longest text of a batch, cut at the encoder's token limit.
        padding = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(
            pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]")
        )
        self.tokenizer.enable_truncation(max_length=self.max_length)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if variant == "fp16" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(
            str(self.directory / variants[variant]["file"]), options, providers=providers
        )

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 [len(texts), dim], in the order of `texts`.

        Up to `batch_size` texts run as one batch padded to its longest text; longer lists are
        sorted by length first so that each batch pads little.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one str")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            }
            out[rows] = self.session.run(["embedding"], feeds)[0]
        return out
