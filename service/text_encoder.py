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
        # No memory arena: onnxruntime's CPU arena keeps the largest batch it ever saw (four
        # rounds of 64 titles of 256 tokens in batches of 64: RSS 152 -> 1,792 MB, never
        # returned); without it each run's buffers are freed (145 -> 223 MB; batches of 16:
        # 174 MB) and the encode was no slower.
        options.enable_cpu_mem_arena = False
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if variant == "fp16" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(
            str(self.directory / variants[variant]["file"]), options, providers=providers
        )

    def encode(
        self, texts: Sequence[str], batch_size: int = 16, max_batch_tokens: int = 2048
    ) -> np.ndarray:
        """float32 [len(texts), dim], in the order of `texts`.

        Texts are tokenised together, sorted by token count, and run in batches of at most
        `batch_size` texts and `max_batch_tokens` tokens (padded to the batch's longest), so
        each batch pads little and one run's working memory stays bounded: attention holds
        batch x heads x tokens^2 floats, 50 MB for 16 texts of 256 tokens.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one str")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        lengths = mask.sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            stop = start + 1  # ascending lengths: the last one taken is the batch's longest
            while (
                stop < len(order)
                and stop - start < batch_size
                and (stop - start + 1) * lengths[order[stop]] <= max_batch_tokens
            ):
                stop += 1
            rows = order[start:stop]
            width = max(1, int(lengths[rows[-1]]))
            feeds = {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width]}
            out[rows] = self.session.run(["embedding"], feeds)[0]
            start = stop
        return out
