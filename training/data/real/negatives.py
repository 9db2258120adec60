"""Candidate lists for click logs that record only the clicks.

A log such as Best Buy's keeps the item each user clicked and nothing about the items shown
beside it. Ranking needs non-clicked items in each list, so this module CONSTRUCTS them by
sampling: every added row is marked in `negative_source`, and none of them was observed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from contract.schema import ITEM_ID, ITEM_TITLE, QUERY_TEXT, REQUEST_COLUMNS, SESSION_ID, TASKS
from training.data.real.readers import finish

NEGATIVE_SOURCE = "negative_source"  # "same_query" | "catalog"; missing on observed rows


def add_sampled_negatives(
    clicks: pd.DataFrame,
    n_negatives: int = 4,
    seed: int = 0,
    fill_from_catalog: bool = True,
    request_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Each session's clicked items (click=1) plus up to `n_negatives` sampled items (click=0).

    `clicks` is a contract frame with session_id, query_text, item_id and click=1 on every row.
    A session's clicked items appear once each (a repeated click keeps its first row). The
    negatives are drawn without replacement, first from the items clicked in OTHER sessions
    for the same lower-cased query ("same_query"), then, if those run short and
    `fill_from_catalog` is set, from every item in the log ("catalog"); an item the session
    clicked is never a negative. A negative row copies the session's request-level columns
    (the contract's and `request_columns`), takes the item's title from the log, has 0 for
    every task label and missing values elsewhere. Same inputs and seed, same rows.
    """
    missing = [c for c in (SESSION_ID, QUERY_TEXT, ITEM_ID, "click") if c not in clicks.columns]
    if missing:
        raise ValueError(f"clicks lacks the columns {missing}")
    if not (clicks["click"] == 1).all():
        raise ValueError("clicks must have click=1 on every row (a log of clicks only)")
    if n_negatives < 0:
        raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
    positives = clicks.drop_duplicates([SESSION_ID, ITEM_ID]).sort_values(SESSION_ID, kind="stable")
    chosen = _sample(positives, n_negatives, np.random.default_rng(seed), fill_from_catalog)

    carried = [
        c for c in (*REQUEST_COLUMNS, *request_columns) if c in clicks.columns and c != SESSION_ID
    ]
    firsts = positives.drop_duplicates(SESSION_ID).set_index(SESSION_ID)[carried]
    negatives = pd.DataFrame(chosen, columns=[SESSION_ID, ITEM_ID, NEGATIVE_SOURCE])
    negatives = negatives.join(firsts, on=SESSION_ID)
    if ITEM_TITLE in clicks.columns:
        titles = clicks.dropna(subset=[ITEM_TITLE]).drop_duplicates(ITEM_ID)
        negatives[ITEM_TITLE] = negatives[ITEM_ID].map(titles.set_index(ITEM_ID)[ITEM_TITLE])
    for task in TASKS:
        if task in clicks.columns:
            negatives[task] = 0

    candidates = pd.concat([positives, negatives], ignore_index=True)
    candidates[NEGATIVE_SOURCE] = candidates[NEGATIVE_SOURCE].astype("string")
    candidates = candidates.sort_values(SESSION_ID, kind="stable")
    return finish(candidates)


def _sample(
    positives: pd.DataFrame, n_negatives: int, rng: np.random.Generator, fill: bool
) -> list[tuple[str, str, str]]:
    queries = positives[QUERY_TEXT].str.lower()
    pools = {query: np.sort(items.unique()) for query, items in positives.groupby(queries)[ITEM_ID]}
    catalog = np.sort(positives[ITEM_ID].unique())
    clicked: dict[str, set[str]] = {}
    session_query: dict[str, str] = {}
    for session, item, query in zip(
        positives[SESSION_ID], positives[ITEM_ID], queries, strict=True
    ):
        clicked.setdefault(session, set()).add(item)
        session_query.setdefault(session, query)

    rows = []
    for session in sorted(clicked):
        taken = clicked[session]
        pool = [item for item in pools[session_query[session]] if item not in taken]
        picks = [pool[i] for i in rng.permutation(len(pool))[:n_negatives]]
        rows += [(session, item, "same_query") for item in picks]
        short = n_negatives - len(picks)
        if fill and short > 0:
            excluded = taken | set(picks)
            size = min(len(catalog), short + len(excluded))
            draws = [i for i in rng.choice(catalog, size=size, replace=False) if i not in excluded]
            rows += [(session, item, "catalog") for item in draws[:short]]
    return rows
