"""Ranking traffic for load tests and benchmarks: plain functions over a search log, no locust.

Where the requests come from:
- the generated log (`read_log`, artifacts/data/searchlog/{impressions,catalog}.parquet): a
  request is a logged session's query and the items it showed, filled up to the list size
  with other catalog items of the query's sub-category (then of any), as a retrieval stage
  would fill it;
- a real click log (`read_replay`, bestbuy-small): real queries in the order and rhythm of
  their timestamps, each with the product clicked and other products of the catalog.

What the traffic looks like (`Mix`): list sizes drawn from a mix (100 items most often), a
share of cold items (ids no store holds, with titles, which the service encodes: after its answer
by default, during the request with MOERANK_COLD_ITEMS=inline), a
share of requests for the head queries, and a share of bad requests of each kind in
`BAD_REQUESTS`, each of which must get its 4xx.

Every item is serialised to JSON once; a request is joined from those fragments (tens of
microseconds), so the client costs little CPU next to the server it measures.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson
import pandas as pd

from contract import schema
from loadtest import bestbuy

DEFAULT_SIZES = ((100, 0.7), (10, 0.1), (50, 0.1), (300, 0.1))
ITEM_NUMERIC = tuple(f for f in schema.NUMERIC_FEATURES if f not in ("hist_ctr", "lexical_overlap"))


@dataclass(frozen=True)
class Mix:
    """sizes: (items per call, weight); the other shares are of calls (bad_share, head_share)
    or of a call's items (cold_share)."""

    sizes: tuple[tuple[int, float], ...] = DEFAULT_SIZES
    cold_share: float = 0.05
    head_share: float = 0.2
    head_queries: int = 20
    bad_share: float = 0.01
    top_n: int | None = 10

    def __post_init__(self):
        if not self.sizes or any(n < 1 or w < 0 for n, w in self.sizes):
            raise ValueError(f"sizes must be (items >= 1, weight >= 0) pairs, got {self.sizes}")
        for name in ("cold_share", "head_share", "bad_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def parse_sizes(text: str) -> tuple[tuple[int, float], ...]:
    """Parse "100:0.7,10:0.3" into ((100, 0.7), (10, 0.3)); "100" means ((100, 1.0),)."""
    sizes = []
    for part in text.split(","):
        n, _, weight = part.strip().partition(":")
        sizes.append((int(n), float(weight or 1.0)))
    return tuple(sizes)


@dataclass(frozen=True)
class Log:
    """Sessions and catalog items as JSON fragments, ready to be joined into bodies.

    An item is (id, rest): its id as a JSON string and the rest of its JSON object after the
    id, `,"title":...,"features":{...}}` (just `}` for an item with nothing but an id)."""

    queries: list[bytes]  # per session: the query object
    session_items: list[list[tuple[bytes, bytes]]]  # per session: (id, fragment), shown order
    session_category: np.ndarray  # per session: index into categories
    catalog: list[tuple[bytes, bytes]]  # (id, fragment): items to fill lists with
    categories: list[list[int]]  # catalog indexes per category
    query_texts: list[str]


def _fragments(frame: pd.DataFrame, numeric: Sequence[str]) -> list[bytes]:
    """`,"title":..,"features":{..},"categorical":{..}}` per row, by pandas' JSON writer."""
    parts = [[f',"title":{json.dumps(t)}' for t in frame[schema.ITEM_TITLE].astype(str)]]
    for key, columns in (("features", list(numeric)), ("categorical", ["brand", "item_category"])):
        columns = [c for c in columns if c in frame.columns]
        if columns:
            lines = frame[columns].to_json(orient="records", lines=True).splitlines()
            parts.append([f',"{key}":{line}' for line in lines])
    return [("".join(fields) + "}").encode() for fields in zip(*parts)]


def _ids(values) -> list[bytes]:
    return [json.dumps(str(v)).encode() for v in values]


def read_log(searchlog: str | Path, warm_ids: set[str] | None = None) -> Log:
    """The generated log's sessions (all numeric features) and catalog (item-level features:
    the query-item ones, hist_ctr and lexical_overlap, are left for the service to impute).
    warm_ids: the ids the embedding store holds; other items are dropped, so that every cold
    item of the traffic is one it makes cold on purpose."""
    searchlog = Path(searchlog)
    catalog = pd.read_parquet(searchlog / "catalog.parquet")
    frame = pd.read_parquet(searchlog / "impressions.parquet")
    if warm_ids is not None:
        catalog = catalog[catalog[schema.ITEM_ID].astype(str).isin(warm_ids)]
        frame = frame[frame[schema.ITEM_ID].astype(str).isin(warm_ids)]
    catalog = catalog.reset_index(drop=True)
    frame = frame.sort_values([schema.SESSION_ID, schema.POSITION], kind="stable")
    row_items = list(zip(_ids(frame[schema.ITEM_ID]), _fragments(frame, schema.NUMERIC_FEATURES)))
    category_names = sorted(catalog["item_category"].astype(str).unique())
    index = {name: i for i, name in enumerate(category_names)}
    item_categories = catalog["item_category"].astype(str)
    categories = [np.flatnonzero(item_categories == c).tolist() for c in category_names]

    queries, session_items, session_category, texts = [], [], [], []
    sessions = frame[schema.SESSION_ID]
    bounds = np.append(np.flatnonzero(sessions.ne(sessions.shift()).to_numpy()), len(frame))
    request_columns = [schema.QUERY_TEXT, schema.QUERY_CATEGORY, schema.TOP_CATEGORY]
    request_columns += [schema.SCENARIO, schema.PLATFORM]
    first_rows = frame[request_columns].iloc[bounds[:-1]]
    for (start, stop), row in zip(zip(bounds[:-1], bounds[1:]), first_rows.itertuples(False)):
        text, category, top, scenario, platform = (str(v) for v in row)
        query = {"text": text, "category": category, "top_category": top}
        query |= {"scenario": scenario, "platform": platform}
        queries.append(json.dumps(query).encode())
        texts.append(text)
        session_items.append(row_items[start:stop])
        session_category.append(index.get(category, -1))
    return Log(
        queries=queries,
        session_items=session_items,
        session_category=np.array(session_category),
        catalog=list(zip(_ids(catalog[schema.ITEM_ID]), _fragments(catalog, ITEM_NUMERIC))),
        categories=categories,
        query_texts=texts,
    )


def read_replay(data_dir: str | Path) -> tuple[Log, np.ndarray]:
    """bestbuy-small's real queries in time order, and their times in seconds from the first.

    Each logged click is one request: its query and the product clicked, filled with other
    products of the catalog (Xbox 360 games, one category). No numeric features: the service
    imputes them all. A product without a known title is sent without one."""
    clicks = bestbuy.read_clicks(data_dir)
    clicks = clicks[clicks[schema.QUERY_TEXT].fillna("").str.strip().str.len().between(1, 1024)]
    clicks = clicks.sort_values("query_time", kind="stable").reset_index(drop=True)
    titles = bestbuy.titles(data_dir).dropna()
    skus = list(dict.fromkeys([*titles.index.astype(str), *clicks[schema.ITEM_ID].astype(str)]))
    position = {sku: i for i, sku in enumerate(skus)}
    catalog = [(json.dumps(sku).encode(), _item_rest(titles.get(sku))) for sku in skus]
    queries, session_items, texts = [], [], []
    columns = [schema.QUERY_TEXT, schema.QUERY_CATEGORY, schema.TOP_CATEGORY, schema.ITEM_ID]
    for row in clicks[columns].itertuples(False):
        text, category, top, sku = (None if pd.isna(v) else str(v) for v in row)
        query = {"text": text, "category": category}
        if top:
            query["top_category"] = top
        queries.append(json.dumps(query).encode())
        texts.append(text)
        session_items.append([catalog[position[sku]]])
    times = (clicks["query_time"] - clicks["query_time"].iloc[0]).dt.total_seconds().to_numpy()
    log = Log(
        queries=queries,
        session_items=session_items,
        session_category=np.zeros(len(queries), dtype=int),
        catalog=catalog,
        categories=[list(range(len(catalog)))],
        query_texts=texts,
    )
    return log, times


def _item_rest(title: str | None) -> bytes:
    return (f',"title":{json.dumps(title)}}}' if title else "}").encode()


class Call(NamedTuple):
    """One request to send: `kind` "rank" or "bad:<reason>", the body, the status it must get."""

    kind: str
    body: bytes
    expect: int


class Traffic:
    """Draws calls from a log with a mix; `seed` makes the draws repeatable. Cold ids are
    unique per process and call, so a cold item never turns warm by being sent twice."""

    def __init__(self, log: Log, mix: Mix = Mix(), max_items: int = 1000, seed: int = 0):
        self.log, self.mix, self.rng = log, mix, random.Random(seed)
        self.sizes = [n for n, _ in mix.sizes]
        self.weights = list(np.cumsum([w for _, w in mix.sizes]))
        self.head = head_sessions(log.query_texts, mix.head_queries)
        self._nonce, self._calls = f"{os.getpid():x}{random.getrandbits(24):06x}", 0
        self._top_n = b"" if mix.top_n is None else b',"top_n":%d' % mix.top_n
        self.bad = bad_requests(self.body(0, 2, cold=0), max_items)
        self.bad_kinds = sorted(self.bad)

    def next(self, session: int | None = None) -> Call:
        """The next call: a bad one with probability bad_share, else a ranking of `session`
        (default: a head session with probability head_share, else any session)."""
        rng, mix = self.rng, self.mix
        if mix.bad_share and rng.random() < mix.bad_share:
            kind = rng.choice(self.bad_kinds)
            body, status = self.bad[kind]
            return Call(f"bad:{kind}", body, status)
        if session is None:
            use_head = self.head and rng.random() < mix.head_share
            session = rng.choice(self.head) if use_head else rng.randrange(len(self.log.queries))
        n = rng.choices(self.sizes, cum_weights=self.weights)[0]
        return Call("rank", self.body(session, n, round(mix.cold_share * n)), 200)

    def body(self, session: int, n: int, cold: int) -> bytes:
        """/v1/rank JSON: the session's query and `n` candidates of which `cold` are cold."""
        items = self.candidates(session, n)
        self._calls += 1
        prefix = f'{{"id":"cold-{self._nonce}-{self._calls:x}-'.encode()
        fragments = [b'{"id":' + item_id + rest for item_id, rest in items]
        for j, row in enumerate(self.rng.sample(range(len(items)), min(cold, len(items)))):
            fragments[row] = prefix + b'%d"' % j + items[row][1]
        return (
            b'{"query":' + self.log.queries[session] + b',"items":['
            + b",".join(fragments) + b"]" + self._top_n + b"}"
        )  # fmt: skip

    def candidates(self, session: int, n: int) -> list[tuple[bytes, bytes]]:
        """The session's items in shown order, then other items of its category, then any:
        `n` in all (fewer only if the catalog has fewer), each id once."""
        log = self.log
        items = log.session_items[session][:n]
        seen = {item_id for item_id, _ in items}
        category = log.session_category[session]
        pools = [log.categories[category]] if category >= 0 else []
        pools.append(range(len(log.catalog)))
        for pool in pools:
            want = n - len(items)
            if want <= 0:
                break
            for index in self.rng.sample(pool, min(len(pool), want + len(seen))):
                item = log.catalog[index]
                if item[0] not in seen and len(items) < n:
                    items.append(item)
                    seen.add(item[0])
        return items


def as_columns(body: dict) -> dict:
    """A /v1/rank body with its items sent in the columnar form: one array per field, null
    where an item leaves a value out (imputed, or the OOV bucket, as the row form's gap)."""
    body = {**body}
    items = body.pop("items")

    def column(kind: str) -> dict[str, list]:
        names = dict.fromkeys(name for item in items for name in item.get(kind, {}))
        return {name: [item.get(kind, {}).get(name) for item in items] for name in names}

    ids, titles = [item["id"] for item in items], [item.get("title") for item in items]
    features, categorical = column("features"), column("categorical")
    body["columns"] = {"id": ids, "title": titles, "features": features, "categorical": categorical}
    return body


class ColumnarTraffic:
    """`traffic`'s calls with every ranking body in the columnar form (bad calls as they are).
    A session's body is converted once and sent again after: converting costs the client
    ~0.3 ms a 100-item call, beside the server it measures (the fill items of a session's
    calls are then the same each time; a warm cache ranks any the same)."""

    def __init__(self, traffic: Traffic):
        self.traffic, self._bodies = traffic, {}

    def next(self, session: int | None = None) -> Call:
        if session in self._bodies:
            return Call("rank", self._bodies[session], 200)
        call = self.traffic.next(session)
        if call.kind != "rank":
            return call
        body = columnar_body(call.body)
        if session is not None:
            self._bodies[session] = body
        return call._replace(body=body)


def columnar_body(body: bytes) -> bytes:
    """as_columns on JSON bytes."""
    return orjson.dumps(as_columns(orjson.loads(body)))


def catalog_items(log: Log) -> list[dict]:
    """The log's catalog as /v1/rank item objects."""
    return [json.loads(b'{"id":' + item_id + rest) for item_id, rest in log.catalog]


def head_sessions(query_texts: Sequence[str], head_queries: int) -> list[int]:
    """Sessions whose query is one of the `head_queries` most frequent texts."""
    counts = pd.Series(query_texts).str.lower().value_counts()
    head = set(counts.index[:head_queries])
    return [i for i, text in enumerate(query_texts) if text.lower() in head]


def bad_requests(good: bytes, max_items: int) -> dict[str, tuple[bytes, int]]:
    """reason -> (body, status): one malformed call of each kind, built from a good body."""
    body = json.loads(good)
    item = body["items"][0]

    def with_items(items: list) -> bytes:
        return json.dumps({**body, "items": items}).encode()

    first_feature = next(iter(item.get("features") or {"log_price": 1.0}))
    non_finite = {**item, "features": {**item.get("features", {}), first_feature: float("nan")}}
    as_text = {**item, "features": {**item.get("features", {}), first_feature: "1.5"}}
    return {
        "malformed_json": (good[: len(good) // 2], 400),
        "empty_items": (with_items([]), 422),
        "too_many_items": (with_items([{"id": str(i)} for i in range(max_items + 1)]), 422),
        "duplicate_ids": (with_items([item, item]), 422),
        "non_finite_number": (with_items([non_finite]), 422),  # json.dumps writes NaN
        "number_as_string": (with_items([as_text]), 422),
        "unknown_field": (with_items([{**item, "colour": "red"}]), 422),
        "missing_query": (json.dumps({"items": body["items"]}).encode(), 422),
    }


def poisson_arrivals(rate: float, seed: int = 0):
    """Open-loop arrival offsets (seconds from the start) of a Poisson process at `rate`/s."""
    rng, at = random.Random(seed), 0.0
    while True:
        at += rng.expovariate(rate)
        yield at


def replay_arrivals(times: np.ndarray, rate: float | None) -> np.ndarray:
    """Logged times (seconds) compressed so that they average `rate`/s: the log's rhythm
    (bursts, quiet hours) kept, its clock sped up. rate None: the log's own clock."""
    times = np.asarray(times, dtype=float) - float(np.min(times))
    if rate is None or len(times) < 2 or times.max() == 0:
        return times
    return times * (len(times) / rate) / times.max()
