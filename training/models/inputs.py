"""Input block (adv-hsc-moe §4 eq. 2; mlpr §3.1): embeddings, z-scored numerics, text interactions.

Inputs are split by level. Request-level tensors have a leading dimension R that is either
B (training: every row carries its own query) or 1 (serving: one query, B items); item-level
tensors have leading dimension B. The block returns one request vector and one item vector,
so the first layer after it can do the query's share of the work once per request.
"""

from __future__ import annotations

import torch
from torch import nn

from contract.features import QUERY_CATEGORY, FeatureSpec

ITEM_CATEGORY = "item_category"  # contract.schema.CATEGORICAL_FEATURES' category field


class CategoricalEmbeddings(nn.Module):
    """One embedding table per field. [R, n_fields] int64 -> [R, n_read * dim]; the fields
    whose column is in `skip` get no table and are not read."""

    def __init__(self, cardinalities: list[int], dim: int, skip: frozenset[int] = frozenset()):
        super().__init__()
        self.columns = [j for j in range(len(cardinalities)) if j not in skip]
        self.tables = nn.ModuleList(nn.Embedding(cardinalities[j], dim) for j in self.columns)
        self.out_dim = dim * len(self.columns)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        if not self.tables:
            return index.new_zeros((index.shape[0], 0), dtype=torch.float32)
        return torch.cat([t(index[:, j]) for j, t in zip(self.columns, self.tables)], dim=1)


class InputBlock(nn.Module):
    """Builds (request_vec [R, request_dim], item_vec [B, item_dim]) from raw inputs.

    inputs: request_cat [R, r] int64, item_cat [B, c] int64, numeric [B, f] float32 (raw,
    z-scored here with the training statistics), and when the spec has text: query_emb
    [R, text_dim] and item_emb [B, text_dim] (L2-normalised encoder outputs). Text is
    projected to `text_proj` dims (0 keeps the encoder's dimension); the item vector holds
    the projected item embedding, its element-wise product with the query's and their cosine.
    With item_request [B] (several requests in one batch, training.models.request_batch)
    each item pairs with the query of its own request.
    category_match: the item vector also holds 1.0 where the item's category is the query's
    sub-category (a 2-sided feature, adv-hsc-moe §3.1: a cross of two inputs the model
    reads, which a ReLU tower fed two separate embeddings learns poorly; see the README),
    where the spec has both fields (a user's data may have neither).
    unread_item_fields: item categorical fields the block does not read (no table), e.g. an
    id with so many values that its embedding memorises rows (brand: README, issue 12).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 16,
        text_proj: int = 32,
        category_match: bool = False,
        unread_item_fields: tuple[str, ...] = (),
    ):
        super().__init__()
        self.request_embeddings = CategoricalEmbeddings(
            [f.cardinality for f in spec.request_categorical], embedding_dim
        )
        item_names = [f.name for f in spec.item_categorical]
        unknown = set(unread_item_fields) - set(item_names)
        if unknown:
            raise ValueError(f"unread item fields {sorted(unknown)} not among {item_names}")
        self.item_embeddings = CategoricalEmbeddings(
            [f.cardinality for f in spec.item_categorical],
            embedding_dim,
            frozenset(item_names.index(name) for name in unread_item_fields),
        )
        self.register_buffer("numeric_mean", torch.tensor([f.mean for f in spec.numeric]))
        self.register_buffer("numeric_std", torch.tensor([f.std for f in spec.numeric]))
        self.has_text = spec.text_dim > 0
        text_dim = (text_proj or spec.text_dim) if self.has_text else 0
        if self.has_text and text_proj:
            self.query_proj = nn.Linear(spec.text_dim, text_proj)
            self.item_proj = nn.Linear(spec.text_dim, text_proj)
        else:
            self.query_proj = self.item_proj = nn.Identity()
        self.request_dim = self.request_embeddings.out_dim + text_dim
        self.item_dim = (
            self.item_embeddings.out_dim + len(spec.numeric) + (2 * text_dim + 1 if text_dim else 0)
        )
        self.match_fields = None
        if category_match and has_category_fields(spec):
            self.match_fields, item_to_query = category_match_lookup(spec)
            self.register_buffer("item_to_query", item_to_query)
            self.item_dim += 1

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        request = [self.request_embeddings(inputs["request_cat"])]
        numeric = (inputs["numeric"] - self.numeric_mean) / self.numeric_std
        item = [self.item_embeddings(inputs["item_cat"]), numeric]
        if self.has_text:
            query_emb, item_emb = inputs["query_emb"], inputs["item_emb"]
            query, product = self.query_proj(query_emb), self.item_proj(item_emb)
            request.append(query)
            if "item_request" in inputs:  # several requests' items: each reads its own query
                query_emb = query_emb.index_select(0, inputs["item_request"])
                query = query.index_select(0, inputs["item_request"])
            cosine = (query_emb * item_emb).sum(dim=1, keepdim=True)  # inputs are unit vectors
            item += [product, query * product, cosine]
        if self.match_fields is not None:
            item.append(category_match(inputs, self.match_fields, self.item_to_query)[:, None])
        return torch.cat(request, dim=1), torch.cat(item, dim=1)


def has_category_fields(spec: FeatureSpec) -> bool:
    """True when the spec has both the query's and the item's category."""
    return QUERY_CATEGORY in {f.name for f in spec.request_categorical} and ITEM_CATEGORY in {
        f.name for f in spec.item_categorical
    }


def category_match(
    inputs: dict[str, torch.Tensor], fields: tuple[int, int], item_to_query: torch.Tensor
) -> torch.Tensor:
    """[B] float: 1.0 where the item's category is its query's sub-category. `fields` and
    `item_to_query` are category_match_lookup's."""
    query_field, item_field = fields
    item_category = item_to_query[inputs["item_cat"][:, item_field]]  # [B]
    query_category = inputs["request_cat"][:, query_field]  # [R]: 1 broadcasts, or B
    if "item_request" in inputs:  # several requests' items: each reads its own query
        query_category = query_category.index_select(0, inputs["item_request"])
    match = item_category == query_category
    return match.to(inputs["numeric"].dtype).expand(item_category.shape[0])


def category_match_lookup(spec: FeatureSpec) -> tuple[tuple[int, int], torch.Tensor]:
    """((query_category's column in request_cat, item_category's column in item_cat), [item
    category cardinality] the query-category index of each item-category index, -1 where the
    query vocabulary lacks it or for the OOV index, so an unknown category never matches)."""
    query_field = spec.request_field(QUERY_CATEGORY)
    item_field = [f.name for f in spec.item_categorical].index(ITEM_CATEGORY)
    lookup = spec.request_categorical[query_field].lookup()
    vocab = spec.item_categorical[item_field].vocab
    table = torch.tensor([-1] + [lookup.get(value, -1) for value in vocab], dtype=torch.long)
    return (query_field, item_field), table
