"""Rankers that read only the query and item texts: BM25 and token-overlap features.

Tokens are lower-cased runs of letters and digits. BM25 (Robertson et al., k1 = 1.2,
b = 0.75) takes its document frequencies from a corpus of item texts (the data's distinct
item texts: unsupervised, so it may see every split).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

_TOKEN = re.compile(r"[^\W_]+")
K1, B = 1.2, 0.75


def tokens(text: object) -> list[str]:
    return _TOKEN.findall(text.lower()) if isinstance(text, str) else []


def bm25(queries: list[str], items: list[str], corpus: list[str]) -> np.ndarray:
    """[n] BM25 of each (query, item text) pair, document statistics from `corpus`."""
    documents = [set(tokens(text)) for text in corpus]
    frequency = Counter(token for document in documents for token in document)
    n = max(len(documents), 1)
    average = np.mean([len(tokens(text)) for text in corpus]) if corpus else 1.0
    scores = np.zeros(len(queries))
    for row, (query, item) in enumerate(zip(queries, items, strict=True)):
        counts = Counter(tokens(item))
        length = sum(counts.values())
        for token in set(tokens(query)):
            tf = counts.get(token, 0)
            if tf:
                idf = np.log(1 + (n - frequency[token] + 0.5) / (frequency[token] + 0.5))
                scores[row] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / average))
    return scores


OVERLAP_FEATURES = ("query_jaccard", "query_in_item", "item_tokens")


def overlap_features(queries: list[str], items: list[str]) -> np.ndarray:
    """[n, 3] float32: Jaccard of the token sets, share of query tokens in the item text,
    log(1 + item tokens)."""
    out = np.zeros((len(queries), len(OVERLAP_FEATURES)), dtype=np.float32)
    for row, (query, item) in enumerate(zip(queries, items, strict=True)):
        q, t = set(tokens(query)), set(tokens(item))
        out[row] = (len(q & t) / max(len(q | t), 1), len(q & t) / max(len(q), 1), np.log1p(len(t)))
    return out
