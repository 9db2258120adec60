"""Fine-tuning the text encoder's last layer with the ranker (mlpr §3.1, Table 3).

Fine-tuning all of MiniLM per training step is too slow on a CPU, so the frozen layers run
once: every distinct text's hidden states before the last transformer layer are cached
(`token_states`), and a step runs only the trainable last layer + mean pooling
(`EncoderTail`) on the texts of its batch. `FineTunedText` wraps a ranker so the trainer
trains both; `encode_tables` gives the tuned embeddings as plain tables, so the inner
ranker is evaluated (or exported, with the tuned encoder) exactly as any other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from training.dataset import TextTables
from training.models.protocol import Inputs, Ranker, RankerOutput
from training.text_encoder import TextEncoder, mean_pool_normalize


@dataclass
class TokenStates:
    """Hidden states entering the encoder's last layer: states [n, L, H] (float16), mask
    [n, L] (1 = token), row i for text i; texts longer than L tokens are truncated."""

    states: torch.Tensor
    mask: torch.Tensor


@torch.no_grad()
def token_states(
    encoder: TextEncoder, texts: list[str], max_tokens: int = 32, batch_size: int = 256
) -> TokenStates:
    """Run the frozen layers (all but the last) once over `texts`."""
    hidden = encoder.module.transformer.config.hidden_size
    states = torch.zeros(len(texts), max_tokens, hidden, dtype=torch.float16)
    mask = torch.zeros(len(texts), max_tokens, dtype=torch.int64)
    for start in range(0, len(texts), batch_size):
        batch = encoder.tokenizer(
            texts[start : start + batch_size],
            padding="longest",
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        out = encoder.module.transformer(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
        )
        length = batch["input_ids"].shape[1]
        states[start : start + batch_size, :length] = out.hidden_states[-2].half()
        mask[start : start + batch_size, :length] = batch["attention_mask"]
    longest = int(mask.sum(1).max()) if len(texts) else 1
    return TokenStates(states[:, :longest].contiguous(), mask[:, :longest].contiguous())


class EncoderTail(nn.Module):
    """The encoder's last transformer layer (a trainable copy) + masked mean pooling + L2.

    forward(states [n, L, H], mask [n, L]) -> [n, H] unit vectors, the encoder's own output
    before any training.
    """

    def __init__(self, encoder: TextEncoder):
        super().__init__()
        self.layer = copy.deepcopy(encoder.module.transformer.encoder.layer[-1])

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = states.float()
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(states.dtype).min
        hidden = self.layer(states, attention_mask=additive)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return mean_pool_normalize(hidden, mask)


class FineTunedText(Ranker):
    """A ranker whose query/item embeddings come from a trainable EncoderTail.

    forward(inputs with query_rows [B] and item_rows [B] (TensorData.batch gives them),
    skip_experts) -> the ranker's output. Each distinct text of a batch is encoded once.
    `tail_lr_scale` scales the tail's learning rate (transformer layers want ~1e-4).
    """

    def __init__(
        self, ranker: Ranker, tail: EncoderTail, texts: dict[str, TokenStates], tail_lr_scale
    ):
        super().__init__()
        self.ranker, self.tail, self.tail_lr_scale = ranker, tail, tail_lr_scale
        self.config = ranker.config
        self.texts = texts  # {"query": ..., "item": ...}: data, not parameters

    def _embed(self, kind: str, rows: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(rows, return_inverse=True)
        table = self.texts[kind]
        return self.tail(table.states[unique], table.mask[unique])[inverse]

    def forward(self, inputs: Inputs, skip_experts: bool = False) -> RankerOutput:
        embedded = {
            "query_emb": self._embed("query", inputs["query_rows"]),
            "item_emb": self._embed("item", inputs["item_rows"]),
        }
        return self.ranker({**inputs, **embedded}, skip_experts)

    @property
    def request_level_gate(self) -> bool:
        return self.ranker.request_level_gate

    @property
    def score_task(self) -> str:
        return self.ranker.score_task

    def combine_task_losses(self, task_losses: torch.Tensor) -> torch.Tensor:
        return self.ranker.combine_task_losses(task_losses)

    def parameter_groups(self, lr: float) -> list[dict]:
        return [
            {"params": list(self.ranker.parameters())},
            {"params": list(self.tail.parameters()), "lr": lr * self.tail_lr_scale},
        ]

    @torch.no_grad()
    def encode_tables(self, tables: TextTables, batch_size: int = 1024) -> TextTables:
        """`tables` with every vector re-encoded by the tuned tail (same row order)."""
        self.tail.eval()
        encoded = {}
        for kind in ("query", "item"):
            n = self.texts[kind].states.shape[0]
            rows = torch.arange(n)
            encoded[kind] = torch.cat(
                [self._embed(kind, rows[s : s + batch_size]) for s in range(0, n, batch_size)]
            )
        return replace(tables, query_table=encoded["query"], item_table=encoded["item"])
