"""Several requests in one serving batch: item rows laid out per request and back.

Items of R requests arrive as one [B, ...] block, each request's items contiguous and in
request order, with item_request [B] (each item's request) and request_items [R, L] (each
request's item rows, padded to the longest request L by repeating its last row). The
per-request layout [R, L, ...] lets every request's K experts run as one batched MatMul
over [R, K, ...] gathered weights; padded rows are computed and dropped.
"""

from __future__ import annotations

import torch


def per_request(item_rows: torch.Tensor, request_items: torch.Tensor) -> torch.Tensor:
    """item_rows [B, d] -> [R, L, d] (padded rows repeat a real one)."""
    return item_rows[request_items]


def per_item(
    padded: torch.Tensor, item_request: torch.Tensor, request_items: torch.Tensor
) -> torch.Tensor:
    """padded [R, L, ...] -> [B, ...]: item b sits in its request's row at its offset from
    that request's first item."""
    slots = request_items.shape[1]
    first = request_items[:, 0].index_select(0, item_request)  # [B]
    offset = torch.arange(item_request.shape[0], device=item_request.device) - first
    flat = padded.reshape(-1, *padded.shape[2:])
    return flat.index_select(0, item_request * slots + offset)
