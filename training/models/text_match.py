"""A text relevance ranker that starts where the encoder's zero-shot cosine is and learns only
what the data pays for: the worked example's model (README, "Your own data").

On a few hundred judged queries a deep model over the query and title embeddings ranks no
better than their cosine (results/own_data_crowdflower.json): it has to relearn from the data
the similarity the encoder already gives. This one keeps the cosine as its score and learns
corrections to it:

    match(q, i) = q·diag(1 + d)·i + (U q)·(V i)      q, i: L2-normalised encoder vectors
    s = scale · match + wide(categorical, numeric)
    logit_k = s + bias_k                              one per task

d (a reweighting of the encoder's dimensions), V (a rank-`rank` correction; U random, V zero)
and the wide part (a linear function of the categorical embeddings and z-scored numeric
features) start at zero, so the untrained model ranks exactly by the cosine, and AdamW's
weight decay pulls them back towards it. One score with a bias per task is a cumulative-logit
(ordinal) model: for a grade cascade "grade >= g_k" the biases fall with k, the task
probabilities stay ordered, and the expected grade sum_k P(grade >= g_k) ranks as s does.
Train it with the trainer's listwise term (TrainConfig.listwise) so the gradient is about the
order within each query's list, the thing NDCG measures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from contract.features import FeatureSpec
from training.models.inputs import InputBlock
from training.models.protocol import Ranker, RankerOutput

INITIAL_SCALE = 5.0  # cosines differ by ~0.1 within a list: a logit step of ~0.5


@dataclass(frozen=True)
class TextMatchConfig:
    tasks: tuple[str, ...] = ("relevance",)
    rank: int = 16  # width of the low-rank correction (0: the diagonal reweighting alone)
    embedding_dim: int = 4  # categorical embeddings of the wide part

    def __post_init__(self) -> None:
        if not self.tasks or self.rank < 0 or self.embedding_dim < 1:
            raise ValueError("invalid TextMatchConfig: tasks, rank >= 0, embedding_dim >= 1")


RECIPES = {"text_match": TextMatchConfig()}


class WideInputs(InputBlock):
    """The categorical and numeric inputs as InputBlock embeds them; the text pair, which the
    model reads (`has_text`: the serving graph feeds it), enters through the match instead."""

    def __init__(self, spec: FeatureSpec, embedding_dim: int):
        super().__init__(replace(spec, text_dim=0, encoder_id=""), embedding_dim, text_proj=0)
        self.has_text = True

    def forward(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        numeric = (inputs["numeric"] - self.numeric_mean) / self.numeric_std
        item = torch.cat([self.item_embeddings(inputs["item_cat"]), numeric], dim=1)
        return self.request_embeddings(inputs["request_cat"]), item


class TextMatch(Ranker):
    """inputs (protocol.py) -> logits [B, T]; no gate, no experts."""

    def __init__(self, spec: FeatureSpec, config: TextMatchConfig, category_counts=None):
        super().__init__()
        if not spec.text_dim:
            raise ValueError("text_match ranks by text: the data names no item text")
        self.config = config
        self.inputs = WideInputs(spec, config.embedding_dim)
        wide = self.inputs.request_dim + self.inputs.item_dim
        self.wide = nn.Linear(wide, 1, bias=False) if wide else None
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)
        self.reweight = nn.Parameter(torch.zeros(spec.text_dim))
        self.query_map = nn.Linear(spec.text_dim, config.rank, bias=False)
        self.item_map = nn.Linear(spec.text_dim, config.rank, bias=False)
        nn.init.zeros_(self.item_map.weight)
        self.scale = nn.Parameter(torch.tensor(INITIAL_SCALE))
        # Falling biases: P(task k) ordered like a cascade's stages from the start.
        self.bias = nn.Parameter(-torch.arange(len(config.tasks), dtype=torch.float32))

    def match(self, query_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """[B] the corrected cosine; query_emb [R, D] with R = 1 or B, item_emb [B, D]."""
        diagonal = (query_emb * (1.0 + self.reweight) * item_emb).sum(dim=1)
        return diagonal + (self.query_map(query_emb) * self.item_map(item_emb)).sum(dim=1)

    def forward(self, inputs, skip_experts: bool = False) -> RankerOutput:
        score = self.scale * self.match(inputs["query_emb"], inputs["item_emb"])
        if self.wide is not None:
            request, item = self.inputs(inputs)
            request = request.expand(item.shape[0], -1)
            score = score + self.wide(torch.cat([request, item], dim=1)).squeeze(1)
        return RankerOutput(logits=score[:, None] + self.bias[None, :])
